"""Input streaming and domain normalization."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.input import (
    InputError,
    InputTally,
    InputTotal,
    LineSplitter,
    _count_meaningful,
    _decode_line,
    _decode_stream,
    check_input,
    input_digest,
    input_total,
    is_stream_source,
    normalize_domain,
    open_lines,
    read_domains,
)
from scanner.seen import SeenDomains


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("  example.com.  ", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("mail-1.sub.example.org", "mail-1.sub.example.org"),
        ("ÉCOLE.fr", "xn--cole-9oa.fr"),
    ],
)
def test_normalize_valid(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        (".", "empty"),
        ("localhost", "single label"),
        ("-bad.example", "letters, digits"),
        ("bad-.example", "letters, digits"),
        ("a..example", "empty label"),
        ("under_score.example", "letters, digits"),
        ("192.0.2.1", "numeric top-level"),
        ("http://example.com/", "URL"),
        ("user@example.com", "address"),
        ("exa mple.com", "spaces"),
        ("a" * 64 + ".example", "label longer"),
        (".".join(["abcdefghij"] * 26) + ".com", "longer than 253"),
        ("xn--zz.example", "invalid A-label"),
        ("\x00\x01junk.com", "control"),
    ],
)
def test_normalize_invalid(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_domain(raw)


@given(st.text(max_size=300))
def test_normalize_never_raises_anything_but_valueerror(text: str) -> None:
    try:
        out = normalize_domain(text)
    except ValueError:
        return
    assert out == out.lower() and out.isascii() and len(out) <= 253


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_text_file_with_comments_bom_crlf_and_junk(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbfexample.com\r\n# comment\r\n\r\nbad_name!\r\n\xff\xfe\x00binary\r\nEXAMPLE.org.\r\n"
    lines = list(read_domains(open_lines(_write(tmp_path / "d.txt", data))))
    assert [(ln.line_no, ln.domain) for ln in lines] == [
        (1, "example.com"), (4, None), (5, None), (6, "example.org"),
    ]
    assert all(ln.error for ln in lines if ln.domain is None)
    assert input_total(tmp_path / "d.txt") == InputTotal(4, "counted")


def test_tranco_csv_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "top.csv.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"1,google.com\n2,Example.NET\n3,not a domain\n")
    lines = list(read_domains(open_lines(path)))
    assert [ln.domain for ln in lines] == ["google.com", "example.net", None]
    assert [ln.rank for ln in lines] == [1, 2, 3]  # the list's rank is kept, also for an invalid name
    assert input_total(path) == InputTotal(3, "counted")  # a small gzip input is counted in a first pass


def test_bare_domains_have_no_rank(tmp_path: Path) -> None:
    lines = list(read_domains(open_lines(_write(tmp_path / "plain.txt", b"a.com\n12,b.com\nx,c.com\n"))))
    assert [(ln.domain, ln.rank) for ln in lines] == [("a.com", None), ("b.com", 12), (None, None)]


def test_overlong_line_is_one_invalid_line(tmp_path: Path) -> None:
    data = b"a.com\n" + b"x" * 100_000 + b"\nb.com\n"
    lines = list(read_domains(open_lines(_write(tmp_path / "long.txt", data))))
    assert [(ln.line_no, ln.domain is None) for ln in lines] == [(1, False), (2, True), (3, False)]


def test_seen_domains_reports_first_line(tmp_path: Path) -> None:
    with SeenDomains(tmp_path / "seen.sqlite") as seen:
        assert seen.first_seen("a.example", 1) is None
        assert seen.first_seen("b.example", 2) is None
        assert seen.first_seen("a.example", 7) == 1
        for i in range(25_000):  # crosses the commit batch boundary
            seen.first_seen(f"d{i}.example", 10 + i)
        assert seen.first_seen("d5.example", 99_999) == 15
    assert not (tmp_path / "seen.sqlite").exists()


def test_tally_accounts_for_every_physical_line(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(b"\xef\xbb\xbfexample.com\r\n\r\n# comment\n   \nbad name\nexample.org\n\xff\xfe\n")
    tally = InputTally()
    lines = list(read_domains(open_lines(path), tally))
    assert (tally.physical, tally.skipped, len(lines)) == (7, 3, 4)
    assert [line.line_no for line in lines] == [1, 5, 6, 7]


def test_the_line_count_streams_a_line_without_newline(tmp_path: Path) -> None:
    # Issue 11: a 600 MB line without a newline cost 1.26 GB in the line counter (it read whole lines).
    path = tmp_path / "one-line.txt"
    with path.open("wb") as fh:
        fh.write(b"a.example\n# comment\n  \n")
        for _ in range(32):
            fh.write(b"x" * (1 << 20))
    tracemalloc.start()
    try:
        assert input_total(path) == InputTotal(2, "counted")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"counting lines took {peak / 2**20:.1f} MiB"


@given(st.lists(st.sampled_from([b"a.example", b"\n", b"\r\n", b"#c", b" ", b"\xef\xbb\xbf", b"\xff", b"x" * 3000,
                                 b"y" * 5000]), max_size=12),
       st.integers(min_value=1, max_value=9000))
def test_line_splitter_reads_what_the_file_reader_reads(parts: list[bytes], chunk: int) -> None:
    data = b"".join(parts)
    expected = list(_decode_stream(io.BytesIO(data)))
    splitter, raw = LineSplitter(), []
    for start in range(0, len(data), chunk):
        raw.extend(splitter.feed(data[start:start + chunk]))
    raw.extend(splitter.finish())
    assert [_decode_line(line, i == 0) for i, line in enumerate(raw)] == expected
    # The progress-bar count agrees in any chunking (it ignores BOMs: it is an estimate).
    plain = data.replace(b"\xef\xbb\xbf", b"")
    chunks = iter([plain[i:i + chunk] for i in range(0, len(plain), chunk)])
    meaningful = [ln for ln in plain.split(b"\n") if ln.strip() and not ln.strip().startswith(b"#")]
    assert _count_meaningful(chunks) == len(meaningful)


def test_input_digest_covers_the_whole_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.txt", b"#" * (2 << 20) + b"\na.example\n")
    before = input_digest(path)
    path.write_bytes(b"#" * (2 << 20) + b"\nb.example\n")  # same size, changed past the first MiB
    assert input_digest(path) != before
    assert before == hashlib.sha256(b"#" * (2 << 20) + b"\na.example\n").hexdigest()


def test_stream_sources(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    assert is_stream_source("-") and is_stream_source(fifo) and is_stream_source("/dev/null")
    assert not is_stream_source(_write(tmp_path / "d.txt", b"a.example\n"))
    assert input_total(fifo) is None  # never opened: its one read belongs to the scan
    with pytest.raises(InputError, match="not a file"):
        check_input(tmp_path)
    with pytest.raises(InputError, match="no such input file"):
        check_input(tmp_path / "missing")


def test_a_rank_is_only_ascii_digits_that_fit_the_rank_column() -> None:
    """A Tranco rank must be an int64: "²" passes str.isdigit but not int(), and 24 digits overflow."""
    lines = ["1,a.example", "\u00b2,b.example", "999999999999999999999999,c.example", "d.example"]
    records = list(read_domains(iter(lines)))
    assert [(r.domain, r.rank) for r in records] == [("a.example", 1), (None, None), (None, None),
                                                     ("d.example", None)]
