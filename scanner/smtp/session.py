"""One STARTTLS probe of one (address, port): banner, EHLO (HELO fallback), STARTTLS, handshake, QUIT.

Why asyncio streams and not aiosmtplib's ``SMTP`` client: a survey probe must (1) keep every partial
result when a later phase fails (the banner and EHLO of a server whose handshake breaks), (2) see the
bytes a server sends after its 220 to STARTTLS (RFC 3207 §4.2 command-injection check) instead of
having them silently dropped, (3) run the handshake with verification off and still obtain the whole
presented chain, and (4) time each phase separately, with hard caps on what the server may send.
aiosmtplib's client raises on the first non-2xx reply and hides its buffers, so we use the streams
directly with our own sans-IO reply framing (``scanner.smtp.reply``) and reuse aiosmtplib's EHLO
extension parser, the part of it that fits. The probe never sends MAIL, RCPT, VRFY or DATA.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field

from scanner.config import ProbeConfig
from scanner.errors import ProbeFailure, classify, describe_bug
from scanner.smtp.reply import NEED_DATA, EhloInfo, Reply, ReplyError, ReplyReader, parse_ehlo
from scanner.status import FailureClass, Phase, ProbeStatus
from scanner.tls.codec import AlertDescription, AlertLevel, ContentType

__all__ = ["RawStarttls", "SmtpProbeResult", "TlsInfo", "make_probe_context", "probe_smtp", "skipped_result"]

READ_CHUNK = 4096
# After a conclusion, QUIT and the close are a courtesy: never wait long for them.
QUIT_TIMEOUT = 3.0
CLOSE_TIMEOUT = 2.0
# asyncio's own handshake timeout fires this much after ours (see _Dialogue.start_tls).
HANDSHAKE_TIMEOUT_BACKSTOP = 5.0
# Bytes kept of what arrived after the 220 to STARTTLS: enough to recognise a TLS alert record.
_KEPT_UNPROTECTED = 1024


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


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str  # "TLSv1.3", ...
    cipher: str  # OpenSSL name of the negotiated suite
    cipher_bits: int | None
    chain: tuple[bytes, ...]  # DER, as presented, leaf first
    chain_complete: bool  # False when only the leaf could be obtained from this Python


@dataclass(frozen=True, slots=True)
class EarlyAlert:
    """A TLS alert record the server sent right after its 220 to STARTTLS, before our ClientHello."""

    level: int
    description: int

    @property
    def detail(self) -> str:
        known = self.description in set(AlertDescription)
        name = AlertDescription(self.description).name.lower() if known else "unknown"
        level = "fatal" if self.level == AlertLevel.FATAL else "warning"
        return f"{level} alert {name} ({self.description}) sent right after the 220 to STARTTLS, before our ClientHello"


def early_tls_alert(data: bytes) -> EarlyAlert | None:
    """The alert, when bytes received after the 220 to STARTTLS begin with a TLS alert record.

    Such bytes are the server's TLS layer refusing the handshake before it began (an OpenSSL server with
    no protocol version enabled sends protocol_version at once, RFC 8446 §6.2), not unprotected SMTP
    (RFC 3207 §4.2): recorded as the handshake's failure, never as plaintext injection.
    """
    if len(data) < 7 or data[0] != ContentType.ALERT or data[1] != 3 or data[2] > 4:
        return None
    if int.from_bytes(data[3:5], "big") != 2 or data[5] not in (AlertLevel.WARNING, AlertLevel.FATAL):
        return None
    return EarlyAlert(data[5], data[6])


@dataclass(slots=True)
class _Partial:
    """Everything learnt so far; frozen into ``SmtpProbeResult`` whatever phase the probe ends in."""

    banner: Reply | None = None
    ehlo: EhloInfo | None = None
    ehlo_code: int | None = None
    used_helo: bool = False
    starttls_reply: Reply | None = None
    plaintext_after_starttls: bool = False
    early_alert: EarlyAlert | None = None
    tls: TlsInfo | None = None
    timings: dict[Phase, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SmtpProbeResult:
    status: ProbeStatus
    phase: Phase  # phase in which the probe ended (DONE when it went to the end)
    failure_class: FailureClass | None
    detail: str
    banner: str | None
    banner_code: int | None
    ehlo_code: int | None
    ehlo_greeting: str | None
    ehlo_extensions: tuple[str, ...]
    used_helo: bool
    starttls_advertised: bool | None  # None when EHLO never answered
    starttls_code: int | None
    starttls_text: str | None
    plaintext_after_starttls: bool  # RFC 3207 §4.2: server sent bytes after its 220 (injection risk)
    tls: TlsInfo | None
    timings_ms: dict[Phase, float]
    total_ms: float


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


def _reply_failure(phase: Phase, reply: Reply) -> ProbeFailure:
    if reply.code == 421:
        failure = FailureClass.SMTP_421
    elif reply.code >= 500:
        failure = FailureClass.SMTP_5XX
    else:
        failure = FailureClass.SMTP_4XX
    return ProbeFailure(phase, failure, f"{reply.code} {reply.text}"[:500])


class _Dialogue:
    """The socket side of one probe. Each method is one phase and raises ``ProbeFailure``."""

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config
        self._replies = ReplyReader()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._aborted = False

    async def connect(self, address: str, port: int) -> None:
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(address, port, limit=READ_CHUNK * 4)
        except Exception as exc:  # every connect error is classified, none is swallowed
            failure, detail = classify(exc)
            if failure is FailureClass.RESET:
                # ECONNRESET from connect() means the TCP handshake completed and the server reset the
                # connection at once (a RST to our SYN is ECONNREFUSED). Whether the kernel reports it
                # to connect() or to the first read is a race, so record it where it deterministically
                # belongs: the server dropped us while we waited for its banner.
                raise ProbeFailure(Phase.BANNER, failure, "connection reset by server right after accept") from exc
            raise ProbeFailure(Phase.CONNECT, failure, detail) from exc

    async def read_reply(self, phase: Phase, timeout: float) -> Reply:
        assert self._reader is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    reply = self._replies.next_reply()
                    if reply is not NEED_DATA:
                        assert isinstance(reply, Reply)
                        return reply
                    data = await self._reader.read(READ_CHUNK)
                    if not data:
                        raise ProbeFailure(phase, FailureClass.CLOSED, "connection closed by server")
                    self._replies.feed(data)
        except ReplyError as exc:
            raise ProbeFailure(phase, exc.failure_class, exc.detail) from exc
        except ProbeFailure:
            raise
        except Exception as exc:
            failure, detail = classify(exc)
            raise ProbeFailure(phase, failure, detail) from exc

    async def command(self, phase: Phase, line: str) -> Reply:
        assert self._writer is not None
        try:
            self._writer.write(line.encode("ascii") + b"\r\n")
            await self._writer.drain()
        except Exception as exc:
            failure, detail = classify(exc)
            raise ProbeFailure(phase, failure, detail) from exc
        return await self.read_reply(phase, self.config.command_timeout)

    def discard_unprotected(self) -> bytes:
        """Drop bytes received after the STARTTLS reply; return them (their first kilobyte)."""
        dropped = bytes(self._replies.buffered()[:_KEPT_UNPROTECTED])
        self._replies.discard_buffer()
        # We read at most READ_CHUNK bytes at a time, so a longer injection is still partly in the
        # StreamReader's own buffer. Left there, it would be read after the handshake as if it had come
        # over TLS, and a raw ClientHello probe would parse it as the server's answer. asyncio has no
        # public way to empty that buffer; ``_buffer`` (a bytearray) has been stable since Python 3.4.
        stream_buffer = getattr(self._reader, "_buffer", None)
        if isinstance(stream_buffer, bytearray) and stream_buffer:
            dropped = (dropped + bytes(stream_buffer))[:_KEPT_UNPROTECTED]
            stream_buffer.clear()
        return dropped

    @property
    def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The raw streams, for a caller that speaks TLS records itself after STARTTLS."""
        assert self._reader is not None and self._writer is not None
        return self._reader, self._writer

    async def start_tls(self, context: ssl.SSLContext, server_name: str | None) -> TlsInfo:
        assert self._writer is not None
        try:
            # Our own deadline first: when asyncio's ssl_handshake_timeout fires, asyncio and uvloop
            # abort with ConnectionAbortedError, which would read as a reset (a refusal, "no working
            # TLS") instead of the timeout (a tarpit, untestable) it is. Theirs stays as a backstop.
            async with asyncio.timeout(self.config.tls_timeout):
                await self._writer.start_tls(
                    context, server_hostname=server_name,
                    ssl_handshake_timeout=self.config.tls_timeout + HANDSHAKE_TIMEOUT_BACKSTOP,
                )
        except BaseException as exc:
            # A failed start_tls leaves the stream's protocol detached from the transport, so
            # wait_closed() would never return: abort now and let close() skip the wait.
            self._abort()
            if not isinstance(exc, Exception):
                raise
            failure, detail = classify(exc)
            raise ProbeFailure(Phase.TLS_HANDSHAKE, failure, detail) from exc
        ssl_object = self._writer.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            raise ProbeFailure(Phase.TLS_HANDSHAKE, FailureClass.INTERNAL, "no SSL object after handshake")
        return _tls_info(ssl_object)

    async def quit(self) -> None:
        """Courtesy QUIT; its outcome never changes the probe's conclusion."""
        if self._writer is None or self._writer.is_closing():
            return
        try:
            async with asyncio.timeout(QUIT_TIMEOUT):
                self._writer.write(b"QUIT\r\n")
                await self._writer.drain()
                await self.read_reply(Phase.QUIT, QUIT_TIMEOUT)
        except (ProbeFailure, TimeoutError, OSError):
            return  # the conclusion is already made; a server that drops us at QUIT is fine

    def _abort(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        self._aborted = True

    async def close(self) -> None:
        if self._writer is None or self._aborted:
            return
        self._writer.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._writer.wait_closed()
        except (TimeoutError, OSError):
            self._writer.transport.abort()  # a TLS peer that never answers close_notify


def _tls_info(ssl_object: ssl.SSLObject) -> TlsInfo:
    name, _protocol, bits = ssl_object.cipher() or ("", "", None)
    chain, complete = _presented_chain(ssl_object)
    return TlsInfo(ssl_object.version() or "", name, bits, chain, complete)


def _presented_chain(ssl_object: ssl.SSLObject) -> tuple[tuple[bytes, ...], bool]:
    """The chain exactly as the server sent it.

    CPython has had ``get_unverified_chain`` on the internal ``_sslobj`` since 3.10 and made it public
    in 3.13; on an interpreter without it we fall back to the leaf alone and say so in the row.
    """
    public = getattr(ssl_object, "get_unverified_chain", None)
    internal = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    getter = public or internal
    if getter is not None:
        certs = getter() or []
        der = tuple(
            c if isinstance(c, bytes) else bytes(c.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
            for c in certs
        )
        if der:
            return der, True
    leaf = ssl_object.getpeercert(binary_form=True)
    return ((leaf,) if leaf else ()), False


async def probe_smtp(
    address: str,
    port: int,
    server_name: str | None,
    config: ProbeConfig,
    context: ssl.SSLContext,
) -> SmtpProbeResult:
    """Probe one address. Never raises (except cancellation): every outcome is a result.

    ``server_name`` is sent as SNI (the MX host name), so that a multi-tenant MTA presents the
    certificate it would present to a real sender.
    """
    partial = _Partial()
    dialogue = _Dialogue(config)
    started = time.perf_counter()
    phase_box = [Phase.CONNECT]
    try:
        async with asyncio.timeout(config.probe_deadline):
            await _run(dialogue, partial, address, port, server_name, context, phase_box)
        return _result(partial, ProbeStatus.STARTTLS_OK if partial.tls else ProbeStatus.NO_STARTTLS,
                       Phase.DONE, None, "", started)
    except ProbeFailure as failure:
        return _result(partial, _status_for(failure.phase, failure.failure_class), failure.phase,
                       failure.failure_class, failure.detail, started)
    except TimeoutError:
        detail = f"probe exceeded its {config.probe_deadline:.0f}s deadline"
        return _result(partial, ProbeStatus.TIMEOUT, phase_box[0], FailureClass.TIMEOUT, detail, started)
    except Exception as exc:  # a bug: recorded with its traceback, the scan goes on
        return _result(partial, ProbeStatus.INTERNAL_ERROR, phase_box[0], FailureClass.INTERNAL,
                       describe_bug(exc), started)
    finally:
        await dialogue.close()


async def _timed(partial: _Partial, phase_box: list[Phase], phase: Phase,
                 work: Coroutine[object, object, None]) -> None:
    phase_box[0] = phase
    t0 = time.perf_counter()
    try:
        await work
    finally:
        partial.timings[phase] = (time.perf_counter() - t0) * 1000


async def negotiate_starttls(
    dialogue: _Dialogue, partial: _Partial, address: str, port: int, phase_box: list[Phase]
) -> bool:
    """Connect, read the banner, EHLO, and issue STARTTLS. True when the server answered 220.

    False means STARTTLS was not advertised (QUIT already sent). Every other outcome raises
    ``ProbeFailure``. Shared by the observation probe and the raw-ClientHello probes, so both
    speak exactly the same SMTP.
    """
    config = dialogue.config
    await _timed(partial, phase_box, Phase.CONNECT, dialogue.connect(address, port))

    async def banner() -> None:
        partial.banner = await dialogue.read_reply(Phase.BANNER, config.banner_timeout)
        if partial.banner.code != 220:
            raise _reply_failure(Phase.BANNER, partial.banner)

    await _timed(partial, phase_box, Phase.BANNER, banner())
    await _timed(partial, phase_box, Phase.EHLO, _ehlo(dialogue, partial, config.ehlo_name))
    if partial.ehlo is None or not partial.ehlo.starttls:
        await dialogue.quit()
        return False

    async def starttls() -> None:
        partial.starttls_reply = await dialogue.command(Phase.STARTTLS, "STARTTLS")
        if partial.starttls_reply.code != 220:
            raise _reply_failure(Phase.STARTTLS, partial.starttls_reply)

    await _timed(partial, phase_box, Phase.STARTTLS, starttls())
    # RFC 3207 §4.2: anything already received after the 220 was not protected by TLS; a server
    # (or a man in the middle) that sends it is vulnerable to command injection. Discard, flag;
    # unless it is a TLS alert: the server's TLS layer answering early, not plaintext.
    unprotected = dialogue.discard_unprotected()
    partial.early_alert = early_tls_alert(unprotected)
    partial.plaintext_after_starttls = bool(unprotected) and partial.early_alert is None
    return True


async def _run(
    dialogue: _Dialogue,
    partial: _Partial,
    address: str,
    port: int,
    server_name: str | None,
    context: ssl.SSLContext,
    phase_box: list[Phase],
) -> None:
    if not await negotiate_starttls(dialogue, partial, address, port, phase_box):
        return
    if partial.early_alert is not None:  # the server refused the handshake before it began
        raise ProbeFailure(Phase.TLS_HANDSHAKE, FailureClass.TLS_ALERT, partial.early_alert.detail)

    async def handshake() -> None:
        partial.tls = await dialogue.start_tls(context, server_name)

    await _timed(partial, phase_box, Phase.TLS_HANDSHAKE, handshake())
    await dialogue.quit()


async def _ehlo(dialogue: _Dialogue, partial: _Partial, ehlo_name: str) -> None:
    reply = await dialogue.command(Phase.EHLO, f"EHLO {ehlo_name}")
    partial.ehlo_code = reply.code
    if reply.code == 250:
        partial.ehlo = parse_ehlo(reply)
        return
    if reply.code == 421 or reply.code < 500:
        raise _reply_failure(Phase.EHLO, reply)
    # RFC 5321 §3.2: a server that rejects EHLO may still speak plain SMTP. HELO has no extensions,
    # so STARTTLS is unavailable: the probe still answers the question ("no STARTTLS").
    partial.used_helo = True
    helo = await dialogue.command(Phase.HELO, f"HELO {ehlo_name}")
    if helo.code != 250:
        raise _reply_failure(Phase.HELO, helo)


def _result(
    partial: _Partial,
    status: ProbeStatus,
    phase: Phase,
    failure: FailureClass | None,
    detail: str,
    started: float,
) -> SmtpProbeResult:
    return SmtpProbeResult(
        status=status,
        phase=phase,
        failure_class=failure,
        detail=detail,
        banner=partial.banner.full_text if partial.banner else None,
        banner_code=partial.banner.code if partial.banner else None,
        ehlo_code=partial.ehlo_code,
        ehlo_greeting=partial.ehlo.greeting if partial.ehlo else None,
        ehlo_extensions=partial.ehlo.extensions if partial.ehlo else (),
        used_helo=partial.used_helo,
        starttls_advertised=partial.ehlo.starttls if partial.ehlo else (False if partial.used_helo else None),
        starttls_code=partial.starttls_reply.code if partial.starttls_reply else None,
        starttls_text=partial.starttls_reply.text if partial.starttls_reply else None,
        plaintext_after_starttls=partial.plaintext_after_starttls,
        tls=partial.tls,
        timings_ms=dict(partial.timings),
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
    return _result(_Partial(), status, Phase.ADDRESS, reason, detail, time.perf_counter())


class RawStarttls:
    """Banner, EHLO and STARTTLS, then the raw streams for a caller that speaks TLS records itself.

    Used by the ClientHello probes of ``scanner.tls``: ``async with RawStarttls(...) as channel`` and
    then ``channel.status``: None when the server answered 220 to STARTTLS (``channel.streams`` is
    ready), otherwise the probe status explaining why not (``NO_STARTTLS``, ``THROTTLED``, ...) with
    ``channel.failure`` holding the phase, class and detail.
    """

    def __init__(self, address: str, port: int, config: ProbeConfig) -> None:
        self._address = address
        self._port = port
        self._dialogue = _Dialogue(config)
        self._partial = _Partial()
        self.status: ProbeStatus | None = None
        self.failure: ProbeFailure | None = None

    @property
    def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return self._dialogue.streams

    @property
    def plaintext_after_starttls(self) -> bool:
        return self._partial.plaintext_after_starttls

    @property
    def early_alert(self) -> EarlyAlert | None:
        return self._partial.early_alert

    async def __aenter__(self) -> RawStarttls:
        try:
            if not await negotiate_starttls(self._dialogue, self._partial, self._address, self._port, [Phase.CONNECT]):
                self.status = ProbeStatus.NO_STARTTLS
        except ProbeFailure as failure:
            self.failure = failure
            self.status = _status_for(failure.phase, failure.failure_class)
        except BaseException:
            await self._dialogue.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._dialogue.close()
