"""The only TLS-record I/O: send one crafted ClientHello after STARTTLS and read the server's answer.

A probe needs the ServerHello (or HelloRetryRequest), an alert, or the close — never a finished
handshake — so it works for protocol versions and suites that this machine's OpenSSL refuses to speak
(SSLv3, EXPORT, RC4, ...). Bytes go through the pure codec (``scanner.tls.codec``); this module only
moves them and keeps the clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable

from scanner.config import ProbeConfig
from scanner.errors import classify
from scanner.smtp.session import RawStarttls
from scanner.status import FailureClass, ProbeStatus
from scanner.tls.codec import (
    Alert,
    ConnectionClosed,
    NeedData,
    ServerHello,
    ServerResponseParser,
    TlsCodecError,
    TlsVersion,
    build_client_hello,
    make_client_hello_spec,
)
from scanner.tls.enumeration import AnswerKind, EnumerationResult, HelloAnswer, HelloRequest, Plan

__all__ = ["SessionRunner", "drive_plan", "probe_hello"]

READ_CHUNK = 4096
# Back-off after a throttled or untestable session (421, disconnect before STARTTLS, timeout):
# wait, then try the same hello again, at most this many times.
RETRY_DELAYS = (2.0, 8.0)

SessionRunner = Callable[[HelloRequest], Awaitable[HelloAnswer]]

_UNTESTABLE = {
    ProbeStatus.NO_STARTTLS: "STARTTLS no longer advertised",
    ProbeStatus.THROTTLED: "throttled before STARTTLS",
    ProbeStatus.TIMEOUT: "timed out before STARTTLS",
    ProbeStatus.UNREACHABLE: "unreachable",
}


def _hello_bytes(request: HelloRequest, server_name: str | None) -> bytes:
    # RFC 6066 §3: SNI carries a host name, never an address; SSLv3 hellos carry no extensions.
    spec = make_client_hello_spec(
        request.version,
        request.suites,
        os.urandom(32),
        server_name=server_name if request.version is not TlsVersion.SSL3 else None,
        legacy_extensions=True,  # SSLv3: EC extensions, so ECDHE suites can be negotiated (RFC 6101 §5.6.1.2)
        # No key share: a TLS 1.3 server answers with a HelloRetryRequest that already names the
        # suite it picked (RFC 8446 §4.1.4), which is all we need, and costs no key generation.
    )
    return build_client_hello(spec)


def _answer_from_event(request: HelloRequest, event: object) -> HelloAnswer | None:
    if isinstance(event, ServerHello):
        if event.cipher_suite not in request.suites:
            return HelloAnswer(AnswerKind.PROTOCOL_ERROR, detail=f"server picked suite 0x{event.cipher_suite:04x}, "
                                                                  "which was not offered")
        return HelloAnswer(AnswerKind.ACCEPTED, event.negotiated_version, event.cipher_suite)
    if isinstance(event, Alert):
        return HelloAnswer(AnswerKind.REJECTED_ALERT, detail=f"alert {event.level}/{event.description}")
    if isinstance(event, ConnectionClosed):
        return HelloAnswer(AnswerKind.REJECTED_CLOSE, detail="closed without a ServerHello")
    return None  # something else first (unexpected but harmless): keep reading


async def probe_hello(
    address: str, port: int, server_name: str | None, config: ProbeConfig, request: HelloRequest
) -> HelloAnswer:
    """One STARTTLS session, one ClientHello, one answer. Never raises except on cancellation."""
    async with RawStarttls(address, port, config) as channel:
        if channel.status is not None:
            detail = channel.failure.detail if channel.failure else _UNTESTABLE.get(channel.status, "")
            return HelloAnswer(AnswerKind.UNTESTABLE, detail=f"{channel.status.value}: {detail}")
        reader, writer = channel.streams
        parser = ServerResponseParser()
        try:
            writer.write(_hello_bytes(request, server_name))
            await writer.drain()
            async with asyncio.timeout(config.tls_timeout):
                while True:
                    event = parser.next_event()
                    if isinstance(event, NeedData):
                        data = await reader.read(READ_CHUNK)
                        if data:
                            parser.feed(data)
                        else:
                            parser.feed_eof()
                        continue
                    answer = _answer_from_event(request, event)
                    if answer is not None:
                        return answer
        except TlsCodecError as exc:
            return HelloAnswer(AnswerKind.PROTOCOL_ERROR, detail=f"{type(exc).__name__}: {exc}"[:300])
        except Exception as exc:  # socket errors, timeouts: classified, never swallowed
            failure, detail = classify(exc)
            if failure in (FailureClass.RESET, FailureClass.CLOSED):
                return HelloAnswer(AnswerKind.REJECTED_CLOSE, detail=detail)
            return HelloAnswer(AnswerKind.UNTESTABLE, detail=f"{failure.value}: {detail}")


async def drive_plan(
    plan: Plan,
    run_session: SessionRunner,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    retry_delays: tuple[float, ...] = RETRY_DELAYS,
) -> EnumerationResult:
    """Run ``plan`` to completion, one session per request, retrying untestable sessions after a pause.

    The result's ``sessions`` counts every session opened, retries included.
    """
    sessions = 0
    request = next(plan)
    while True:
        answer = await run_session(request)
        sessions += 1
        for delay in retry_delays:
            if answer.kind is not AnswerKind.UNTESTABLE:
                break
            await sleep(delay)  # back off: a throttling MTA is asking us to slow down
            answer = await run_session(request)
            sessions += 1
        try:
            request = plan.send(answer)
        except StopIteration as done:
            result: EnumerationResult = done.value
            return dataclasses.replace(result, sessions=sessions)
