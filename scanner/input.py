"""Stream domains from a list: text, Tranco CSV (``rank,domain``), gzip of either, stdin or a pipe.

Rules of this module:
1. Nothing is read ahead: lines are yielded one at a time, so memory does not grow with the file (nor
   with the length of one line: a line is cut at ``MAX_LINE_LENGTH`` bytes while it is read).
2. Every line that is not blank or a comment yields exactly one ``InputLine``, valid or not, so that
   the output accounts for every line (an invalid name becomes a row with status ``invalid_input``).
3. A *stream* input (stdin, a FIFO, ``<(zcat list.gz)``, a character device) is read once, without
   blocking the event loop (``stream_lines``): a slow producer never stalls the scan or Ctrl-C. It
   cannot be read a second time, so it has no line count and a scan of it cannot be resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import re
import selectors
import stat
import sys
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import idna

from scanner.names import a_label_form
from scanner.records import InputLine

__all__ = [
    "InputError",
    "InputTally",
    "InputTotal",
    "LineSplitter",
    "check_input",
    "input_digest",
    "input_total",
    "is_stream_source",
    "normalize_domain",
    "open_lines",
    "read_domains",
    "read_domains_async",
    "stream_lines",
]

# RFC 1035 §2.3.4: 255 octets on the wire = 253 characters in text without the trailing dot.
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
# A line longer than this is junk, not a domain; we keep only a prefix of it for the row.
MAX_LINE_LENGTH = 4096
RAW_KEEP = 300

_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ALL_NUMERIC_TLD = re.compile(r"^[0-9]+$")
_GZIP_MAGIC = b"\x1f\x8b"
GZIP_MAGIC = _GZIP_MAGIC  # public: scanner.provenance counts the lines of gzip input too
_CHUNK = 1 << 16  # bytes per read of a stream input or of the line counter
_DIGEST_CHUNK = 1 << 20


class InputError(ValueError):
    """The input file cannot be read at all (missing, unreadable)."""


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
    try:
        ascii_name = a_label_form(name)
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


def is_stream_source(source: str | Path) -> bool:
    """True for stdin ('-') and for a path that is not a regular file but can be read once: a FIFO or
    an anonymous pipe (``<(zcat list.gz)`` is ``/dev/fd/63``), a socket or a character device."""
    if str(source) == "-":
        return True
    try:
        mode = os.stat(source).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def check_input(source: str | Path) -> None:
    """Raise ``InputError`` (one line, naming the path) unless ``source`` can be read as a domain list."""
    if is_stream_source(source):
        return
    path = Path(source)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(f"no such input file: {path} ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        raise InputError(f"input {path} is not a file, a pipe or stdin")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read input file {path}: permission denied")


def input_digest(path: str | Path) -> str:
    """SHA-256 (hex) of the whole file, read in 1 MiB chunks (constant memory whatever the size).

    What a resumed scan compares to be sure the input is the very file of the first attempt: an edit
    anywhere, even one that keeps the size, changes it.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_DIGEST_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def open_lines(source: str | Path) -> Iterator[str]:
    """Yield decoded lines from a path ('-' = stdin), transparently gunzipping by magic bytes.

    Blocking reads: for a stream input inside the scan, use ``stream_lines``.
    """
    if str(source) == "-":
        yield from _decode_stream(sys.stdin.buffer)
        return
    path = Path(source)
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror or exc}") from exc
    read = 0
    try:
        with raw:
            head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
            if head == _GZIP_MAGIC:
                with gzip.open(raw, "rb") as unzipped:
                    for read, line in enumerate(_decode_stream(unzipped), start=1):  # noqa: B007 - read after
                        yield line
            else:
                for read, line in enumerate(_decode_stream(raw), start=1):  # noqa: B007 - read after
                    yield line
    except (OSError, EOFError, zlib.error) as exc:
        # A bad gzip header, a truncated stream, trailing junk or an I/O error: the lines read so far
        # stand (they were yielded); the caller records the failure and stops taking input.
        raise InputError(f"{path}: unreadable after line {read}: {exc}") from exc


def _decode_line(line: bytes, first: bool) -> str:
    # Decoding per line with "replace" keeps a binary-junk line as one (invalid) line instead of
    # failing the whole file; a UTF-8 BOM on the first line is dropped.
    text = line.decode("utf-8", errors="replace")
    if first:
        text = text.removeprefix("\ufeff")
    return text.rstrip("\r\n")


def _decode_stream(stream: IO[bytes] | gzip.GzipFile) -> Iterator[str]:
    first = True
    while True:
        line = stream.readline(MAX_LINE_LENGTH + 1)
        if not line:
            return
        if len(line) > MAX_LINE_LENGTH and not line.endswith(b"\n"):
            # Skip the rest of an over-long line so that it counts as one line.
            while (rest := stream.readline(MAX_LINE_LENGTH)) and not rest.endswith(b"\n"):
                pass
        yield _decode_line(line, first)
        first = False


class LineSplitter:
    """Bytes in any chunking → the lines ``_decode_stream`` would read, as raw bytes.

    A line is cut at ``MAX_LINE_LENGTH + 1`` bytes while it arrives (the rest of it is skipped up to its
    newline), so a line without an end costs no more memory than a short one.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skipping = False  # inside the unread rest of an over-long line

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while (newline := data.find(b"\n", start)) >= 0:
            if self._skipping:
                self._skipping = False
            else:
                self._buffer += data[start:min(newline + 1, start + MAX_LINE_LENGTH + 2)]
                lines.append(bytes(self._buffer[:MAX_LINE_LENGTH + 1]))
            self._buffer.clear()
            start = newline + 1
        if not self._skipping:
            self._buffer += data[start:start + MAX_LINE_LENGTH + 1 - len(self._buffer)]
            if len(self._buffer) > MAX_LINE_LENGTH:
                lines.append(bytes(self._buffer))
                self._buffer.clear()
                self._skipping = True
        return lines

    def finish(self) -> list[bytes]:
        """The last line, when the input does not end with a newline."""
        last = [bytes(self._buffer)] if self._buffer and not self._skipping else []
        self._buffer.clear()
        return last


async def stream_lines(source: str | Path, batch: int = 256) -> AsyncIterator[list[str]]:
    """``open_lines`` for the event loop, in batches: a stream input never blocks the loop.

    A regular file (or gzip) is read as by ``open_lines``, ``batch`` lines at a time: disk reads do not
    wait for a producer, and the caller yields to other tasks between batches. A stream gives what
    has arrived (at most one 64 KiB read per batch), so a line is handed over as soon as it is complete.
    Batches, not lines, because an ``async for`` step costs more than the work on a line.
    """
    if not is_stream_source(source) or (str(source) == "-" and not _pollable(sys.stdin.fileno())):
        # A file (also stdin redirected from one, or /dev/null): reads never wait for a producer.
        for lines in _batched(open_lines(source), batch):
            yield lines
        return
    pipe = await _open_stream(source)
    if not _pollable(pipe.fileno()):  # a character device such as /dev/null: never waits either
        pipe.close()
        for lines in _batched(open_lines(source), batch):
            yield lines
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
    blocking = os.get_blocking(pipe.fileno())
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
    splitter, first = LineSplitter(), True
    try:
        while chunk := await reader.read(_CHUNK):
            if raws := splitter.feed(chunk):
                yield [_decode_line(raw, first and i == 0) for i, raw in enumerate(raws)]
                first = False
        if raws := splitter.finish():
            yield [_decode_line(raws[0], first)]
    except OSError as exc:  # the lines handed over stand; the scan records the failure (as for a file)
        raise InputError(f"{source}: unreadable part-way: {exc.strerror or exc}") from exc
    finally:
        transport.close()
        if str(source) == "-":
            with contextlib.suppress(OSError):
                os.set_blocking(0, blocking)  # the flag is shared with our stdin: give it back


def _batched(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    """``size`` lines at a time. When the input becomes unreadable part-way (``InputError``), the lines
    read before the damage are still handed over, then the error: none of them is lost."""
    batch: list[str] = []
    try:
        for line in lines:
            batch.append(line)
            if len(batch) == size:
                yield batch
                batch = []
    except InputError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def _pollable(fd: int) -> bool:
    """Whether the event loop can wait on ``fd``. Regular files and some devices (/dev/null) cannot
    (epoll refuses them with EPERM), and must never reach ``connect_read_pipe``: uvloop aborts."""
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
    except (OSError, ValueError):
        return False
    return True


async def _open_stream(source: str | Path) -> IO[bytes]:
    """A new unbuffered file object for the stream input. stdin is duplicated (closing ours must not
    close the process's); a named FIFO is opened on a daemon thread, since ``open`` waits for a writer,
    and a thread still waiting at Ctrl-C must not keep the process alive."""
    if str(source) == "-":
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[int] = loop.create_future()

    def deliver(fd: int | None, exc: OSError | None) -> None:
        if opened.cancelled():
            if fd is not None:
                os.close(fd)
        elif exc is not None:
            opened.set_exception(InputError(f"cannot open {source}: {exc.strerror or exc}"))
        elif fd is not None:
            opened.set_result(fd)

    def open_blocking() -> None:
        try:
            fd = os.open(source, os.O_RDONLY)
        except OSError as exc:
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, fd, None)

    threading.Thread(target=open_blocking, name="input-open", daemon=True).start()
    return os.fdopen(await opened, "rb", buffering=0)


_MAX_RANK_DIGITS = 18  # < 2**63


def _domain_field(line: str) -> tuple[str, int | None]:
    """The domain part of a line and its rank: the whole line (no rank), or the second field of a Tranco
    ``rank,domain`` row and its first."""
    if "," in line:
        first, _, rest = line.partition(",")
        digits = first.strip()
        # ASCII digits only (str.isdigit also takes "²", which int() refuses), and few enough for the
        # int64 input_rank column: a longer "rank" is no Tranco rank, and the line is read as it is.
        if digits.isascii() and digits.isdigit() and len(digits) <= _MAX_RANK_DIGITS:
            return rest.split(",", 1)[0], int(digits)
    return line, None


def _parse_line(line_no: int, line: str, tally: InputTally) -> InputLine | None:
    """One physical line → its ``InputLine``, or None for a blank or comment line (counted in ``tally``)."""
    tally.physical = line_no
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        tally.skipped += 1
        return None
    raw = stripped[:RAW_KEEP]
    field, rank = _domain_field(stripped)
    try:
        domain = normalize_domain(field)
    except ValueError as exc:
        return InputLine(line_no, raw, None, str(exc), rank)
    return InputLine(line_no, raw, domain, None, rank)


def read_domains(lines: Iterator[str], tally: InputTally | None = None) -> Iterator[InputLine]:
    """Turn raw lines into ``InputLine`` records; blank lines and ``#`` comments are skipped.

    ``tally`` (optional) counts every physical line and the skipped ones, so that a caller can show
    that each line of the file was either a row or a blank/comment line.
    """
    tally = tally if tally is not None else InputTally()
    for line_no, line in enumerate(lines, start=1):
        if (item := _parse_line(line_no, line, tally)) is not None:
            yield item


async def read_domains_async(
    batches: AsyncIterator[list[str]], tally: InputTally | None = None
) -> AsyncIterator[list[InputLine]]:
    """``read_domains`` over ``stream_lines``: the same records, line numbers and tally, in batches."""
    tally = tally if tally is not None else InputTally()
    line_no = 0
    async for lines in batches:
        items = []
        for line in lines:
            line_no += 1
            if (item := _parse_line(line_no, line, tally)) is not None:
                items.append(item)
        yield items


@dataclass(frozen=True, slots=True)
class InputTotal:
    """How many lines the input has, for progress and ETA: ``counted`` exactly, or ``estimated``."""

    lines: int
    how: str  # "counted" or "estimated"


# Gzip input up to this compressed size is counted in a first pass (decompressing runs at hundreds of
# MB/s); above it the total is estimated from the compressed size and the first _SAMPLE_BYTES.
GZIP_COUNT_LIMIT = 64 << 20
_SAMPLE_BYTES = 4 << 20


def _chunks(fh: IO[bytes] | gzip.GzipFile) -> Iterator[bytes]:
    return iter(lambda: fh.read(_CHUNK), b"")


def input_total(source: str | Path, gzip_count_limit: int = GZIP_COUNT_LIMIT) -> InputTotal | None:
    """Lines of the input that become rows; None for a stream (stdin, FIFO) or an unreadable file.

    Reads fixed-size chunks, never a whole line: a file that is one 600 MB line costs 64 KiB here.
    """
    if is_stream_source(source):
        return None  # it can be read only once, and that read is the scan's
    path = Path(source)
    try:
        with path.open("rb") as fh:
            if fh.read(2) != _GZIP_MAGIC:
                fh.seek(0)
                return InputTotal(_count_meaningful(_chunks(fh)), "counted")
            size = path.stat().st_size
            fh.seek(0)
            with gzip.open(fh, "rb") as unzipped:
                if size <= gzip_count_limit:
                    return InputTotal(_count_meaningful(_chunks(unzipped)), "counted")
                sample = unzipped.read(_SAMPLE_BYTES)
                # Compressed bytes consumed so far: the sample's share of the whole file.
                consumed = max(1, fh.tell())
                return InputTotal(round(_count_meaningful(iter([sample])) * size / consumed), "estimated")
    except (OSError, EOFError, gzip.BadGzipFile):
        return None


def _count_meaningful(chunks: Iterator[bytes]) -> int:
    count = 0
    decided = meaningful = False  # the current line's first non-blank byte was seen / was not '#'
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        for index, piece in enumerate(pieces):
            if not decided and (content := piece.lstrip()):
                decided, meaningful = True, not content.startswith(b"#")
            if index < len(pieces) - 1:  # a newline ends this piece's line
                count += decided and meaningful
                decided = meaningful = False
    return count + (decided and meaningful)
