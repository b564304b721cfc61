"""One STARTTLS probe of one (address, port): banner, EHLO (HELO fallback), STARTTLS, handshake, QUIT.

This module is the driver: a thin loop that moves bytes between a ``ByteStream`` (``scanner.net.stream``,
the transport seam) and the pure ``SmtpDialogue`` (``scanner.smtp.dialogue``, which makes every SMTP
decision), keeps the clock and turns the outcome into a ``SmtpProbeResult``.

Why not aiosmtplib's ``SMTP`` client: a survey probe must (1) keep every partial result when a later
phase fails (the banner and EHLO of a server whose handshake breaks), (2) see the bytes a server sends
after its 220 to STARTTLS (RFC 3207 §4.2 command-injection check) instead of having them silently
dropped, (3) run the handshake with verification off and still obtain the whole presented chain, and
(4) time each phase separately, with hard caps on what the server may send. aiosmtplib's client raises on
the first non-2xx reply and hides its buffers; only its reading of EHLO extension lines is kept
(``scanner.smtp.reply``, checked against it by a test). The probe never sends MAIL, RCPT, VRFY or DATA.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field

from scanner.config import ProbeConfig
from scanner.errors import ProbeFailure, describe_bug
from scanner.net.stream import READ_CHUNK, ByteStream, StreamError, StreamOpener, open_tcp_stream
from scanner.records import SmtpProbeResult, TlsInfo
from scanner.smtp.dialogue import START_TLS, TAKE_BUFFERED, Action, Done, EarlyAlert, Failed, Send, SmtpDialogue
from scanner.status import FailureClass, Phase, ProbeStatus

__all__ = ["RawStarttls", "SmtpProbeResult", "make_probe_context", "probe_smtp", "skipped_result"]

# After a conclusion, QUIT is a courtesy: never wait long for it.
QUIT_TIMEOUT = 3.0


def make_probe_context() -> ssl.SSLContext:
    """Client context for the observation handshake.

    Verification is off on purpose: we want the chain of every server, trusted or not, and judge it
    ourselves (``scanner.certs``). Ciphers and versions are as wide as this OpenSSL allows
    (SECLEVEL 0 re-enables TLS 1.0/1.1 and small keys), because we record what a lenient
    opportunistic sender would negotiate, not what a strict one would refuse.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    # OpenSSL 3 refuses servers without RFC 5746 secure renegotiation by default; old MTAs lack it.
    # ssl.OP_LEGACY_SERVER_CONNECT only exists from Python 3.12; 0x4 is its value (SSL_OP_...).
    context.options |= getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)
    return context


@dataclass(slots=True)
class _PhaseClock:
    """Times each phase. HELO counts as part of EHLO, QUIT is not timed, and the handshake only while the
    driver runs it. ``last`` is the phase a probe deadline is charged to."""

    timings: dict[Phase, float] = field(default_factory=dict)
    last: Phase = Phase.CONNECT
    _current: Phase | None = None
    _since: float = 0.0

    def enter(self, phase: Phase | None) -> None:
        if phase is self._current:
            return
        self.stop()
        if phase is not None:
            self._current, self._since, self.last = phase, time.perf_counter(), phase

    def stop(self) -> None:
        if self._current is not None:
            self.timings[self._current] = (time.perf_counter() - self._since) * 1000
            self._current = None


# The clock bucket of each dialogue phase (see _PhaseClock).
_TIMED = {Phase.BANNER: Phase.BANNER, Phase.EHLO: Phase.EHLO, Phase.HELO: Phase.EHLO, Phase.STARTTLS: Phase.STARTTLS}


def _status_for(phase: Phase, failure: FailureClass) -> ProbeStatus:
    """The probe's conclusion from where and how it failed. Timeouts and 421s never mean "no TLS"."""
    if failure is FailureClass.TIMEOUT:
        return ProbeStatus.TIMEOUT
    if failure is FailureClass.SMTP_421:
        return ProbeStatus.THROTTLED
    if failure is FailureClass.INTERNAL:
        return ProbeStatus.INTERNAL_ERROR
    if phase is Phase.CONNECT:
        return ProbeStatus.UNREACHABLE
    if phase is Phase.TLS_HANDSHAKE:
        return ProbeStatus.TLS_HANDSHAKE_FAILED
    if failure in (FailureClass.CLOSED, FailureClass.RESET):
        # Dropped before the STARTTLS question was answered: a block or throttle, untestable.
        return ProbeStatus.THROTTLED
    if failure in (FailureClass.SMTP_PROTOCOL_ERROR, FailureClass.OVERSIZED_REPLY):
        return ProbeStatus.PROTOCOL_ERROR
    if phase is Phase.STARTTLS:
        return ProbeStatus.STARTTLS_REJECTED
    if failure in (FailureClass.SMTP_4XX, FailureClass.SMTP_5XX):
        return ProbeStatus.SMTP_REJECTED
    return ProbeStatus.UNREACHABLE


def _reply_timeout(config: ProbeConfig, phase: Phase) -> float:
    return config.banner_timeout if phase is Phase.BANNER else config.command_timeout


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


async def _connect(open_stream: StreamOpener, address: str, port: int, config: ProbeConfig,
                   clock: _PhaseClock) -> ByteStream:
    clock.enter(Phase.CONNECT)
    try:
        return await open_stream(address, port, config.connect_timeout)
    except StreamError as exc:
        if exc.failure_class is FailureClass.RESET:
            # ECONNRESET from connect() means the TCP handshake completed and the server reset the
            # connection at once (a RST to our SYN is ECONNREFUSED). Whether the kernel reports it
            # to connect() or to the first read is a race, so record it where it deterministically
            # belongs: the server dropped us while we waited for its banner.
            detail = "connection reset by server right after accept"
            raise ProbeFailure(Phase.BANNER, exc.failure_class, detail) from exc
        raise ProbeFailure(Phase.CONNECT, exc.failure_class, exc.detail) from exc


async def _converse(stream: ByteStream, dialogue: SmtpDialogue, config: ProbeConfig, clock: _PhaseClock) -> Action:
    """Run the dialogue until it asks for TLS (``START_TLS``) or ends (``Done``); ``Failed`` raises.

    Each reply has its own timeout, from the moment its command was written (the banner's from connect).
    """
    deadline: float | None = None
    while True:
        action = dialogue.next_action()
        clock.enter(_TIMED.get(dialogue.phase))
        if isinstance(action, Failed):
            raise ProbeFailure(action.phase, action.failure_class, action.detail)
        if isinstance(action, Done) or action is START_TLS:
            return action
        if action is TAKE_BUFFERED:
            dialogue.receive_unprotected(stream.take_buffered())
            continue
        if dialogue.phase is Phase.QUIT:
            return await _quit(stream, dialogue, action)
        try:
            if isinstance(action, Send):
                await stream.write(action.data, None)
                deadline = None
            else:  # NEED_DATA
                if deadline is None:
                    deadline = time.monotonic() + _reply_timeout(config, dialogue.phase)
                dialogue.receive_data(await stream.read(READ_CHUNK, _remaining(deadline)))
        except StreamError as exc:
            raise ProbeFailure(dialogue.phase, exc.failure_class, exc.detail) from exc


async def _quit(stream: ByteStream, dialogue: SmtpDialogue, action: Action) -> Done:
    """Courtesy QUIT, bounded as a whole; its outcome never changes the probe's conclusion."""
    deadline = time.monotonic() + QUIT_TIMEOUT
    try:
        while not isinstance(action, Done | Failed):
            if isinstance(action, Send):
                await stream.write(action.data, _remaining(deadline))
            else:
                dialogue.receive_data(await stream.read(READ_CHUNK, _remaining(deadline)))
            action = dialogue.next_action()
    except StreamError:
        pass  # the conclusion is already made; a server that drops us at QUIT is fine
    return Done()


async def _handshake(stream: ByteStream, context: ssl.SSLContext, server_name: str | None, config: ProbeConfig,
                     clock: _PhaseClock) -> TlsInfo:
    clock.enter(Phase.TLS_HANDSHAKE)
    try:
        return await stream.start_tls(context, server_name, config.tls_timeout)
    except StreamError as exc:
        raise ProbeFailure(Phase.TLS_HANDSHAKE, exc.failure_class, exc.detail) from exc


async def probe_smtp(
    address: str,
    port: int,
    server_name: str | None,
    config: ProbeConfig,
    context: ssl.SSLContext,
    open_stream: StreamOpener = open_tcp_stream,
) -> SmtpProbeResult:
    """Probe one address. Never raises (except cancellation): every outcome is a result.

    ``server_name`` is sent as SNI (the MX host name), so that a multi-tenant MTA presents the
    certificate it would present to a real sender. ``open_stream`` is the transport seam (tests script it).
    """
    dialogue = SmtpDialogue(config.ehlo_name)
    clock = _PhaseClock()
    started = time.perf_counter()
    stream: ByteStream | None = None
    tls: TlsInfo | None = None
    try:
        async with asyncio.timeout(config.probe_deadline):
            stream = await _connect(open_stream, address, port, config, clock)
            if await _converse(stream, dialogue, config, clock) is START_TLS:
                tls = await _handshake(stream, context, server_name, config, clock)
                dialogue.tls_established()
                await _converse(stream, dialogue, config, clock)  # QUIT, over TLS
        status = ProbeStatus.STARTTLS_OK if tls else ProbeStatus.NO_STARTTLS
        return _result(dialogue, tls, status, Phase.DONE, None, "", clock, started)
    except ProbeFailure as failure:
        return _result(dialogue, tls, _status_for(failure.phase, failure.failure_class), failure.phase,
                       failure.failure_class, failure.detail, clock, started)
    except TimeoutError:
        detail = f"probe exceeded its {config.probe_deadline:.0f}s deadline"
        return _result(dialogue, tls, ProbeStatus.TIMEOUT, clock.last, FailureClass.TIMEOUT, detail, clock, started)
    except Exception as exc:  # a bug: recorded with its traceback, the scan goes on
        return _result(dialogue, tls, ProbeStatus.INTERNAL_ERROR, clock.last, FailureClass.INTERNAL,
                       describe_bug(exc), clock, started)
    finally:
        if stream is not None:
            await stream.close()


def _result(
    dialogue: SmtpDialogue | None,
    tls: TlsInfo | None,
    status: ProbeStatus,
    phase: Phase,
    failure: FailureClass | None,
    detail: str,
    clock: _PhaseClock,
    started: float,
) -> SmtpProbeResult:
    clock.stop()
    banner = dialogue.banner if dialogue else None
    ehlo = dialogue.ehlo if dialogue else None
    used_helo = dialogue.used_helo if dialogue else False
    starttls_reply = dialogue.starttls_reply if dialogue else None
    return SmtpProbeResult(
        status=status,
        phase=phase,
        failure_class=failure,
        detail=detail,
        banner=banner.full_text if banner else None,
        banner_code=banner.code if banner else None,
        ehlo_code=dialogue.ehlo_code if dialogue else None,
        ehlo_greeting=ehlo.greeting if ehlo else None,
        ehlo_extensions=ehlo.extensions if ehlo else (),
        used_helo=used_helo,
        starttls_advertised=ehlo.starttls if ehlo else (False if used_helo else None),
        starttls_code=starttls_reply.code if starttls_reply else None,
        starttls_text=starttls_reply.text if starttls_reply else None,
        plaintext_after_starttls=dialogue.plaintext_after_starttls if dialogue else False,
        tls=tls,
        timings_ms=dict(clock.timings),
        total_ms=(time.perf_counter() - started) * 1000,
    )


_SKIP_STATUS = {
    FailureClass.RESERVED_ADDRESS: ProbeStatus.SKIPPED_RESERVED_ADDRESS,
    FailureClass.EXCLUDED: ProbeStatus.SKIPPED_EXCLUDED,
    FailureClass.FAMILY_UNREACHABLE: ProbeStatus.SKIPPED_FAMILY_UNREACHABLE,
}


def skipped_result(reason: FailureClass, detail: str = "") -> SmtpProbeResult:
    """The result of a probe that sent nothing: refused address, opt-out, or a bug before connecting."""
    status = _SKIP_STATUS.get(reason, ProbeStatus.INTERNAL_ERROR)
    if not detail:
        detail = {
            ProbeStatus.SKIPPED_RESERVED_ADDRESS: "loopback/private/reserved address (use --allow-private in labs)",
            ProbeStatus.SKIPPED_EXCLUDED: "address is on the exclude list",
            ProbeStatus.SKIPPED_FAMILY_UNREACHABLE: "address family not reachable from this vantage point",
        }.get(status, "")
    return _result(None, None, status, Phase.ADDRESS, reason, detail, _PhaseClock(), time.perf_counter())


class RawStarttls:
    """Banner, EHLO and STARTTLS (the same dialogue and stream as ``probe_smtp``), then the stream for a
    caller that speaks TLS records itself.

    Used by the ClientHello probes of ``scanner.tls``: ``async with RawStarttls(...) as channel`` and
    then ``channel.status``: None when the server answered 220 to STARTTLS (``channel.stream`` is
    ready), otherwise the probe status explaining why not (``NO_STARTTLS``, ``THROTTLED``, ...) with
    ``channel.failure`` holding the phase, class and detail. ``channel.early_alert`` is set when the
    server's TLS layer refused before any ClientHello (then the status says the handshake failed).
    """

    def __init__(self, address: str, port: int, config: ProbeConfig,
                 open_stream: StreamOpener = open_tcp_stream) -> None:
        self._address = address
        self._port = port
        self._config = config
        self._open_stream = open_stream
        self._dialogue = SmtpDialogue(config.ehlo_name)
        self._stream: ByteStream | None = None
        self.status: ProbeStatus | None = None
        self.failure: ProbeFailure | None = None

    @property
    def stream(self) -> ByteStream:
        assert self._stream is not None and self.status is None
        return self._stream

    @property
    def plaintext_after_starttls(self) -> bool:
        return self._dialogue.plaintext_after_starttls

    @property
    def early_alert(self) -> EarlyAlert | None:
        return self._dialogue.early_alert

    async def __aenter__(self) -> RawStarttls:
        clock = _PhaseClock()
        try:
            self._stream = await _connect(self._open_stream, self._address, self._port, self._config, clock)
            if isinstance(await _converse(self._stream, self._dialogue, self._config, clock), Done):
                self.status = ProbeStatus.NO_STARTTLS
        except ProbeFailure as failure:
            self.failure = failure
            self.status = _status_for(failure.phase, failure.failure_class)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
