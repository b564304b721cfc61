"""TLS protocol versions and the enumeration modes: a leaf module, imported by the codec, the
enumeration, grading and the output alike, importing nothing of the project."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final

__all__ = ["VERSION_NAMES", "EnumMode", "TlsVersion", "VersionName"]


class TlsVersion(IntEnum):
    """Protocol version code points (RFC 5246 §6.2.1, RFC 8446 §4.2.1; SSL 2.0/3.0: RFC 6101 §5.2.1)."""

    SSL2 = 0x0002
    SSL3 = 0x0300
    TLS10 = 0x0301
    TLS11 = 0x0302
    TLS12 = 0x0303
    TLS13 = 0x0304


class VersionName(StrEnum):
    """Our names of the protocol versions (probes.versions_accepted, preferred_version; the rubric).

    Not OpenSSL's: it calls TLS 1.0 "TLSv1" (probes.tls_version is what the library said).
    """

    SSL3 = "SSLv3"
    TLS10 = "TLSv1.0"
    TLS11 = "TLSv1.1"
    TLS12 = "TLSv1.2"
    TLS13 = "TLSv1.3"


VERSION_NAMES: Final[Mapping[TlsVersion, VersionName]] = MappingProxyType({
    TlsVersion.SSL3: VersionName.SSL3,
    TlsVersion.TLS10: VersionName.TLS10,
    TlsVersion.TLS11: VersionName.TLS11,
    TlsVersion.TLS12: VersionName.TLS12,
    TlsVersion.TLS13: VersionName.TLS13,
})


class EnumMode(StrEnum):
    """How much of a server's TLS configuration the crafted-hello enumeration asks about."""

    OFF = "off"
    POSTURE = "posture"
    FULL = "full"
