"""The one place where foreign exceptions become a ``FailureClass`` and a human-readable detail.

Socket, asyncio and ssl exceptions are classified here and nowhere else; stages above only see
``ProbeFailure`` (our exception, carrying the phase) or the resulting enum values.
"""

from __future__ import annotations

import errno
import ssl
import traceback

from scanner.status import FailureClass, Phase

__all__ = ["ProbeFailure", "classify", "describe_bug"]

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


class ProbeFailure(Exception):
    """A probe phase ended without the result we needed; carries what a row needs to say why."""

    def __init__(self, phase: Phase, failure_class: FailureClass, detail: str) -> None:
        super().__init__(f"{phase.value}: {failure_class.value}: {detail}")
        self.phase = phase
        self.failure_class = failure_class
        self.detail = detail


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
    """Map an exception raised during network I/O to (failure class, detail)."""
    if isinstance(exc, ProbeFailure):
        return exc.failure_class, exc.detail
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


def describe_bug(exc: BaseException) -> str:
    """A compact, single-string traceback summary for rows with status ``internal_error``."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(frames))
    return f"{type(exc).__name__}: {exc} at {where}"[:2000]
