"""The only TLS-record I/O: send one crafted ClientHello after STARTTLS and read the server's answer.

A probe needs the ServerHello (or HelloRetryRequest), an alert, or the close — never a finished
handshake — so it works for protocol versions and suites that this machine's OpenSSL refuses to speak
(SSLv3, EXPORT, RC4, ...). Bytes go through the pure codec (``builder``, ``parser``) and the stream seam
(``scanner.net.stream``, after the shared SMTP dialogue up to STARTTLS); this module only
moves them and keeps the clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import time
from collections.abc import Awaitable, Callable

from scanner.config import ENUM_RETRY_DELAYS, ProbeConfig
from scanner.errors import describe_bug
from scanner.net.stream import READ_CHUNK, ByteStream, StreamError, StreamOpener, open_tcp_stream
from scanner.sansio import NeedData
from scanner.smtp.session import RawStarttls
from scanner.status import FailureClass, ProbeStatus
from scanner.tls.builder import build_client_hello, make_client_hello_spec
from scanner.tls.ciphers import KeyExchange
from scanner.tls.ciphers import suite as lookup_suite
from scanner.tls.enumeration import AnswerKind, EnumerationResult, HelloAnswer, HelloRequest, Plan
from scanner.tls.messages import (
    Alert,
    AlertDescription,
    AlertLevel,
    ConnectionClosed,
    DhParams,
    EcParams,
    HandshakeType,
    KeyExchangeKind,
    OtherHandshake,
    ServerHello,
    ServerHelloDone,
    SSLv2Error,
    SSLv2ServerHello,
    TlsCodecError,
)
from scanner.tls.parser import ServerResponseParser, hello_facts, parse_server_key_exchange
from scanner.tls.versions import TlsVersion

__all__ = ["SessionRunner", "drive_plan", "probe_hello"]

# Back-off after a throttled or untestable session (421, disconnect before STARTTLS, timeout):
# wait, then try the same hello again, at most this many times. A scan passes its own
# (``--enum-retry``); this is that option's default.
RETRY_DELAYS = ENUM_RETRY_DELAYS
# Records that answer nothing (application data, CCS, HelloRequest, warning alerts) tolerated before
# the ServerHello: a handful is odd but harmless; an endless stream is a tarpit, not a TLS server.
MAX_IGNORED_EVENTS = 32

SessionRunner = Callable[[HelloRequest], Awaitable[HelloAnswer]]

# After a warning alert, the server closing, resetting or falling silent makes that alert its answer.
_SILENCE_AFTER_WARNING = frozenset({FailureClass.RESET, FailureClass.CLOSED, FailureClass.TLS_CLOSED,
                                    FailureClass.TIMEOUT})

_UNTESTABLE = {
    ProbeStatus.NO_STARTTLS: "STARTTLS no longer advertised",
    ProbeStatus.THROTTLED: "throttled before STARTTLS",
    ProbeStatus.TIMEOUT: "timed out before STARTTLS",
    ProbeStatus.UNREACHABLE: "unreachable",
}


def _sni(server_name: str | None) -> str | None:
    """RFC 6066 §3: SNI carries a host name, never an address (``check IP`` without ``--sni``)."""
    if server_name is None:
        return None
    try:
        ipaddress.ip_address(server_name)
    except ValueError:
        return server_name
    return None


def _hello_bytes(request: HelloRequest, server_name: str | None) -> bytes:
    # RFC 6066 §3: SNI carries a host name, never an address; SSLv3 hellos carry no extensions.
    spec = make_client_hello_spec(
        request.version,
        request.suites,
        os.urandom(32),
        server_name=_sni(server_name) if request.version is not TlsVersion.SSL3 else None,
        supported_versions=(request.version,) if request.supported_versions else None,
        legacy_extensions=True,  # SSLv3: EC extensions, so ECDHE suites can be negotiated (RFC 6101 §5.6.1.2)
        groups=request.offered_groups(),
        fallback_scsv=request.fallback_scsv,
        hygiene=True,  # below TLS 1.3 the ServerHello then shows EMS, ETM, compression, heartbeat, OCSP
        # No key share: a TLS 1.3 server answers with a HelloRetryRequest that already names the
        # suite it picked (RFC 8446 §4.1.4), which is all we need, and costs no key generation.
    )
    return build_client_hello(spec)


def _alert_detail(alert: Alert) -> str:
    return f"alert {alert.level}/{alert.description}"


def _is_warning(event: object) -> bool:
    """A warning alert other than close_notify does not end a TLS <= 1.2 handshake (RFC 5246 §7.2):
    old servers send a warning unrecognized_name before their ServerHello (RFC 6066 §3)."""
    return (isinstance(event, Alert) and event.level == AlertLevel.WARNING
            and event.description != AlertDescription.CLOSE_NOTIFY)


def _answer_from_event(request: HelloRequest, event: object, warning: Alert | None = None) -> HelloAnswer | None:
    if isinstance(event, ServerHello):
        # A version above the one offered is not an acceptance of ours (an SSLv3 hello answered with
        # TLS 1.0 says nothing about SSLv3; a 1.2 hello answered with a 1.3 HelloRetryRequest is bogus).
        if event.negotiated_version > request.version:
            detail = f"server picked version 0x{event.negotiated_version:04x} above the 0x{request.version:04x} offered"
            return HelloAnswer(AnswerKind.PROTOCOL_ERROR, detail=detail)
        if event.cipher_suite not in request.suites:
            return HelloAnswer(AnswerKind.PROTOCOL_ERROR, detail=f"server picked suite 0x{event.cipher_suite:04x}, "
                                                                  "which was not offered")
        tls13 = event.negotiated_version >= TlsVersion.TLS13
        return HelloAnswer(AnswerKind.ACCEPTED, event.negotiated_version, event.cipher_suite,
                           group=event.selected_group, facts=None if tls13 else hello_facts(event))
    if isinstance(event, Alert) and not _is_warning(event):
        return HelloAnswer(AnswerKind.REJECTED_ALERT, detail=_alert_detail(event), alert=event.description)
    if isinstance(event, ConnectionClosed):
        if warning is not None:  # the server's last word was an alert: that is its refusal
            return HelloAnswer(AnswerKind.REJECTED_ALERT, detail=f"{_alert_detail(warning)}, then closed",
                               alert=warning.description)
        return HelloAnswer(AnswerKind.REJECTED_CLOSE, detail="closed without a ServerHello")
    # An SSLv2 answer to a TLS hello: the server does not speak the version we asked about at all.
    if isinstance(event, SSLv2ServerHello):
        return HelloAnswer(AnswerKind.PROTOCOL_ERROR, detail="answered with an SSLv2 SERVER-HELLO")
    if isinstance(event, SSLv2Error):
        return HelloAnswer(AnswerKind.REJECTED_ALERT, detail=f"SSLv2 error 0x{event.error_code:04x}")
    return None  # something else first (unexpected but harmless): keep reading


def _kx_kind(suite_code: int) -> KeyExchangeKind | None:
    known = lookup_suite(suite_code)
    if known is None:
        return None
    return {KeyExchange.DHE: KeyExchangeKind.DHE, KeyExchange.ECDHE: KeyExchangeKind.ECDHE}.get(known.kx)


def _key_exchange_follows(answer: HelloAnswer) -> bool:
    """A TLS <= 1.2 acceptance of an ephemeral suite: its ServerKeyExchange names the group."""
    return (answer.kind is AnswerKind.ACCEPTED and answer.suite is not None and answer.version is not None
            and answer.version < TlsVersion.TLS13 and _kx_kind(answer.suite) is not None)


async def _next_event(parser: ServerResponseParser, stream: ByteStream, deadline: float) -> object:
    event = parser.next_event()
    while isinstance(event, NeedData):
        data = await stream.read(READ_CHUNK, max(0.0, deadline - time.monotonic()))
        if data:
            parser.feed(data)
        else:
            parser.feed_eof()
        event = parser.next_event()
    return event


async def _with_key_exchange(
    answer: HelloAnswer, parser: ServerResponseParser, stream: ByteStream, deadline: float
) -> HelloAnswer:
    """Read on to the ServerKeyExchange (RFC 5246 §7.4.3) for its curve or prime.

    The acceptance is already known and is never lost: a flight that ends, stalls or breaks before the
    ServerKeyExchange leaves the group unknown and says why in the detail. Runs inside the caller's
    timeout: its expiry is the caller's to handle (the hello's answer is then untestable).
    """
    kind = _kx_kind(answer.suite or 0)
    assert kind is not None
    try:
        for _ in range(MAX_IGNORED_EVENTS):
            event = await _next_event(parser, stream, deadline)
            if isinstance(event, OtherHandshake) and event.msg_type == HandshakeType.SERVER_KEY_EXCHANGE:
                params = parse_server_key_exchange(event.body, kind)
                if isinstance(params, DhParams):
                    return dataclasses.replace(answer, dh_prime=params.prime)
                assert isinstance(params, EcParams)
                return dataclasses.replace(answer, group=params.named_curve)
            if isinstance(event, ServerHelloDone | ConnectionClosed | Alert):
                break
    except TlsCodecError as exc:
        return dataclasses.replace(answer, detail=f"no ServerKeyExchange: {type(exc).__name__}: {exc}"[:300])
    except StreamError as exc:
        if exc.failure_class is FailureClass.TIMEOUT:
            raise
        cause = exc.__cause__ or exc  # the socket error itself, as the detail always named it
        return dataclasses.replace(answer, detail=f"no ServerKeyExchange: {type(cause).__name__}: {cause}"[:300])
    return dataclasses.replace(answer, detail="no ServerKeyExchange before the end of the server's flight")


async def probe_hello(
    address: str, port: int, server_name: str | None, config: ProbeConfig, request: HelloRequest,
    open_stream: StreamOpener = open_tcp_stream,
) -> HelloAnswer:
    """One STARTTLS session, one ClientHello, one answer. Never raises except on cancellation."""
    async with RawStarttls(address, port, config, open_stream) as channel:
        if channel.early_alert is not None:  # refused before our hello: that alert is its answer
            return HelloAnswer(AnswerKind.REJECTED_ALERT, detail=channel.early_alert.detail)
        if channel.status is not None:
            detail = channel.failure.detail if channel.failure else _UNTESTABLE.get(channel.status, "")
            return HelloAnswer(AnswerKind.UNTESTABLE, detail=f"{channel.status.value}: {detail}")
        return await _ask(channel.stream, server_name, config, request)


async def _ask(stream: ByteStream, server_name: str | None, config: ProbeConfig, request: HelloRequest) -> HelloAnswer:
    """Send the hello and read the server's answer, within ``tls_timeout`` from the hello being written."""
    parser = ServerResponseParser()
    warning: Alert | None = None  # the last warning alert, kept in case nothing else follows
    try:
        await stream.write(_hello_bytes(request, server_name), None)
        deadline = time.monotonic() + config.tls_timeout
        for _ in range(MAX_IGNORED_EVENTS + 1):
            event = await _next_event(parser, stream, deadline)
            answer = _answer_from_event(request, event, warning)
            if answer is not None:
                if _key_exchange_follows(answer):
                    return await _with_key_exchange(answer, parser, stream, deadline)
                return answer
            if _is_warning(event):
                assert isinstance(event, Alert)
                warning = event
        return HelloAnswer(AnswerKind.PROTOCOL_ERROR,
                           detail=f"{MAX_IGNORED_EVENTS} records without a ServerHello or a fatal alert")
    except TlsCodecError as exc:
        return HelloAnswer(AnswerKind.PROTOCOL_ERROR, detail=f"{type(exc).__name__}: {exc}"[:300])
    except StreamError as exc:  # socket errors, timeouts: classified by the stream, never swallowed
        failure, detail = exc.failure_class, exc.detail
        if warning is not None and failure in _SILENCE_AFTER_WARNING:
            return HelloAnswer(AnswerKind.REJECTED_ALERT, detail=f"{_alert_detail(warning)}, then {failure.value}")
        # A FIN instead of a ServerHello is how some servers refuse an offer. A reset (RST) is not:
        # overload, a middlebox or a crash reset a session whatever it offered, so it is retried
        # like a timeout; read as a refusal it made a supported version look rejected.
        if failure in (FailureClass.CLOSED, FailureClass.TLS_CLOSED):
            return HelloAnswer(AnswerKind.REJECTED_CLOSE, detail=detail)
        return HelloAnswer(AnswerKind.UNTESTABLE, detail=f"{failure.value}: {detail}")
    except Exception as exc:  # a bug: recorded with its traceback, the enumeration goes on
        return HelloAnswer(AnswerKind.UNTESTABLE, detail=f"{FailureClass.INTERNAL.value}: {describe_bug(exc)}")


async def drive_plan(
    plan: Plan,
    run_session: SessionRunner,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    retry_delays: tuple[float, ...] = RETRY_DELAYS,
) -> EnumerationResult:
    """Run ``plan`` to completion, one session per request, retrying untestable sessions after a pause.

    Once one session stayed untestable through every retry, the address is consistently unanswerable
    (it resets or drops every session): later untestable answers are taken as they are, so such an
    address costs one back-off sequence, not one per question. The result's ``sessions`` counts every
    session opened, retries included.
    """
    sessions = 0
    delays = retry_delays
    try:
        request = next(plan)
    except StopIteration as nothing_to_ask:  # a plan may have no question at all (nothing to reconcile)
        empty: EnumerationResult = nothing_to_ask.value
        return dataclasses.replace(empty, sessions=0)
    while True:
        answer = await run_session(request)
        sessions += 1
        for delay in delays:
            if answer.kind is not AnswerKind.UNTESTABLE:
                break
            await sleep(delay)  # back off: a throttling MTA is asking us to slow down
            answer = await run_session(request)
            sessions += 1
        if answer.kind is AnswerKind.UNTESTABLE:
            delays = ()
        try:
            request = plan.send(answer)
        except StopIteration as done:
            result: EnumerationResult = done.value
            return dataclasses.replace(result, sessions=sessions)
