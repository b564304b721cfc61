"""The transport seam under the SMTP dialogue and the crafted-hello probes: a small byte-stream interface
and its one asyncio adapter (model: httpcore's ``_backends/base.py`` ``AsyncNetworkStream``).

``ByteStream`` is what the drivers (``scanner.smtp.session``, ``scanner.tls.probe``) talk to: read,
write, start TLS, take what is buffered, close. ``AsyncioStream`` is the only code that calls
``asyncio.open_connection``, reaches into the ``StreamReader`` buffer (the STARTTLS workaround) or sees a
foreign exception: every ``OSError``, ``ssl.SSLError`` and ``TimeoutError`` of a stream operation leaves
this module as a ``StreamError`` carrying our ``FailureClass`` and a detail (``classify``, the one place
where foreign exceptions become a failure class). Cancellation is never converted: it propagates, after
the socket is closed. Tests swap in a scripted stream (``worlds/scripted_stream.py``) and drive the same
code.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from scanner.errors import describe_bug
from scanner.records import TlsInfo
from scanner.status import FailureClass

__all__ = [
    "CLOSE_TIMEOUT",
    "HANDSHAKE_TIMEOUT_BACKSTOP",
    "READ_CHUNK",
    "AsyncioStream",
    "ByteStream",
    "StreamError",
    "StreamOpener",
    "classify",
    "open_tcp_stream",
]

READ_CHUNK: Final = 4096
# A close is a courtesy once the conclusion is made: never wait long for it.
CLOSE_TIMEOUT: Final = 2.0
# asyncio's own handshake timeout fires this much after ours (see AsyncioStream.start_tls).
HANDSHAKE_TIMEOUT_BACKSTOP: Final = 5.0

_NO_ROUTE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})
# OpenSSL reasons that mean "what came back is not (valid) TLS", as opposed to a refusal by alert.
_TLS_PROTOCOL_REASONS = (
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_TOO_LARGE",
    "UNEXPECTED_MESSAGE",
    "UNEXPECTED_RECORD",
    "BAD_PACKET",
    "LENGTH_MISMATCH",
    "BAD_LENGTH",
    "DECODE_ERROR",
    "WRONG_CIPHER_RETURNED",
    "UNKNOWN_CIPHER_RETURNED",  # the ServerHello names a suite OpenSSL does not know (so was not offered)
    "UNSUPPORTED_PROTOCOL",
)



class StreamError(Exception):
    """A stream operation failed; the foreign exception is already classified (and chained as cause)."""

    def __init__(self, failure_class: FailureClass, detail: str) -> None:
        super().__init__(f"{failure_class.value}: {detail}")
        self.failure_class = failure_class
        self.detail = detail


class ByteStream(Protocol):
    """One connection. Every method raises ``StreamError`` (never a foreign exception) on failure.

    ``timeout`` is in seconds (None: no limit of the stream's own; the caller's deadline still applies).
    """

    async def read(self, max_bytes: int, timeout: float | None) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` when the peer closed its side (EOF)."""
        ...

    async def write(self, data: bytes, timeout: float | None) -> None: ...

    async def start_tls(self, context: ssl.SSLContext, server_name: str | None, timeout: float) -> TlsInfo:
        """Upgrade in place (RFC 3207 §4). A failure leaves the stream aborted."""
        ...

    def take_buffered(self) -> bytes:
        """Remove and return the bytes received but not yet read (RFC 3207 §4.2: the bytes a server sent
        after its 220 to STARTTLS must not be read as if they had come over TLS)."""
        ...

    async def close(self) -> None:
        """Close, waiting briefly for the peer; abort if it does not answer. Never raises ``StreamError``."""
        ...


StreamOpener = Callable[[str, int, float], Awaitable[ByteStream]]


async def open_tcp_stream(address: str, port: int, timeout: float) -> ByteStream:
    """Connect; the default ``StreamOpener``. Raises ``StreamError`` (REFUSED, TIMEOUT, NO_ROUTE, RESET, ...)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port, limit=READ_CHUNK * 4)
    except Exception as exc:  # every connect error is classified, none is swallowed
        raise _stream_error(exc) from exc
    return AsyncioStream(reader, writer)


def _stream_error(exc: BaseException) -> StreamError:
    failure, detail = classify(exc)
    return StreamError(failure, detail)


class AsyncioStream:
    """``ByteStream`` over an asyncio ``StreamReader``/``StreamWriter`` pair (asyncio or uvloop)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._aborted = False

    async def read(self, max_bytes: int, timeout: float | None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except Exception as exc:
            raise _stream_error(exc) from exc

    async def write(self, data: bytes, timeout: float | None) -> None:
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(data)
                await self._writer.drain()
        except Exception as exc:
            raise _stream_error(exc) from exc

    async def start_tls(self, context: ssl.SSLContext, server_name: str | None, timeout: float) -> TlsInfo:
        try:
            # Our own deadline first: when asyncio's ssl_handshake_timeout fires, asyncio and uvloop
            # abort with ConnectionAbortedError, which would read as a reset (a refusal, "no working
            # TLS") instead of the timeout (a tarpit, untestable) it is. Theirs stays as a backstop.
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(
                    context, server_hostname=server_name,
                    ssl_handshake_timeout=timeout + HANDSHAKE_TIMEOUT_BACKSTOP,
                )
        except BaseException as exc:
            # A failed start_tls leaves the stream's protocol detached from the transport, so
            # wait_closed() would never return: abort now and let close() skip the wait.
            self._abort()
            if not isinstance(exc, Exception):
                raise
            raise _stream_error(exc) from exc
        ssl_object = self._writer.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            raise StreamError(FailureClass.INTERNAL, "no SSL object after handshake")
        return _tls_info(ssl_object)

    def take_buffered(self) -> bytes:
        # asyncio has no public way to empty a StreamReader's buffer; ``_buffer`` (a bytearray) has been
        # stable since Python 3.4 and is the same under uvloop (which reuses asyncio's StreamReader).
        stream_buffer = getattr(self._reader, "_buffer", None)
        if not isinstance(stream_buffer, bytearray) or not stream_buffer:
            return b""
        taken = bytes(stream_buffer)
        stream_buffer.clear()
        return taken

    def _abort(self) -> None:
        self._writer.transport.abort()
        self._aborted = True

    async def close(self) -> None:
        if self._aborted:
            return
        self._writer.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._writer.wait_closed()
        except (TimeoutError, OSError):
            self._abort()  # a TLS peer that never answers close_notify
        except BaseException:
            self._abort()  # cancelled while closing: leave no socket behind
            raise


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


def _classify_ssl(exc: ssl.SSLError) -> FailureClass:
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return FailureClass.TLS_CLOSED
    reason = (getattr(exc, "reason", None) or str(exc)).upper()
    if "ALERT" in reason:
        return FailureClass.TLS_ALERT
    if "UNEXPECTED_EOF" in reason or "EOF" in reason:
        return FailureClass.TLS_CLOSED
    if any(marker in reason for marker in _TLS_PROTOCOL_REASONS):
        return FailureClass.TLS_PROTOCOL_ERROR
    return FailureClass.TLS_ERROR


def classify(exc: BaseException) -> tuple[FailureClass, str]:
    """Map an exception raised during network I/O to (failure class, detail). The one such mapping."""
    if isinstance(exc, TimeoutError):
        return FailureClass.TIMEOUT, "timed out"
    if isinstance(exc, ssl.SSLError):  # before OSError: SSLError is an OSError
        return _classify_ssl(exc), f"{getattr(exc, 'reason', None) or ''} {exc}".strip()
    if isinstance(exc, ConnectionResetError) and not exc.args:
        # asyncio's and uvloop's SSL protocol raise the bare class when the peer sends EOF (FIN) during
        # the handshake; a real RST always carries errno ECONNRESET. Keep the two apart.
        return FailureClass.TLS_CLOSED, "connection closed by server during the TLS handshake"
    if isinstance(exc, ConnectionRefusedError):
        return FailureClass.REFUSED, "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return FailureClass.RESET, "connection reset by peer"
    if isinstance(exc, ConnectionAbortedError):
        return FailureClass.RESET, "connection aborted"
    if isinstance(exc, OSError):
        if exc.errno in _NO_ROUTE_ERRNOS:
            return FailureClass.NO_ROUTE, exc.strerror or str(exc)
        if exc.errno == errno.ETIMEDOUT:
            return FailureClass.TIMEOUT, exc.strerror or "timed out"
        return FailureClass.NETWORK_ERROR, exc.strerror or str(exc)
    if isinstance(exc, EOFError):
        return FailureClass.CLOSED, "connection closed"
    return FailureClass.INTERNAL, describe_bug(exc)
