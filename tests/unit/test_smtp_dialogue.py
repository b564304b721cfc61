"""The SMTP dialogue (pure) and its driver replayed over a scripted stream: every decision, every phase's
failure, timeout and cancellation, with the stream always closed at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from scanner.config import ProbeConfig
from scanner.net.stream import StreamError
from scanner.sansio import NEED_DATA
from scanner.smtp.dialogue import START_TLS, TAKE_BUFFERED, Done, Failed, Send, SmtpDialogue
from scanner.smtp.session import SmtpProbeResult, make_probe_context, probe_smtp
from scanner.status import FailureClass, Phase, ProbeStatus
from scanner.tls.enumeration import AnswerKind, version_hello
from scanner.tls.messages import ContentType, ExtensionType, HandshakeType, encode_handshake, encode_record
from scanner.tls.probe import probe_hello
from scanner.tls.versions import TlsVersion
from worlds.scripted_stream import STALL, ScriptedStream, Stall, scripted_opener
from worlds.tls_server import encode_server_hello

CONFIG = ProbeConfig(ehlo_name="scanner.test", connect_timeout=0.05, banner_timeout=0.05, command_timeout=0.05,
                     tls_timeout=0.05, probe_deadline=30.0)
CONTEXT = make_probe_context()

BANNER = b"220 mx.example.test ESMTP Postfix (Debian/GNU)\r\n"
EHLO_STARTTLS = (b"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
                 b"250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250 CHUNKING\r\n")
EHLO_PLAIN = b"250-mx.example.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
GO_AHEAD = b"220 2.0.0 Ready to start TLS\r\n"
BYE = b"221 2.0.0 Bye\r\n"

Script = Iterable[bytes | StreamError | Stall]


async def _probe(stream: ScriptedStream) -> SmtpProbeResult:
    opener, _ = scripted_opener(stream)
    return await probe_smtp("192.0.2.1", 25, "mx.example.test", CONFIG, CONTEXT, open_stream=opener)


# ---- the pure dialogue ---------------------------------------------------------------------------


def test_dialogue_needs_data_until_a_reply_is_whole() -> None:
    dialogue = SmtpDialogue("scanner.test")
    assert dialogue.next_action() is NEED_DATA
    for byte in BANNER[:-1]:
        dialogue.receive_data(bytes([byte]))
        assert dialogue.next_action() is NEED_DATA
    dialogue.receive_data(BANNER[-1:])
    assert dialogue.next_action() == Send(b"EHLO scanner.test\r\n")
    assert dialogue.next_action() is NEED_DATA  # a command goes out once
    assert dialogue.phase is Phase.EHLO


def test_dialogue_up_to_start_tls_and_quit() -> None:
    dialogue = SmtpDialogue("scanner.test")
    dialogue.receive_data(BANNER)
    assert dialogue.next_action() == Send(b"EHLO scanner.test\r\n")
    dialogue.receive_data(EHLO_STARTTLS)
    assert dialogue.next_action() == Send(b"STARTTLS\r\n")
    dialogue.receive_data(GO_AHEAD)
    assert dialogue.next_action() is TAKE_BUFFERED
    assert dialogue.next_action() is TAKE_BUFFERED  # repeats until the buffered bytes are given
    dialogue.receive_unprotected(b"")
    assert dialogue.next_action() is START_TLS
    dialogue.tls_established()
    assert dialogue.next_action() == Send(b"QUIT\r\n")
    dialogue.receive_data(BYE)
    assert dialogue.next_action() == Done()
    assert not dialogue.plaintext_after_starttls and dialogue.ehlo is not None and dialogue.ehlo.starttls


def test_dialogue_eof_mid_reply_is_closed_failure() -> None:
    dialogue = SmtpDialogue("scanner.test")
    dialogue.receive_data(b"220-first line\r\n")
    assert dialogue.next_action() is NEED_DATA
    dialogue.receive_data(b"")
    assert dialogue.next_action() == Failed(Phase.BANNER, FailureClass.CLOSED, "connection closed by server")


# ---- replays through the driver ------------------------------------------------------------------


async def test_postfix_like_exchange() -> None:
    stream = ScriptedStream([BANNER, EHLO_STARTTLS, GO_AHEAD], after_tls=[BYE])
    result = await _probe(stream)
    assert result.status is ProbeStatus.STARTTLS_OK and result.phase is Phase.DONE, result.detail
    assert stream.commands == [b"EHLO scanner.test", b"STARTTLS", b"QUIT"]
    assert stream.tls_server_name == "mx.example.test"
    assert result.tls is not None and result.tls.version == "TLSv1.3"
    assert result.banner_code == 220 and result.ehlo_code == 250 and result.starttls_code == 220
    assert "PIPELINING" in result.ehlo_extensions and result.starttls_advertised
    assert not result.plaintext_after_starttls
    assert set(result.timings_ms) == {Phase.CONNECT, Phase.BANNER, Phase.EHLO, Phase.STARTTLS, Phase.TLS_HANDSHAKE}
    assert stream.closed


async def test_no_starttls_quits() -> None:
    stream = ScriptedStream([BANNER, EHLO_PLAIN, BYE])
    result = await _probe(stream)
    assert result.status is ProbeStatus.NO_STARTTLS and result.starttls_advertised is False
    assert stream.commands == [b"EHLO scanner.test", b"QUIT"] and not stream.tls_started and stream.closed


async def test_helo_fallback() -> None:
    stream = ScriptedStream([BANNER, b"502 5.5.2 Error: command not recognized\r\n", b"250 mx.example.test\r\n", BYE])
    result = await _probe(stream)
    assert result.status is ProbeStatus.NO_STARTTLS and result.used_helo
    assert result.starttls_advertised is False and result.ehlo_code == 502
    assert stream.commands == [b"EHLO scanner.test", b"HELO scanner.test", b"QUIT"]
    assert set(result.timings_ms) == {Phase.CONNECT, Phase.BANNER, Phase.EHLO}  # HELO is timed as EHLO


THROTTLE = b"421 4.7.0 mx.example.test Error: too many connections\r\n"


@pytest.mark.parametrize(("script", "phase", "commands"), [
    ([THROTTLE], Phase.BANNER, []),
    ([BANNER, THROTTLE], Phase.EHLO, [b"EHLO scanner.test"]),
    ([BANNER, b"500 5.5.1 no\r\n", THROTTLE], Phase.HELO, [b"EHLO scanner.test", b"HELO scanner.test"]),
    ([BANNER, EHLO_STARTTLS, THROTTLE], Phase.STARTTLS, [b"EHLO scanner.test", b"STARTTLS"]),
], ids=["banner", "ehlo", "helo", "starttls"])
async def test_421_at_each_phase_is_throttled(script: Script, phase: Phase, commands: list[bytes]) -> None:
    stream = ScriptedStream(script)
    result = await _probe(stream)
    assert (result.status, result.phase, result.failure_class) == (ProbeStatus.THROTTLED, phase, FailureClass.SMTP_421)
    assert stream.commands == commands  # no QUIT after a 421: the server is closing (RFC 5321 §3.8)
    assert stream.closed and not stream.tls_started


async def test_421_to_quit_changes_nothing() -> None:
    result = await _probe(ScriptedStream([BANNER, EHLO_PLAIN, THROTTLE]))
    assert result.status is ProbeStatus.NO_STARTTLS and result.failure_class is None


@pytest.mark.parametrize(("reply", "failure"), [
    (b"454 4.7.0 TLS not available due to local problem\r\n", FailureClass.SMTP_4XX),
    (b"502 5.5.1 STARTTLS not implemented\r\n", FailureClass.SMTP_5XX),
])
async def test_starttls_refused_keeps_ehlo(reply: bytes, failure: FailureClass) -> None:
    stream = ScriptedStream([BANNER, EHLO_STARTTLS, reply])
    result = await _probe(stream)
    assert (result.status, result.phase, result.failure_class) == (ProbeStatus.STARTTLS_REJECTED, Phase.STARTTLS,
                                                                   failure)
    assert result.starttls_advertised and result.ehlo_extensions and result.starttls_code == int(reply[:3])
    assert not stream.tls_started and stream.closed


async def test_replies_split_at_every_byte() -> None:
    whole = BANNER + EHLO_STARTTLS
    stream = ScriptedStream([*(bytes([b]) for b in BANNER), *(bytes([b]) for b in EHLO_STARTTLS),
                             GO_AHEAD[:5], GO_AHEAD[5:]], after_tls=[BYE[:1], BYE[1:]])
    result = await _probe(stream)
    assert result.status is ProbeStatus.STARTTLS_OK, result.detail
    assert len(result.ehlo_extensions) == whole.count(b"\r\n250") - 1


async def test_multiline_banner_and_code_change_inside_a_reply() -> None:
    banner = b"220-mx.example.test ESMTP\r\n220-no UCE\r\n220 ready\r\n"
    result = await _probe(ScriptedStream([banner, EHLO_PLAIN, BYE]))
    assert result.banner == "220 mx.example.test ESMTP\n220 no UCE\n220 ready"
    broken = await _probe(ScriptedStream([b"220-mx\r\n250 mx\r\n"]))
    assert (broken.status, broken.failure_class) == (ProbeStatus.PROTOCOL_ERROR, FailureClass.SMTP_PROTOCOL_ERROR)


@pytest.mark.parametrize(("with_reply", "buffered"), [
    (b"EHLO injected\r\n", b""),  # in our reply reader's buffer (same read as the 220)
    (b"", b"RSET\r\n" * 2000),  # still in the stream's own buffer (a long injection)
], ids=["reader-buffer", "stream-buffer"])
async def test_injection_after_starttls_is_flagged(with_reply: bytes, buffered: bytes) -> None:
    stream = ScriptedStream([BANNER, EHLO_STARTTLS, GO_AHEAD + with_reply], buffered=buffered, after_tls=[BYE])
    result = await _probe(stream)
    assert result.status is ProbeStatus.STARTTLS_OK and result.plaintext_after_starttls
    assert stream.take_buffered() == b""  # the stream's buffer was emptied before the handshake


async def test_tls_alert_after_220_is_a_handshake_failure_not_injection() -> None:
    alert = bytes([ContentType.ALERT, 3, 3, 0, 2, 2, 70])  # fatal protocol_version
    stream = ScriptedStream([BANNER, EHLO_STARTTLS, GO_AHEAD + alert])
    result = await _probe(stream)
    assert (result.status, result.phase, result.failure_class) == (ProbeStatus.TLS_HANDSHAKE_FAILED,
                                                                   Phase.TLS_HANDSHAKE, FailureClass.TLS_ALERT)
    assert not result.plaintext_after_starttls and not stream.tls_started and stream.closed


async def test_handshake_failure_is_recorded() -> None:
    stream = ScriptedStream([BANNER, EHLO_STARTTLS, GO_AHEAD], tls=StreamError(FailureClass.TLS_ALERT, "handshake"))
    result = await _probe(stream)
    assert (result.status, result.phase) == (ProbeStatus.TLS_HANDSHAKE_FAILED, Phase.TLS_HANDSHAKE)
    assert stream.commands == [b"EHLO scanner.test", b"STARTTLS"] and stream.closed  # no QUIT after a failed TLS


# ---- timeouts and cancellation at every phase ----------------------------------------------------

# phase -> (script up to the stall, TLS outcome): the server falls silent in that phase.
STALLS: dict[Phase, tuple[list[bytes | StreamError | Stall], object]] = {
    Phase.BANNER: ([STALL], None),
    Phase.EHLO: ([BANNER, STALL], None),
    Phase.HELO: ([BANNER, b"502 no\r\n", STALL], None),
    Phase.STARTTLS: ([BANNER, EHLO_STARTTLS, STALL], None),
    Phase.TLS_HANDSHAKE: ([BANNER, EHLO_STARTTLS, GO_AHEAD], STALL),
}


def _stalling(phase: Phase) -> ScriptedStream:
    script, tls = STALLS[phase]
    return ScriptedStream(script, tls=STALL) if tls is STALL else ScriptedStream(script)


@pytest.mark.parametrize("phase", list(STALLS), ids=[p.value for p in STALLS])
async def test_timeout_at_each_phase(phase: Phase) -> None:
    stream = _stalling(phase)
    result = await _probe(stream)
    assert (result.status, result.phase, result.failure_class) == (ProbeStatus.TIMEOUT, phase, FailureClass.TIMEOUT)
    assert stream.closed


async def test_connect_timeout() -> None:
    opener, connects = scripted_opener(STALL)
    result = await probe_smtp("192.0.2.1", 25, None, CONFIG, CONTEXT, open_stream=opener)
    assert (result.status, result.phase, result.failure_class) == (ProbeStatus.TIMEOUT, Phase.CONNECT,
                                                                   FailureClass.TIMEOUT)
    assert connects == ["192.0.2.1"]


async def test_reset_at_connect_is_charged_to_the_banner() -> None:
    opener, _ = scripted_opener(StreamError(FailureClass.RESET, "connection reset by peer"))
    result = await probe_smtp("192.0.2.1", 25, None, CONFIG, CONTEXT, open_stream=opener)
    assert (result.status, result.phase) == (ProbeStatus.THROTTLED, Phase.BANNER)


async def test_probe_deadline_names_the_phase_it_was_in() -> None:
    config = ProbeConfig(ehlo_name="scanner.test", command_timeout=60.0, probe_deadline=0.05)
    opener, _ = scripted_opener(ScriptedStream([BANNER, b"502 no\r\n", STALL]))
    result = await probe_smtp("192.0.2.1", 25, None, config, CONTEXT, open_stream=opener)
    # HELO is part of the EHLO phase for the clock, as the deadline has always been charged.
    assert (result.status, result.phase, result.failure_class) == (ProbeStatus.TIMEOUT, Phase.EHLO,
                                                                   FailureClass.TIMEOUT)


SLOW = ProbeConfig(ehlo_name="scanner.test", connect_timeout=60.0, banner_timeout=60.0, command_timeout=60.0,
                   tls_timeout=60.0)


async def _cancel_when_stalled(stream: ScriptedStream, work: asyncio.Task[object]) -> None:
    waiter = asyncio.ensure_future(stream.stalled.wait())
    await asyncio.wait({waiter, work}, return_when=asyncio.FIRST_COMPLETED)
    assert stream.stalled.is_set(), "the work ended before reaching its stall"
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work


@pytest.mark.parametrize("phase", list(STALLS), ids=[p.value for p in STALLS])
async def test_cancellation_at_each_phase_closes_the_stream(phase: Phase) -> None:
    stream = _stalling(phase)
    opener, _ = scripted_opener(stream)
    before = asyncio.all_tasks()
    work = asyncio.create_task(probe_smtp("192.0.2.1", 25, None, SLOW, CONTEXT, open_stream=opener))
    await _cancel_when_stalled(stream, work)
    assert stream.closed
    assert asyncio.all_tasks() == before


# ---- the crafted-hello probe over the same seam --------------------------------------------------


def _server_hello(suite: int) -> bytes:
    hello = encode_server_hello(version=TlsVersion.TLS12, random=bytes(32), cipher_suite=suite,
                                extensions=[(ExtensionType.RENEGOTIATION_INFO, b"\x00")])
    done = encode_handshake(HandshakeType.SERVER_HELLO_DONE, b"")
    return encode_record(ContentType.HANDSHAKE, TlsVersion.TLS12, hello + done)


async def test_hello_probe_speaks_the_same_smtp_then_reads_the_server_hello() -> None:
    request = version_hello(TlsVersion.TLS12)
    suite = request.suites[0]
    stream = ScriptedStream([BANNER, EHLO_STARTTLS, GO_AHEAD, _server_hello(suite)])
    opener, _ = scripted_opener(stream)
    answer = await probe_hello("192.0.2.1", 25, "mx.example.test", CONFIG, request, open_stream=opener)
    assert answer.kind is AnswerKind.ACCEPTED and answer.suite == suite, answer.detail
    assert stream.commands[:2] == [b"EHLO scanner.test", b"STARTTLS"]
    assert stream.written[-1][0] == ContentType.HANDSHAKE  # the crafted ClientHello, no ssl handshake
    assert not stream.tls_started and stream.closed


@pytest.mark.parametrize("where", ["starttls", "hello"])
async def test_hello_probe_timeout_and_cancellation(where: str) -> None:
    script: list[bytes | StreamError | Stall] = [BANNER, EHLO_STARTTLS, STALL] if where == "starttls" else [
        BANNER, EHLO_STARTTLS, GO_AHEAD, STALL]
    stream = ScriptedStream(script)
    opener, _ = scripted_opener(stream)
    answer = await probe_hello("192.0.2.1", 25, None, CONFIG, version_hello(TlsVersion.TLS12), open_stream=opener)
    assert answer.kind is AnswerKind.UNTESTABLE and "timeout" in answer.detail and stream.closed
    stream = ScriptedStream(script)
    opener, _ = scripted_opener(stream)
    before = asyncio.all_tasks()
    work = asyncio.create_task(probe_hello("192.0.2.1", 25, None, SLOW, version_hello(TlsVersion.TLS12),
                                           open_stream=opener))
    await _cancel_when_stalled(stream, work)
    assert stream.closed and asyncio.all_tasks() == before
