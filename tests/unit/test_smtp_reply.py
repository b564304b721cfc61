"""Sans-IO SMTP reply framing and EHLO parsing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.sansio import NEED_DATA
from scanner.smtp.dialogue import early_tls_alert
from scanner.smtp.reply import MAX_LINE_BYTES, Reply, ReplyError, ReplyReader, parse_ehlo
from scanner.status import FailureClass


def _replies(data: bytes, chunk: int = 0) -> list[Reply]:
    reader = ReplyReader()
    out: list[Reply] = []
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in pieces:
        reader.feed(piece)
        while (reply := reader.next_reply()) is not NEED_DATA:
            assert isinstance(reply, Reply)
            out.append(reply)
    return out


def test_single_and_multiline_any_chunking() -> None:
    data = b"220-mx.example ESMTP\r\n220-second line\r\n220 last\r\n250 ok\n"
    for chunk in (0, 1, 2, 7):
        replies = _replies(data, chunk)
        assert [(r.code, r.lines) for r in replies] == [
            (220, ("mx.example ESMTP", "second line", "last")), (250, ("ok",)),
        ]


def test_bare_code_line_and_non_utf8() -> None:
    (reply,) = _replies(b"250\r\n")
    assert reply.code == 250 and reply.lines == ("",)
    (reply,) = _replies(b"220 caf\xe9 ready\r\n")
    assert reply.text == "caf\ufffd ready"


def test_need_data_until_last_line() -> None:
    reader = ReplyReader()
    reader.feed(b"250-a\r\n250-b\r\n")
    assert reader.next_reply() is NEED_DATA
    reader.feed(b"250 c\r\n")
    assert reader.next_reply() == Reply(250, ("a", "b", "c"))


@pytest.mark.parametrize(
    ("data", "failure"),
    [
        (b"hello there\r\n", FailureClass.SMTP_PROTOCOL_ERROR),
        (b"600 what\r\n", FailureClass.SMTP_PROTOCOL_ERROR),
        (b"250-a\r\n251 b\r\n", FailureClass.SMTP_PROTOCOL_ERROR),
        (b"250xno\r\n", FailureClass.SMTP_PROTOCOL_ERROR),
        (b"220 " + b"x" * (MAX_LINE_BYTES + 10), FailureClass.OVERSIZED_REPLY),
        (b"250-x\r\n" * 200, FailureClass.OVERSIZED_REPLY),
    ],
)
def test_malformed_and_oversized(data: bytes, failure: FailureClass) -> None:
    with pytest.raises(ReplyError) as info:
        _replies(data)
    assert info.value.failure_class is failure


def test_buffered_bytes_after_reply_are_visible() -> None:
    reader = ReplyReader()
    reader.feed(b"220 go ahead\r\n250 injected\r\n")
    assert reader.next_reply() == Reply(220, ("go ahead",))
    assert reader.buffered() == b"250 injected\r\n"


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_only_replies_needdata_or_replyerror(data: bytes, chunk: int) -> None:
    with contextlib.suppress(ReplyError):
        _replies(data, chunk)


def test_parse_ehlo_keeps_order_and_uppercases() -> None:
    reply = Reply(250, ("mx.example Hello", "PIPELINING", "size 10240000", "starttls", "AUTH=LOGIN PLAIN",
                        "8BITMIME"))
    info = parse_ehlo(reply)
    assert info.greeting == "mx.example Hello"
    assert info.starttls
    assert info.extensions[0] == "PIPELINING"
    assert "SIZE 10240000" in info.extensions
    assert "STARTTLS" in info.keywords


def test_parse_ehlo_without_starttls() -> None:
    info = parse_ehlo(Reply(250, ("mx.example", "PIPELINING", "XXXXXXXA")))
    assert not info.starttls and "XXXXXXXA" in info.keywords


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bytes.fromhex("15030300020246"), (2, 70)),  # fatal protocol_version, as OpenSSL sends with no version enabled
        (bytes.fromhex("150301000201700a"), (1, 112)),  # warning unrecognized_name, trailing bytes ignored
        (b"250 OK\r\n", None),  # plaintext after the 220: the injection case, not an alert
        (bytes.fromhex("160303000202"), None),  # a handshake record, and too short
        (bytes.fromhex("15030300030246ff"), None),  # an alert record is exactly 2 bytes long
        (b"", None),
    ],
)
def test_early_tls_alert(data: bytes, expected: tuple[int, int] | None) -> None:
    alert = early_tls_alert(data)
    assert (None if alert is None else (alert.level, alert.description)) == expected
    if alert is not None and alert.description == 70:
        assert alert.detail.startswith("fatal alert protocol_version (70)")


_EHLO_WORDS = st.sampled_from(["STARTTLS", "starttls", "AUTH", "auth", "AUTH=LOGIN PLAIN", "auth=login", "SIZE",
                               "8BITMIME", "\u017fTARTTLS", "\u212aEY", "PIPELINING", "X-EXPS=LOGIN", ""])
_EHLO_LINE = st.lists(st.one_of(_EHLO_WORDS, st.text(max_size=12)), max_size=4).map(" ".join)


@given(st.lists(_EHLO_LINE, min_size=1, max_size=8))
def test_ehlo_extensions_read_as_aiosmtplib_reads_them(lines: list[str]) -> None:
    """Our EHLO keyword parser replaced aiosmtplib's (so the dialogue imports no asyncio client): same
    keywords, same parameters, same order, for any reply."""
    esmtp = pytest.importorskip("aiosmtplib.esmtp")
    lines = [line.replace("\n", " ") for line in lines]
    expected, _auth = esmtp.parse_esmtp_extensions("\n".join(lines))
    from scanner.smtp.reply import _esmtp_extensions

    assert list(_esmtp_extensions(tuple(lines)).items()) == list(expected.items())
