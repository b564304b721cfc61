"""Cipher-suite registry: every IANA TLS cipher suite as immutable data.

The data lives in ``data/cipher_suites.csv`` (the project's checked copy of the
IANA "TLS Cipher Suites" registry in the TLS Parameters group).  It is parsed exactly once, at
import, into a read-only mapping; nothing here is mutable afterwards.

Weakness classes follow BCP 195 (RFC 9325), RFC 7465, RFC 5469 and
RFC 4346: they describe the *suite*, not a server's configuration.  Static
RSA/DH (no forward secrecy), CBC and SHA-1 HMAC are deliberately not weakness
classes; derive them from ``kx``/``enc``/``mac`` where a grader needs them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from importlib import resources
from types import MappingProxyType

from scanner.tls.versions import TlsVersion

__all__ = [
    "Authentication",
    "CipherSuite",
    "KeyExchange",
    "Mac",
    "RegistryDataError",
    "WeakClass",
    "all_suites",
    "nist_r1",
    "nist_r2",
    "suite",
    "suite_by_name",
    "suites_for",
    "weak_suites",
]


class RegistryDataError(Exception):
    """The bundled CSV is malformed (a packaging or editing bug, not input)."""


class WeakClass(StrEnum):
    """Why a suite is weak; a suite may carry several classes."""

    NULL = "null"  # no encryption at all
    ANON = "anon"  # no server authentication
    EXPORT = "export"  # 40/56-bit export-grade (RFC 4346 forbids in 1.1+)
    RC4 = "rc4"  # RFC 7465
    DES = "des"  # single DES, incl. DES40 (RFC 5469)
    TRIPLE_DES = "3des"  # 64-bit block, SWEET32; effective 112 bits
    RC2 = "rc2"
    IDEA = "idea"  # RFC 5469
    MD5 = "md5"  # MD5 HMAC
    LOW_BITS = "low_bits"  # 0 < nominal key bits < 128 (3DES excluded)


class KeyExchange(str, Enum):
    """Key-exchange part of the IANA name; ``ANY`` for TLS 1.3-style suites."""

    RSA = "RSA"
    DH = "DH"  # static DH certificate
    DHE = "DHE"  # includes DH_anon
    ECDH = "ECDH"  # static ECDH certificate
    ECDHE = "ECDHE"  # includes ECDH_anon
    PSK = "PSK"
    DHE_PSK = "DHE_PSK"
    RSA_PSK = "RSA_PSK"
    ECDHE_PSK = "ECDHE_PSK"
    SRP = "SRP"
    KRB5 = "KRB5"
    ECCPWD = "ECCPWD"
    GOST = "GOSTR341112_256"
    NULL = "NULL"
    ANY = "any"
    SCSV = "SCSV"  # signalling value, not a real suite


class Authentication(str, Enum):
    """Server-authentication part of the IANA name."""

    RSA = "RSA"
    DSS = "DSS"
    ECDSA = "ECDSA"
    ANON = "anon"
    PSK = "PSK"
    KRB5 = "KRB5"
    SRP = "SRP"
    ECCPWD = "ECCPWD"
    GOST = "GOSTR341112_256"
    NULL = "NULL"
    ANY = "any"
    SCSV = "SCSV"


class Mac(str, Enum):
    """Record-protection MAC; ``AEAD`` means the hash only feeds the PRF."""

    NULL = "NULL"
    MD5 = "MD5"
    SHA1 = "SHA1"
    SHA256 = "SHA256"
    SHA384 = "SHA384"
    AEAD = "AEAD"
    OMAC = "OMAC"
    IMIT = "IMIT"
    SCSV = "SCSV"


_FORWARD_SECRET_KX = frozenset(
    {KeyExchange.DHE, KeyExchange.ECDHE, KeyExchange.DHE_PSK, KeyExchange.ECDHE_PSK, KeyExchange.ANY}
)


@dataclass(frozen=True)
class CipherSuite:
    """One registry row.  ``bits`` is the nominal symmetric key length."""

    code: int
    iana_name: str
    openssl_name: str | None
    kx: KeyExchange
    au: Authentication
    enc: str  # e.g. "AES_128_GCM", "3DES_EDE_CBC", "RC4_40"; "SCSV" for SCSVs
    bits: int
    mac: Mac
    min_version: TlsVersion
    nist_r1: bool
    nist_r2: bool
    weak: frozenset[WeakClass]
    is_scsv: bool

    @property
    def hex_code(self) -> str:
        return f"0x{self.code:04X}"

    @property
    def is_aead(self) -> bool:
        return self.mac is Mac.AEAD

    @property
    def is_tls13(self) -> bool:
        """True for suites usable only in TLS 1.3 (RFC 8446 §B.4 style)."""
        return self.min_version is TlsVersion.TLS13

    @property
    def forward_secret(self) -> bool:
        return self.kx in _FORWARD_SECRET_KX

    @property
    def effective_bits(self) -> int:
        """Security strength: 3DES counts as 112 bits (BCP 195 / SP 800-57)."""
        return 112 if WeakClass.TRIPLE_DES in self.weak else self.bits

    def usable_with(self, version: TlsVersion) -> bool:
        """Whether a server may negotiate this suite at ``version``.

        TLS 1.3 suites are 1.3-only and 1.3 accepts nothing else (RFC 8446
        §4.1.2).  Export suites stay listed for 1.1/1.2 on purpose: a survey
        wants to catch servers that still negotiate them.
        """
        if self.is_scsv:
            return False
        if version >= TlsVersion.TLS13:
            return self.is_tls13
        return not self.is_tls13 and self.min_version <= version


# CSV tag -> class.  "SCSV" is handled separately (not a weakness).
_WEAK_TAGS: Mapping[str, WeakClass] = MappingProxyType(
    {
        "NULL": WeakClass.NULL,
        "anon": WeakClass.ANON,
        "EXPORT": WeakClass.EXPORT,
        "RC4": WeakClass.RC4,
        "DES": WeakClass.DES,
        "3DES": WeakClass.TRIPLE_DES,
        "RC2": WeakClass.RC2,
        "IDEA": WeakClass.IDEA,
        "MD5": WeakClass.MD5,
        "KEY<128": WeakClass.LOW_BITS,
    }
)

_VERSIONS: Mapping[str, TlsVersion] = MappingProxyType(
    {
        "SSLv3": TlsVersion.SSL3,
        "TLSv1.0": TlsVersion.TLS10,
        "TLSv1.1": TlsVersion.TLS11,
        "TLSv1.2": TlsVersion.TLS12,
        "TLSv1.3": TlsVersion.TLS13,
    }
)

_COLUMNS = (
    "code",
    "iana_name",
    "openssl_name",
    "min_version",
    "kx",
    "au",
    "enc",
    "enc_bits",
    "mac",
    "nist_800_52r1",
    "nist_800_52r2",
    "weak_reason",
)


def _parse_bool(text: str, where: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise RegistryDataError(f"{where}: expected true/false, got {text!r}")


def _parse_scsv(row: Mapping[str, str], code: int) -> CipherSuite:
    # SCSVs (RFC 5746, RFC 7507) may be sent in any hello from SSLv3 on.
    return CipherSuite(
        code=code,
        iana_name=row["iana_name"],
        openssl_name=None,
        kx=KeyExchange.SCSV,
        au=Authentication.SCSV,
        enc="SCSV",
        bits=0,
        mac=Mac.SCSV,
        min_version=TlsVersion.SSL3,
        nist_r1=False,
        nist_r2=False,
        weak=frozenset(),
        is_scsv=True,
    )


def _parse_row(row: Mapping[str, str], line: int) -> CipherSuite:
    where = f"cipher_suites.csv line {line}"
    try:
        code = int(row["code"], 16)
        if not 0 <= code <= 0xFFFF:
            raise RegistryDataError(f"{where}: code out of range")
        tags = [t for t in row["weak_reason"].split(";") if t]
        if tags == ["SCSV"]:
            return _parse_scsv(row, code)
        weak = frozenset(_WEAK_TAGS[t] for t in tags)
        return CipherSuite(
            code=code,
            iana_name=row["iana_name"],
            openssl_name=row["openssl_name"] or None,
            kx=KeyExchange(row["kx"]),
            au=Authentication(row["au"]),
            enc=row["enc"],
            bits=int(row["enc_bits"]),
            mac=Mac(row["mac"]),
            min_version=_VERSIONS[row["min_version"]],
            nist_r1=_parse_bool(row["nist_800_52r1"], where),
            nist_r2=_parse_bool(row["nist_800_52r2"], where),
            weak=weak,
            is_scsv=False,
        )
    except (KeyError, ValueError) as exc:
        raise RegistryDataError(f"{where}: {exc!r}") from exc


def _parse_csv(text: str) -> Mapping[int, CipherSuite]:
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != _COLUMNS:
        raise RegistryDataError(f"unexpected CSV header {reader.fieldnames!r}")
    table: dict[int, CipherSuite] = {}
    for line, row in enumerate(reader, start=2):
        entry = _parse_row(row, line)
        if entry.code in table:
            raise RegistryDataError(f"duplicate code {entry.hex_code} at line {line}")
        table[entry.code] = entry
    return MappingProxyType(dict(sorted(table.items())))


def _load_registry() -> Mapping[int, CipherSuite]:
    data = resources.files("scanner.tls").joinpath("data", "cipher_suites.csv")
    return _parse_csv(data.read_text(encoding="utf-8"))


_REGISTRY: Mapping[int, CipherSuite] = _load_registry()
_BY_NAME: Mapping[str, CipherSuite] = MappingProxyType(
    {name: s for s in _REGISTRY.values() for name in (s.iana_name, s.openssl_name) if name}
)


def suite(code: int) -> CipherSuite | None:
    """The registry entry for ``code``, or None for unassigned/unknown codes."""
    return _REGISTRY.get(code)


def suite_by_name(name: str) -> CipherSuite | None:
    """Look up by IANA name or OpenSSL name (exact spelling)."""
    return _BY_NAME.get(name)


def all_suites() -> tuple[CipherSuite, ...]:
    """Every registry row, SCSVs included, sorted by code."""
    return tuple(_REGISTRY.values())


def suites_for(version: TlsVersion | int) -> tuple[CipherSuite, ...]:
    """Real suites (no SCSVs) a server may negotiate at ``version``."""
    ver = TlsVersion(version)
    return tuple(s for s in _REGISTRY.values() if s.usable_with(ver))


def weak_suites(cls: WeakClass) -> tuple[CipherSuite, ...]:
    return tuple(s for s in _REGISTRY.values() if cls in s.weak)


def nist_r1() -> tuple[CipherSuite, ...]:
    """SP 800-52r1 §3.3.1 (reconstructed list)."""
    return tuple(s for s in _REGISTRY.values() if s.nist_r1)


def nist_r2() -> tuple[CipherSuite, ...]:
    """SP 800-52r2 §3.3.1 (60 suites; Appendix C/D excluded)."""
    return tuple(s for s in _REGISTRY.values() if s.nist_r2)
