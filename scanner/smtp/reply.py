"""Sans-IO SMTP reply framing (RFC 5321 §4.2) with caps on everything the server controls.

``ReplyReader.feed(bytes)`` then ``next_reply()`` returns a ``Reply`` or ``NEED_DATA``; a malformed or
oversized reply raises ``ReplyError`` (our own type, carrying its failure class). No sockets here.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Final

from scanner.sansio import NEED_DATA, NeedData
from scanner.status import FailureClass

__all__ = ["EhloInfo", "Reply", "ReplyError", "ReplyReader", "parse_ehlo"]

# RFC 5321 §4.5.3.1.5 limits a reply line to 512 octets; real servers exceed it a little (long
# banners), so we allow four times that before calling it hostile.
MAX_LINE_BYTES: Final = 2048
# A multi-line reply (EHLO) rarely has more than 30 lines; 100 bounds memory and time per reply.
MAX_REPLY_LINES: Final = 100
# What we keep of a reply's text in the output.
MAX_TEXT_CHARS: Final = 4096


class ReplyError(Exception):
    def __init__(self, failure_class: FailureClass, detail: str) -> None:
        super().__init__(detail)
        self.failure_class = failure_class
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text after "NNN-" / "NNN " on each line

    @property
    def text(self) -> str:
        return "\n".join(self.lines)[:MAX_TEXT_CHARS]

    @property
    def full_text(self) -> str:
        """The reply as the server sent it (code on every line), for EHLO parsing and the output."""
        return "\n".join(f"{self.code} {line}".rstrip() for line in self.lines)[:MAX_TEXT_CHARS]

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400


class ReplyReader:
    """Frames replies from a byte stream. One instance per connection direction (server → us)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code: int | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def buffered(self) -> bytes:
        """Bytes received but not yet part of a reply (RFC 3207 §4.2: must be discarded at STARTTLS)."""
        return bytes(self._buffer)

    def discard_buffer(self) -> None:
        self._buffer.clear()

    def next_reply(self) -> Reply | NeedData:
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE_BYTES:
                    raise ReplyError(FailureClass.OVERSIZED_REPLY, f"reply line longer than {MAX_LINE_BYTES} bytes")
                return NEED_DATA
            if end > MAX_LINE_BYTES:
                raise ReplyError(FailureClass.OVERSIZED_REPLY, f"reply line longer than {MAX_LINE_BYTES} bytes")
            raw = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            reply = self._take_line(raw)
            if reply is not None:
                return reply

    def _take_line(self, raw: bytes) -> Reply | None:
        code, last, text = _split_line(raw)
        if self._code is not None and code != self._code:
            raise ReplyError(
                FailureClass.SMTP_PROTOCOL_ERROR,
                f"reply code changed from {self._code} to {code} inside a multi-line reply",
            )
        self._code = code
        self._lines.append(text)
        if not last:
            if len(self._lines) >= MAX_REPLY_LINES:
                raise ReplyError(FailureClass.OVERSIZED_REPLY, f"reply longer than {MAX_REPLY_LINES} lines")
            return None
        reply = Reply(code, tuple(self._lines))
        self._lines = []
        self._code = None
        return reply


def _split_line(raw: bytes) -> tuple[int, bool, str]:
    """Parse "NNN-text", "NNN text" or "NNN" into (code, is_last_line, text)."""
    head = raw[:3]
    if len(head) < 3 or not head.isdigit() or head[0:1] not in b"2345":
        shown = raw[:60].decode("utf-8", "replace")
        raise ReplyError(FailureClass.SMTP_PROTOCOL_ERROR, f"not an SMTP reply line: {shown!r}")
    separator = raw[3:4]
    if separator not in (b"", b" ", b"-"):
        shown = raw[:60].decode("utf-8", "replace")
        raise ReplyError(FailureClass.SMTP_PROTOCOL_ERROR, f"bad separator after reply code: {shown!r}")
    # Non-UTF-8 bytes occur in banners; keep the line, mark the bytes.
    text = raw[4:].decode("utf-8", "replace")
    return int(head), separator != b"-", text


@dataclass(frozen=True, slots=True)
class EhloInfo:
    greeting: str  # first line of the EHLO reply (the server's name and words)
    extensions: tuple[str, ...]  # "KEYWORD params" in the server's order, keyword upper-cased

    @property
    def keywords(self) -> frozenset[str]:
        return frozenset(ext.split(" ", 1)[0] for ext in self.extensions)

    @property
    def starttls(self) -> bool:
        return "STARTTLS" in self.keywords


def parse_ehlo(reply: Reply) -> EhloInfo:
    """Extract the extension keywords of a 250 EHLO reply (RFC 5321 §4.1.1.1).

    We keep the server's order and upper-case the keywords for stable queries.
    """
    ordered = []
    for keyword, params in _esmtp_extensions(reply.lines).items():
        ordered.append(f"{_ascii_upper(keyword)} {params}".strip())
    return EhloInfo(reply.lines[0] if reply.lines else "", tuple(ordered))


# Old-style "AUTH=method ..." lines (pre-RFC 4954 servers) count as the AUTH extension.
_OLDSTYLE_AUTH: Final = re.compile("auth=(?P<auth>.*)", re.IGNORECASE)


def _esmtp_extensions(lines: tuple[str, ...]) -> dict[str, str]:
    """{keyword: params} of the EHLO reply lines after the greeting, in the server's order (a repeated
    keyword keeps its first place and its last parameters). RFC 5321 §4.1.1.1: "KEYWORD [params]",
    separated by a space (RFC 1869).

    The same reading as aiosmtplib's ``parse_esmtp_extensions`` (5.x), which this replaces so that the
    pure dialogue imports no asyncio client; ``tests/unit/test_smtp_reply.py`` checks the two agree.
    """
    extensions: dict[str, str] = {}
    for raw in lines[1:]:
        line = raw.strip()
        if not line:
            continue
        oldstyle = _OLDSTYLE_AUTH.fullmatch(line)
        if oldstyle is not None:
            extensions["auth"] = oldstyle["auth"]
            continue
        keyword, _, params = line.partition(" ")
        extensions[keyword.lower()] = params
    return extensions


_ASCII_UPPER: Final = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def _ascii_upper(keyword: str) -> str:
    """Upper-case the ASCII letters only. An ehlo-keyword is ASCII (RFC 5321 §4.1.1.1); Unicode case
    mapping would turn a server's "\u017fTARTTLS" (long s) into "STARTTLS" and record an extension
    the server never advertised (and make us send STARTTLS to it)."""
    return keyword.translate(_ASCII_UPPER)
