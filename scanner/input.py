"""Stream domains from a list: text, Tranco CSV (``rank,domain``), gzip of either, or stdin.

Rules of this module:
1. Nothing is read ahead: lines are yielded one at a time, so memory does not grow with the file.
2. Every line that is not blank or a comment yields exactly one ``InputLine``, valid or not, so that
   the output accounts for every line (an invalid name becomes a row with status ``invalid_input``).
"""

from __future__ import annotations

import gzip
import io
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import idna

__all__ = ["InputError", "InputLine", "InputTally", "count_lines", "normalize_domain", "open_lines", "read_domains"]

# RFC 1035 §2.3.4: 255 octets on the wire = 253 characters in text without the trailing dot.
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
# A line longer than this is junk, not a domain; we keep only a prefix of it for the row.
MAX_LINE_LENGTH = 4096
RAW_KEEP = 300

_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ALL_NUMERIC_TLD = re.compile(r"^[0-9]+$")
_GZIP_MAGIC = b"\x1f\x8b"


class InputError(ValueError):
    """The input file cannot be read at all (missing, unreadable)."""


@dataclass(frozen=True, slots=True)
class InputLine:
    """One meaningful input line. Exactly one of ``domain`` / ``error`` is set."""

    line_no: int  # 1-based line number in the input
    raw: str  # the line as read (trimmed, capped at RAW_KEEP characters)
    domain: str | None  # normalized A-label form, lower case, no trailing dot
    error: str | None  # why the line is not a valid domain
    rank: int | None = None  # the list's rank of a Tranco-style "rank,domain" line (None for a bare domain)


@dataclass(slots=True)
class InputTally:
    """Physical lines read and the blank or comment lines among them (which get no row)."""

    physical: int = 0
    skipped: int = 0


def normalize_domain(text: str) -> str:
    """Return the canonical A-label form of ``text`` or raise ``ValueError`` saying why not.

    Trims, lower-cases, drops one trailing dot, converts IDN U-labels to A-labels (IDNA 2008 with
    UTS #46 mapping, as browsers and MTAs do), then checks LDH syntax and length limits.
    """
    name = text.strip().rstrip(".") if text.strip() != "." else ""
    if not name:
        raise ValueError("empty name")
    if len(name) > MAX_LINE_LENGTH:
        raise ValueError("name too long")
    if "://" in name or "/" in name or "@" in name:
        raise ValueError("not a bare domain (URL or address?)")
    if any(ord(c) < 0x21 or c == "\x7f" for c in name):
        raise ValueError("contains spaces or control characters")
    if name.isascii():
        ascii_name = name.lower()
    else:
        try:
            ascii_name = idna.encode(name, uts46=True, transitional=False).decode("ascii").lower()
        except idna.IDNAError as exc:
            raise ValueError(f"invalid IDN: {exc}") from exc
    _check_ldh(ascii_name)
    return ascii_name


def _check_ldh(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"name longer than {MAX_NAME_LENGTH} characters")
    labels = name.split(".")
    if len(labels) < 2:
        raise ValueError("not a fully qualified domain (single label)")
    for label in labels:
        if not label:
            raise ValueError("empty label")
        if len(label) > MAX_LABEL_LENGTH:
            raise ValueError(f"label longer than {MAX_LABEL_LENGTH} characters")
        if not _LDH_LABEL.match(label):
            raise ValueError(f"label {label[:40]!r} is not letters, digits and inner hyphens")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError as exc:
                raise ValueError(f"invalid A-label {label[:40]!r}: {exc}") from exc
    # A numeric TLD means this is an IPv4 address or junk, never a registrable name (RFC 3696 §2).
    if _ALL_NUMERIC_TLD.match(labels[-1]):
        raise ValueError("numeric top-level label (an IP address?)")


def open_lines(source: str | Path) -> Iterator[str]:
    """Yield decoded lines from a path ('-' = stdin), transparently gunzipping by magic bytes."""
    if str(source) == "-":
        yield from _decode_stream(sys.stdin.buffer)
        return
    path = Path(source)
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with raw:
        head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
        if head == _GZIP_MAGIC:
            with gzip.open(raw, "rb") as unzipped:
                yield from _decode_stream(unzipped)
        else:
            yield from _decode_stream(raw)


def _decode_stream(stream: IO[bytes] | gzip.GzipFile) -> Iterator[str]:
    # Decoding per line with "replace" keeps a binary-junk line as one (invalid) line instead of
    # failing the whole file; a UTF-8 BOM on the first line is dropped.
    first = True
    while True:
        line = stream.readline(MAX_LINE_LENGTH + 1)
        if not line:
            return
        if len(line) > MAX_LINE_LENGTH and not line.endswith(b"\n"):
            # Skip the rest of an over-long line so that it counts as one line.
            while (rest := stream.readline(MAX_LINE_LENGTH)) and not rest.endswith(b"\n"):
                pass
        text = line.decode("utf-8", errors="replace")
        if first:
            text = text.removeprefix("\ufeff")
            first = False
        yield text.rstrip("\r\n")


def _domain_field(line: str) -> tuple[str, int | None]:
    """The domain part of a line and its rank: the whole line (no rank), or the second field of a Tranco
    ``rank,domain`` row and its first."""
    if "," in line:
        first, _, rest = line.partition(",")
        if first.strip().isdigit():
            return rest.split(",", 1)[0], int(first.strip())
    return line, None


def read_domains(lines: Iterator[str], tally: InputTally | None = None) -> Iterator[InputLine]:
    """Turn raw lines into ``InputLine`` records; blank lines and ``#`` comments are skipped.

    ``tally`` (optional) counts every physical line and the skipped ones, so that a caller can show
    that each line of the file was either a row or a blank/comment line.
    """
    tally = tally if tally is not None else InputTally()
    for line_no, line in enumerate(lines, start=1):
        tally.physical = line_no
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            tally.skipped += 1
            continue
        raw = stripped[:RAW_KEEP]
        field, rank = _domain_field(stripped)
        try:
            domain = normalize_domain(field)
        except ValueError as exc:
            yield InputLine(line_no, raw, None, str(exc), rank)
        else:
            yield InputLine(line_no, raw, domain, None, rank)


def count_lines(source: str | Path) -> int | None:
    """Number of non-blank, non-comment lines, for the progress bar; None for stdin and gzip input."""
    if str(source) == "-":
        return None
    path = Path(source)
    try:
        with path.open("rb") as fh:
            if fh.read(2) == _GZIP_MAGIC:
                return None
            fh.seek(0)
            return sum(1 for line in fh if line.strip() and not line.lstrip().startswith(b"#"))
    except OSError:
        return None
