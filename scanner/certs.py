"""Certificate-chain assessment for certificates collected during STARTTLS.

This module is pure: it does no network I/O and never reads the clock.  The
caller passes the chain exactly as the mail server sent it in its TLS
Certificate message (DER, leaf first; RFC 8446 section 4.4.2 and RFC 5246
section 7.4.2) together with the scan time, and gets back a frozen verdict.

Two questions are kept apart on purpose:

* **Trust** (:func:`check_chain`) -- does the presented chain lead to a root in
  the trust store, under the Web PKI rules of ``cryptography``'s verifier, at
  the scan time?  The MX host name plays no part: port-25 senders rarely check
  names (RFC 7435 opportunistic security), so a survey wants to know "is this a
  CA-issued certificate" separately from "is it issued for this MX name".
* **Name** (:func:`match_hostname`) -- does the leaf carry the MX host name,
  using the RFC 6125 section 6.4 rules (as tightened by RFC 9525)?

Hostile input is expected: any byte string may arrive, so every failure in
:func:`check_chain` becomes part of the verdict instead of an exception.
"""

from __future__ import annotations

import ipaddress
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final

import certifi
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
)

from scanner.names import normalize_host
from scanner.status import KeyType, NameMatch, TrustStatus

__all__ = [
    "MAX_CERTIFICATES",
    "MAX_CERTIFICATE_BYTES",
    "CertificateInfo",
    "ChainVerdict",
    "KeyType",
    "NameMatch",
    "TrustStatus",
    "TrustStore",
    "TrustStoreError",
    "check_chain",
    "hostname_matches_pattern",
    "match_hostname",
]

# A TLS Certificate message may carry up to 2^24-1 bytes of certificates.  Real
# chains have 1-4 certificates of 1-2 KiB each, so these limits never bite a
# genuine server but stop a hostile one from making us parse megabytes or run
# chain building over hundreds of candidates.
MAX_CERTIFICATES: Final = 10
MAX_CERTIFICATE_BYTES: Final = 64 * 1024

# Ed25519/Ed448 have no "key size" attribute in cryptography; these are the
# values OpenSSL's EVP_PKEY_get_bits() reports, so our numbers line up with
# what other scanners print.
_ED25519_BITS: Final = 256
_ED448_BITS: Final = 456

# OpenSSL-style names for the signature algorithms seen on the public
# Internet.  Built from public OID constants rather than cryptography's private
# name table; unlisted algorithms fall back to the dotted OID.
_SIGNATURE_NAMES: Final = MappingProxyType(
    {
        SignatureAlgorithmOID.RSA_WITH_MD5: "md5WithRSAEncryption",
        SignatureAlgorithmOID.RSA_WITH_SHA1: "sha1WithRSAEncryption",
        # OIW secsig sha-1WithRSASignature, still found in very old roots.
        x509.ObjectIdentifier("1.3.14.3.2.29"): "sha1WithRSA",
        SignatureAlgorithmOID.RSA_WITH_SHA224: "sha224WithRSAEncryption",
        SignatureAlgorithmOID.RSA_WITH_SHA256: "sha256WithRSAEncryption",
        SignatureAlgorithmOID.RSA_WITH_SHA384: "sha384WithRSAEncryption",
        SignatureAlgorithmOID.RSA_WITH_SHA512: "sha512WithRSAEncryption",
        SignatureAlgorithmOID.RSA_WITH_SHA3_224: "id-rsassa-pkcs1-v1_5-with-sha3-224",
        SignatureAlgorithmOID.RSA_WITH_SHA3_256: "id-rsassa-pkcs1-v1_5-with-sha3-256",
        SignatureAlgorithmOID.RSA_WITH_SHA3_384: "id-rsassa-pkcs1-v1_5-with-sha3-384",
        SignatureAlgorithmOID.RSA_WITH_SHA3_512: "id-rsassa-pkcs1-v1_5-with-sha3-512",
        SignatureAlgorithmOID.RSASSA_PSS: "rsassaPss",
        SignatureAlgorithmOID.ECDSA_WITH_SHA1: "ecdsa-with-SHA1",
        SignatureAlgorithmOID.ECDSA_WITH_SHA224: "ecdsa-with-SHA224",
        SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ecdsa-with-SHA256",
        SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ecdsa-with-SHA384",
        SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ecdsa-with-SHA512",
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_224: "id-ecdsa-with-sha3-224",
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_256: "id-ecdsa-with-sha3-256",
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_384: "id-ecdsa-with-sha3-384",
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_512: "id-ecdsa-with-sha3-512",
        SignatureAlgorithmOID.DSA_WITH_SHA1: "dsaWithSHA1",
        SignatureAlgorithmOID.DSA_WITH_SHA224: "dsa_with_SHA224",
        SignatureAlgorithmOID.DSA_WITH_SHA256: "dsa_with_SHA256",
        SignatureAlgorithmOID.ED25519: "ED25519",
        SignatureAlgorithmOID.ED448: "ED448",
    }
)


class TrustStoreError(ValueError):
    """A trust store could not be loaded (missing file, bad PEM, no certs)."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """The survey-relevant fields of one certificate."""

    subject: str  # RFC 4514 string
    subject_cn: str | None
    san_dns: tuple[str, ...]
    san_ip: tuple[str, ...]
    issuer: str  # RFC 4514 string
    issuer_cn: str | None
    serial: str  # lower-case hex, no separators
    not_before: datetime  # UTC, timezone-aware
    not_after: datetime  # UTC, timezone-aware
    key_type: KeyType
    key_bits: int | None
    signature_algorithm: str
    sha256: str  # lower-case hex of SHA-256 over the DER encoding
    self_issued: bool  # subject == issuer (signature not checked)


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """Everything check_chain concluded about one presented chain.

    ``chain`` holds the certificates that parsed, in presented order.  When
    the leaf itself did not parse, ``trust`` is PARSE_ERROR and ``chain`` holds
    only the other certificates, so use :attr:`leaf` rather than ``chain[0]``.
    The leaf-derived fields (``expired``, ``not_yet_valid``, ``self_signed``,
    ``days_to_expiry``) are False/None when there is no usable leaf.
    """

    chain: tuple[CertificateInfo, ...]
    parse_errors: tuple[str, ...]
    trust: TrustStatus
    trust_detail: str
    expired: bool
    not_yet_valid: bool
    self_signed: bool
    days_to_expiry: int | None

    @property
    def leaf(self) -> CertificateInfo | None:
        """The parsed leaf certificate, or None if absent or unparseable."""
        if self.trust in (TrustStatus.NO_CERTIFICATE, TrustStatus.PARSE_ERROR):
            return None
        return self.chain[0]


class TrustStore:
    """An immutable set of trust anchors wrapping a cryptography ``Store``.

    Besides the opaque ``Store`` we keep the anchors' subject names, which
    lets check_chain tell "issuer unknown" apart from "issuer known but the
    chain is broken" (the verifier reports both as one error).
    """

    __slots__ = ("_fingerprints", "_source", "_store", "_subjects")

    def __init__(self, certificates: Sequence[x509.Certificate], source: str) -> None:
        if not certificates:
            raise TrustStoreError(f"trust store {source!r} holds no certificates")
        self._store = Store(list(certificates))
        self._subjects = frozenset(cert.subject for cert in certificates)
        self._fingerprints = frozenset(cert.fingerprint(hashes.SHA256()) for cert in certificates)
        self._source = source

    @classmethod
    def from_certificates(cls, certificates: Iterable[x509.Certificate], source: str = "<certificates>") -> TrustStore:
        """Build a store from already-parsed certificates (handy in tests)."""
        return cls(list(certificates), source)

    @classmethod
    def from_pem_bytes(cls, data: bytes, source: str = "<bytes>") -> TrustStore:
        """Build a store from a PEM bundle held in memory."""
        try:
            # Some long-standing roots (e.g. Go Daddy G2) carry serial number
            # 0, which cryptography accepts with a deprecation warning.  The
            # store's contents are trusted by definition, so do not let that
            # warning escalate (pytest runs with warnings as errors).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certificates = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise TrustStoreError(f"trust store {source!r}: {exc}") from exc
        return cls(certificates, source)

    @classmethod
    def from_pem_file(cls, path: str | os.PathLike[str]) -> TrustStore:
        """Load a PEM bundle (e.g. a CA file) from disk."""
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise TrustStoreError(f"cannot read trust store {os.fspath(path)!r}: {exc}") from exc
        return cls.from_pem_bytes(data, os.fspath(path))

    @classmethod
    def from_certifi(cls) -> TrustStore:
        """Load the Mozilla root set shipped by the ``certifi`` package."""
        return cls.from_pem_file(certifi.where())

    @property
    def store(self) -> Store:
        return self._store

    @property
    def source(self) -> str:
        return self._source

    def __len__(self) -> int:
        return len(self._fingerprints)

    def has_subject(self, name: x509.Name) -> bool:
        """True if some anchor has exactly this subject name."""
        return name in self._subjects

    def contains(self, certificate: x509.Certificate) -> bool:
        """True if this exact certificate (same DER) is an anchor."""
        return certificate.fingerprint(hashes.SHA256()) in self._fingerprints

    def __repr__(self) -> str:
        return f"TrustStore(source={self._source!r}, anchors={len(self)})"


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A presented certificate that parsed: cryptography object plus summary."""

    index: int
    cert: x509.Certificate
    info: CertificateInfo


def _last_common_name(name: x509.Name) -> str | None:
    # RFC 6125 s. 6.4.4 speaks of "the most specific" CN; in an X.501
    # RDNSequence that is the last one (as OpenSSL and Go pick it).
    values = [attr.value for attr in name.get_attributes_for_oid(NameOID.COMMON_NAME)]
    texts = [value for value in values if isinstance(value, str)]
    return texts[-1] if texts else None


def _san_entries(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    dns = tuple(san.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return dns, ips


def _key_summary(cert: x509.Certificate) -> tuple[KeyType, int | None]:
    """Key algorithm and size; raises for keys cryptography cannot load."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return KeyType.RSA, key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return KeyType.EC, key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return KeyType.ED25519, _ED25519_BITS
    if isinstance(key, ed448.Ed448PublicKey):
        return KeyType.ED448, _ED448_BITS
    if isinstance(key, dsa.DSAPublicKey):
        return KeyType.DSA, key.key_size
    return KeyType.OTHER, None


def _signature_name(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    return _SIGNATURE_NAMES.get(oid, oid.dotted_string)


def _describe(cert: x509.Certificate, notes: list[str], label: str) -> CertificateInfo:
    """Summarise a certificate; may raise on malformed lazily-parsed fields."""
    try:
        key_type, key_bits = _key_summary(cert)
    except (UnsupportedAlgorithm, ValueError) as exc:
        # The certificate itself is fine; only its key is unusable to us.
        notes.append(f"{label}: public key not understood ({type(exc).__name__}: {exc})")
        key_type, key_bits = KeyType.OTHER, None
    san_dns, san_ip = _san_entries(cert)
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        subject_cn=_last_common_name(cert.subject),
        san_dns=san_dns,
        san_ip=san_ip,
        issuer=cert.issuer.rfc4514_string(),
        issuer_cn=_last_common_name(cert.issuer),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_type=key_type,
        key_bits=key_bits,
        signature_algorithm=_signature_name(cert),
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
        self_issued=cert.subject == cert.issuer,
    )


@contextmanager
def _warnings_as_notes(notes: list[str], label: str) -> Iterator[None]:
    """Turn cryptography's deprecation warnings into notes on the verdict.

    cryptography warns (and promises to fail in a future release) on RFC 5280
    violations it still tolerates, chiefly a zero or negative serial number,
    which real self-signed certificates and even some roots have.  Those are
    findings about the server, so they go into ``parse_errors`` instead of
    the process's warning stream.  ``catch_warnings`` swaps process-global
    filters, so concurrent use from several threads may leak a warning.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CryptographyDeprecationWarning)
        try:
            yield
        finally:
            notes.extend(f"{label}: {message}" for message in dict.fromkeys(str(w.message) for w in caught))


def _parse_one(index: int, der: object, notes: list[str]) -> _Parsed | None:
    """Parse one presented certificate; failures are recorded in ``notes``.

    Returns None only after appending the reason to ``notes``, so no failure
    goes unreported.
    """
    label = "leaf certificate" if index == 0 else f"certificate #{index}"
    if not isinstance(der, bytes | bytearray | memoryview):
        notes.append(f"{label}: expected bytes, got {type(der).__name__}")
        return None
    data = bytes(der)
    if len(data) > MAX_CERTIFICATE_BYTES:
        notes.append(f"{label}: {len(data)} bytes exceeds the {MAX_CERTIFICATE_BYTES}-byte limit")
        return None
    try:
        with _warnings_as_notes(notes, label):
            cert = x509.load_der_x509_certificate(data)
            info = _describe(cert, notes, label)
    # Any byte string can arrive from the network, and cryptography parses
    # several fields lazily with varied exception types; every one of them
    # means "this certificate is malformed" and is reported, not hidden.
    except Exception as exc:
        notes.append(f"{label}: not a parseable X.509 certificate ({type(exc).__name__}: {exc})")
        return None
    return _Parsed(index=index, cert=cert, info=info)


def _parse_chain(chain_der: Sequence[bytes], notes: list[str]) -> list[_Parsed]:
    try:
        total = len(chain_der)
        items = list(chain_der[: MAX_CERTIFICATES + 1])
    # Callers pass what the TLS layer returned; an odd container is reported.
    except Exception as exc:
        notes.append(f"certificate list unreadable ({type(exc).__name__}: {exc})")
        return []
    if len(items) > MAX_CERTIFICATES:
        notes.append(f"{total} certificates presented; only the first {MAX_CERTIFICATES} were examined")
        items = items[:MAX_CERTIFICATES]
    parsed = (_parse_one(index, der, notes) for index, der in enumerate(items))
    return [item for item in parsed if item is not None]


# --------------------------------------------------------------------------
# Chain verification
# --------------------------------------------------------------------------


def _require_server_auth_eku(policy: Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    """EKU rule of a TLS server chain (RFC 5280 s. 4.2.1.12, CA/B BR 7.1.2).

    We verify with cryptography's *client* verifier, because the server
    verifier insists on checking a host name and on a SAN extension; this
    callback replaces the client verifier's clientAuth EKU check with the
    serverAuth one a mail client would apply.  Absent EKU means "any use".
    """
    del policy  # required by the callback signature, not needed here
    if eku is None:
        return
    if ExtendedKeyUsageOID.SERVER_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
        return
    raise ValueError(f"extendedKeyUsage of {cert.subject.rfc4514_string()} lacks serverAuth")


def _verify(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    store: TrustStore,
    when: datetime,
) -> tuple[list[x509.Certificate] | None, str]:
    """Run path validation at ``when``; returns (path or None, reason)."""
    # Web PKI defaults everywhere except: SAN may be absent (CN-only leaves
    # are a naming problem, reported by match_hostname, not a trust problem)
    # and EKU must allow serverAuth rather than clientAuth.
    ee_policy = (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_server_auth_eku)
    )
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_server_auth_eku
    )
    verifier = (
        PolicyBuilder()
        .store(store.store)
        .time(when)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, intermediates)
    # VerificationError is the documented failure; anything else raised from
    # the Rust verifier on hostile input is a failed verification too.
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return verified.chain, "ok"


def _is_self_signed(cert: x509.Certificate) -> bool:
    """Self-issued and its signature verifies under its own public key."""
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _issuer_walk(
    leaf: x509.Certificate, others: Sequence[x509.Certificate], store: TrustStore
) -> tuple[list[x509.Certificate], x509.Name | None]:
    """Follow issuer names from the leaf through the presented certificates.

    Returns the path walked and the first issuer name that is neither among
    the presented certificates nor a trust-anchor subject (None if every
    issuer along the way was found).  Names only: this locates a *missing*
    issuer, the verifier has already judged signatures.
    """
    path = [leaf]
    current = leaf
    remaining = list(others)
    while True:
        if store.has_subject(current.issuer):
            return path, None
        if current.subject == current.issuer:
            # A root the server sent itself but that we do not trust.
            return path, current.issuer
        issuer = next((c for c in remaining if c.subject == current.issuer), None)
        if issuer is None:
            return path, current.issuer
        remaining.remove(issuer)
        path.append(issuer)
        current = issuer


def _clamp_into_validity(certs: Sequence[x509.Certificate], now: datetime) -> datetime | None:
    """The instant nearest ``now`` at which all ``certs`` are valid, if any."""
    start = max(cert.not_valid_before_utc for cert in certs)
    end = min(cert.not_valid_after_utc for cert in certs)
    if start > end:
        return None
    return min(max(now, start), end)


def _validity_problems(certs: Sequence[x509.Certificate], now: datetime) -> list[str]:
    problems = []
    for cert in certs:
        name = cert.subject.rfc4514_string()
        if now > cert.not_valid_after_utc:
            problems.append(f"{name!r} expired at {cert.not_valid_after_utc.isoformat()}")
        elif now < cert.not_valid_before_utc:
            problems.append(f"{name!r} is not valid before {cert.not_valid_before_utc.isoformat()}")
    return problems


def _verifies_at_other_time(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    store: TrustStore,
    now: datetime,
) -> list[x509.Certificate] | None:
    """Path that verifies at some instant inside the certificates' validity.

    Tried instants: the one nearest ``now`` at which the name-walked path is
    valid, then the one at which the leaf alone is valid.  Success means the
    only thing wrong at ``now`` is time (RFC 5280 s. 6.1.3 (a)(2)).
    """
    path, _ = _issuer_walk(leaf, intermediates, store)
    candidates = [_clamp_into_validity(path, now), _clamp_into_validity([leaf], now)]
    tried: set[datetime] = {now}
    for when in candidates:
        if when is None or when in tried:
            continue
        tried.add(when)
        verified, _ = _verify(leaf, intermediates, store, when)
        if verified is not None:
            return verified
    return None


def _pinned_leaf(leaf: x509.Certificate, now: datetime) -> tuple[TrustStatus, str]:
    """Verdict for a leaf that is itself one of the trust anchors.

    The Web PKI policy rejects e.g. a self-signed leaf without an Authority
    Key Identifier, but a trust anchor is an input to path validation, not
    something it validates (RFC 5280 s. 6.1.1 (d)); what still matters is
    that the certificate is inside its validity period at scan time.
    """
    problems = _validity_problems([leaf], now)
    if problems:
        return TrustStatus.EXPIRED, "; ".join(problems)
    return TrustStatus.TRUSTED, "leaf certificate is itself a trust anchor in the store"


def _classify(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    store: TrustStore,
    now: datetime,
) -> tuple[TrustStatus, str]:
    verified, reason = _verify(leaf, intermediates, store, now)
    if verified is not None:
        anchor = verified[-1].subject.rfc4514_string()
        return (
            TrustStatus.TRUSTED,
            f"verified to trust anchor {anchor!r} with {len(verified) - 2} intermediate(s)"
            if len(verified) > 1
            else "leaf certificate is itself a trust anchor",
        )
    if store.contains(leaf):
        return _pinned_leaf(leaf, now)
    if _is_self_signed(leaf):
        return TrustStatus.SELF_SIGNED, "leaf certificate is self-signed and not in the trust store"
    verified = _verifies_at_other_time(leaf, intermediates, store, now)
    if verified is not None:
        problems = _validity_problems(verified, now)
        return TrustStatus.EXPIRED, "; ".join(problems) or f"outside validity at scan time: {reason}"
    path, missing = _issuer_walk(leaf, intermediates, store)
    if missing is None:
        # Every issuer is at hand, so the chain is broken some other way
        # (signature, basicConstraints, key usage, EKU, path length, ...).
        return TrustStatus.INVALID_CHAIN, reason
    if path[-1].subject == missing:
        return (
            TrustStatus.UNKNOWN_ISSUER,
            f"chain ends at root {missing.rfc4514_string()!r}, which is not in the trust store",
        )
    return (
        TrustStatus.UNKNOWN_ISSUER,
        f"issuer {missing.rfc4514_string()!r} is neither presented nor in the trust store",
    )


def _as_utc(now: datetime) -> datetime:
    # A naive datetime is taken to be UTC, the only zone certificates use.
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _verdict(
    parsed: list[_Parsed],
    notes: list[str],
    trust: TrustStatus,
    detail: str,
    now: datetime,
    *,
    self_signed: bool = False,
) -> ChainVerdict:
    chain = tuple(item.info for item in parsed)
    has_leaf = trust not in (TrustStatus.NO_CERTIFICATE, TrustStatus.PARSE_ERROR)
    if not has_leaf:
        return ChainVerdict(chain, tuple(notes), trust, detail, False, False, False, None)
    leaf = parsed[0]
    return ChainVerdict(
        chain=chain,
        parse_errors=tuple(notes),
        trust=trust,
        trust_detail=detail,
        expired=leaf.info.not_after < now,
        not_yet_valid=now < leaf.info.not_before,
        self_signed=self_signed,
        # Floor division: a leaf that expired an hour ago is at -1 days.
        days_to_expiry=(leaf.info.not_after - now) // timedelta(days=1),
    )


def check_chain(chain_der: Sequence[bytes], store: TrustStore, now: datetime) -> ChainVerdict:
    """Assess a presented certificate chain against ``store`` at time ``now``.

    ``chain_der`` is the server's Certificate message content, leaf first;
    the rest may be in any order and may be incomplete or padded with
    unrelated certificates (the verifier builds its own path).  Trust does
    not depend on any host name.  Never raises for any input list.
    """
    now = _as_utc(now)
    notes: list[str] = []
    parsed = _parse_chain(chain_der, notes)
    if not notes and not parsed:
        return _verdict(parsed, notes, TrustStatus.NO_CERTIFICATE, "no certificate presented", now)
    if not parsed or parsed[0].index != 0:
        return _verdict(parsed, notes, TrustStatus.PARSE_ERROR, "leaf certificate unusable", now)
    leaf = parsed[0].cert
    intermediates = [item.cert for item in parsed[1:]]
    with _warnings_as_notes(notes, "chain verification"):
        try:
            trust, detail = _classify(leaf, intermediates, store, now)
            self_signed = _is_self_signed(leaf)
        # Path building runs on attacker-supplied certificates; an unexpected
        # exception there is still a finding about this chain, and callers
        # rely on check_chain never raising.
        except Exception as exc:
            trust, detail = TrustStatus.INVALID_CHAIN, f"verification aborted: {type(exc).__name__}: {exc}"
            self_signed = False
    return _verdict(parsed, notes, trust, detail, now, self_signed=self_signed)


# --------------------------------------------------------------------------
# Host name matching
# --------------------------------------------------------------------------


def _labels(name: str) -> list[str] | None:
    labels = name.split(".")
    return None if any(not label for label in labels) else labels


def hostname_matches_pattern(pattern: str, hostname: str) -> bool:
    """Does a certificate DNS-ID ``pattern`` match reference ``hostname``?

    RFC 6125 s. 6.4.3 rules, in the stricter form RFC 9525 s. 6.3 and the
    CA/Browser Forum Baseline Requirements adopted:

    * comparison is ASCII case-insensitive, one trailing dot ignored, and IDNs
      are compared as A-labels (the pattern must already be ASCII: DNS-IDs are
      IA5String);
    * ``*`` is honoured only as the *complete* left-most label and matches
      exactly one non-empty label: ``*.example.com`` matches
      ``a.example.com`` but neither ``example.com`` nor ``a.b.example.com``;
    * partial-label wildcards (``f*.example.com``, ``*x.example.com``) never
      match.  RFC 6125 only said clients *MAY* honour them; RFC 9525 forbids
      them, the Baseline Requirements forbid issuing them, and OpenSSL with
      X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, Go and browsers reject them, so a
      survey that accepted them would over-report valid names;
    * a wildcard needs at least two labels after it (no ``*.com``), a cheap
      stand-in for the public-suffix check browsers apply; RFC 6125 s. 7.2
      warns about wildcard scope but leaves that policy to the client;
    * a full-label ``*`` may match an A-label such as ``xn--caf-dma``: RFC
      6125 s. 6.4.3 item 3 only rules out a wildcard *embedded within* an
      A-label or U-label (``xn--*``), which the partial-wildcard ban above
      already excludes, and s. 7.2 adds no ban on whole-label wildcards
      (OpenSSL, Python's ssl and Ruby's openssl behave the same way);
    * whitespace is not trimmed from the pattern: a DNS-ID with spaces is
      malformed and matches nothing.
    """
    # MX targets come from DNS and may end with the root dot and use any case (RFC 4343); U-labels
    # are compared as A-labels (RFC 6125 s. 6.4.2).
    reference = normalize_host(hostname)
    if not pattern.isascii() or reference is None or "*" in reference:
        return False
    presented = _labels(pattern.removesuffix(".").lower())
    wanted = _labels(reference)
    if presented is None or wanted is None:
        return False
    if "*" not in pattern:
        return presented == wanted
    if presented[0] != "*" or any("*" in label for label in presented[1:]):
        return False  # partial or non-left-most wildcard: see docstring
    if len(presented) < 3:
        return False
    return len(presented) == len(wanted) and presented[1:] == wanted[1:]


_IP_LITERAL_CHARS = frozenset("0123456789abcdefABCDEF.:")


def _is_ip_literal(hostname: str) -> bool:
    if not _IP_LITERAL_CHARS.issuperset(hostname):  # cheap test first: most MX names have other letters
        return False
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def match_hostname(leaf: CertificateInfo, hostname: str) -> NameMatch:
    """Check the leaf against an MX host name (RFC 6125 s. 6.4, RFC 7672 s. 3.2.3 spirit).

    DNS-IDs (SAN dNSName) are tried first.  The subject CN is consulted only
    when the leaf has no dNSName at all (RFC 6125 s. 6.4.4); a leaf with any
    dNSName never matches through its CN.  An IP literal is compared with
    SAN iPAddress entries only.  An empty host name gives NOT_CHECKED.
    """
    stripped = hostname.strip().removesuffix(".")
    if not stripped:
        return NameMatch.NOT_CHECKED
    if _is_ip_literal(stripped):
        target = ipaddress.ip_address(stripped)
        in_san = any(_same_ip(entry, target) for entry in leaf.san_ip)
        return NameMatch.SAN if in_san else NameMatch.MISMATCH
    if leaf.san_dns:
        if any(hostname_matches_pattern(pattern, stripped) for pattern in leaf.san_dns):
            return NameMatch.SAN
        return NameMatch.MISMATCH
    if leaf.subject_cn is not None and hostname_matches_pattern(leaf.subject_cn, stripped):
        return NameMatch.COMMON_NAME
    return NameMatch.MISMATCH


def _same_ip(entry: str, target: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(entry) == target
    except ValueError:
        return False  # a network range in the SAN never equals one address
