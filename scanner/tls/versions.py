"""TLS protocol versions and the enumeration modes: a leaf module, imported by the codec, the
enumeration, grading and the output alike, importing nothing of the project."""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import Final

__all__ = ["VERSION_NAMES", "EnumMode", "TlsVersion"]


class TlsVersion(IntEnum):
    """Protocol version code points (RFC 5246 §6.2.1, RFC 8446 §4.2.1; SSL 2.0/3.0: RFC 6101 §5.2.1)."""

    SSL2 = 0x0002
    SSL3 = 0x0300
    TLS10 = 0x0301
    TLS11 = 0x0302
    TLS12 = 0x0303
    TLS13 = 0x0304


# The names the output uses for versions (OpenSSL's spelling, as ``ssl.SSLObject.version()`` gives it).
VERSION_NAMES: Final = {
    TlsVersion.SSL3: "SSLv3",
    TlsVersion.TLS10: "TLSv1.0",
    TlsVersion.TLS11: "TLSv1.1",
    TlsVersion.TLS12: "TLSv1.2",
    TlsVersion.TLS13: "TLSv1.3",
}


class EnumMode(str, Enum):
    """How much of a server's TLS configuration the crafted-hello enumeration asks about."""

    OFF = "off"
    POSTURE = "posture"
    FULL = "full"
