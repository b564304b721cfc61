"""Tests for scanner.certs: chain trust, certificate summaries, name matching."""

from __future__ import annotations

import hashlib
import ipaddress
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import scanner.certs as certs_module
from scanner.certs import (
    MAX_CERTIFICATE_BYTES,
    MAX_CERTIFICATES,
    CertificateInfo,
    ChainVerdict,
    KeyType,
    NameMatch,
    TrustStatus,
    TrustStore,
    TrustStoreError,
    check_chain,
    hostname_matches_pattern,
    match_hostname,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


# --------------------------------------------------------------------------
# A tiny certificate factory (cryptography only, fixed clock)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: SigningKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _name(common_name: str | None, org: str = "certs test") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if common_name is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _hash_for(key: SigningKey) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def make_cert(
    subject: x509.Name,
    key: SigningKey,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    dns: Sequence[str] | None = (),
    ips: Sequence[str] = (),
    not_before: datetime = NOW - 30 * DAY,
    not_after: datetime = NOW + 60 * DAY,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
) -> Issued:
    """Issue a certificate; ``issuer=None`` makes it self-signed.

    ``dns=None`` (and no ips) omits the SAN extension entirely.
    """
    signer_key = key if issuer is None else issuer.key
    issuer_name = subject if issuer is None else issuer.cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or ()]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if dns is not None or ips:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    cert = builder.sign(signer_key, _hash_for(signer_key))
    return Issued(cert, key)


@dataclass(frozen=True)
class Pki:
    root: Issued
    intermediate: Issued
    store: TrustStore


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = make_cert(
        _name("Test Root"),
        ec.generate_private_key(ec.SECP384R1()),
        ca=True,
        not_before=NOW - 3650 * DAY,
        not_after=NOW + 3650 * DAY,
    )
    intermediate = make_cert(
        _name("Test Intermediate"),
        ec.generate_private_key(ec.SECP256R1()),
        root,
        ca=True,
        not_before=NOW - 1000 * DAY,
        not_after=NOW + 1000 * DAY,
    )
    return Pki(root, intermediate, TrustStore.from_certificates([root.cert], "test root"))


def leaf_of(
    pki: Pki,
    key: SigningKey,
    *,
    cn: str = "mail.example.com",
    dns: Sequence[str] | None = ("mail.example.com",),
    ips: Sequence[str] = (),
    not_before: datetime = NOW - 30 * DAY,
    not_after: datetime = NOW + 60 * DAY,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
) -> Issued:
    """A leaf issued by the test intermediate."""
    return make_cert(
        _name(cn),
        key,
        pki.intermediate,
        dns=dns,
        ips=ips,
        not_before=not_before,
        not_after=not_after,
        eku=eku,
    )


# --------------------------------------------------------------------------
# Trust verdicts
# --------------------------------------------------------------------------


def test_trusted_chain_with_intermediate_trustme() -> None:
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    server = intermediate.issue_cert("mx1.example.net")
    ders = [
        x509.load_pem_x509_certificate(blob.bytes()).public_bytes(serialization.Encoding.DER)
        for blob in server.cert_chain_pems
    ]
    store = TrustStore.from_pem_bytes(ca.cert_pem.bytes(), "trustme root")
    verdict = check_chain(ders, store, NOW)
    assert verdict.trust is TrustStatus.TRUSTED, verdict.trust_detail
    assert "1 intermediate" in verdict.trust_detail
    assert len(verdict.chain) == 2
    assert verdict.parse_errors == ()
    assert not verdict.expired and not verdict.not_yet_valid and not verdict.self_signed
    assert verdict.leaf is not None
    assert match_hostname(verdict.leaf, "mx1.example.net") is NameMatch.SAN
    # The same chain without the intermediate cannot be completed.
    assert check_chain(ders[:1], store, NOW).trust is TrustStatus.UNKNOWN_ISSUER


def test_trusted_chain_own_factory(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(pki, ec_key)
    verdict = check_chain([leaf.der, pki.intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.TRUSTED, verdict.trust_detail
    assert "CN=Test Root" in verdict.trust_detail
    assert verdict.days_to_expiry == 60


def test_out_of_order_and_extra_certificates_still_trusted(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(pki, ec_key)
    stray = make_cert(_name("Unrelated CA"), ec_key, ca=True)
    presented = [leaf.der, stray.der, pki.root.der, pki.intermediate.der]
    verdict = check_chain(presented, pki.store, NOW)
    assert verdict.trust is TrustStatus.TRUSTED, verdict.trust_detail
    assert [info.subject_cn for info in verdict.chain] == [
        "mail.example.com",
        "Unrelated CA",
        "Test Root",
        "Test Intermediate",
    ]


def test_missing_intermediate_is_unknown_issuer(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    # We never fetch AIA caIssuers (pure module): a server that omits its
    # intermediate is reported as UNKNOWN_ISSUER, naming the missing issuer.
    leaf = leaf_of(pki, ec_key)
    verdict = check_chain([leaf.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.UNKNOWN_ISSUER
    assert "issuer 'CN=Test Intermediate,O=certs test' is neither presented" in verdict.trust_detail
    assert not verdict.self_signed


def test_private_root_presented_is_unknown_issuer(ec_key: ec.EllipticCurvePrivateKey) -> None:
    other_root = make_cert(_name("Private Root"), ec.generate_private_key(ec.SECP256R1()), ca=True)
    leaf = make_cert(_name("mail.example.com"), ec_key, other_root, dns=["mail.example.com"])
    unrelated = make_cert(_name("Store Root"), ec_key, ca=True)
    store = TrustStore.from_certificates([unrelated.cert])
    verdict = check_chain([leaf.der, other_root.der], store, NOW)
    assert verdict.trust is TrustStatus.UNKNOWN_ISSUER
    assert "ends at root 'CN=Private Root" in verdict.trust_detail


def test_self_signed_leaf(pki: Pki, rsa_key: rsa.RSAPrivateKey) -> None:
    leaf = make_cert(_name("mail.example.com"), rsa_key, dns=["mail.example.com"])
    verdict = check_chain([leaf.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.SELF_SIGNED
    assert verdict.self_signed
    assert verdict.chain[0].self_issued
    assert verdict.leaf is not None
    # Trust and name are independent: the name still matches.
    assert match_hostname(verdict.leaf, "MAIL.example.com.") is NameMatch.SAN


def test_self_signed_leaf_in_store_is_trusted(rsa_key: rsa.RSAPrivateKey) -> None:
    leaf = make_cert(_name("pinned.example.com"), rsa_key, dns=["pinned.example.com"])
    store = TrustStore.from_certificates([leaf.cert])
    verdict = check_chain([leaf.der], store, NOW)
    assert verdict.trust is TrustStatus.TRUSTED, verdict.trust_detail
    assert verdict.self_signed


def test_self_issued_but_not_self_signed(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    # Subject == issuer, but signed by another key: self-issued only.
    impostor_issuer = Issued(
        make_cert(_name("mail.example.com"), ec.generate_private_key(ec.SECP256R1())).cert,
        ec.generate_private_key(ec.SECP256R1()),
    )
    leaf = make_cert(_name("mail.example.com"), ec_key, impostor_issuer, dns=["mail.example.com"])
    verdict = check_chain([leaf.der], pki.store, NOW)
    assert verdict.chain[0].self_issued
    assert not verdict.self_signed
    assert verdict.trust is TrustStatus.UNKNOWN_ISSUER


def test_expired_leaf_from_trusted_ca(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(pki, ec_key, not_before=NOW - 100 * DAY, not_after=NOW - 10 * DAY)
    verdict = check_chain([leaf.der, pki.intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.EXPIRED
    assert verdict.expired and not verdict.not_yet_valid
    assert verdict.days_to_expiry == -10
    assert "mail.example.com" in verdict.trust_detail and "expired" in verdict.trust_detail


def test_expired_leaf_without_intermediate_is_unknown_issuer(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    # Not "expired": even inside its validity this chain would not build.
    leaf = leaf_of(pki, ec_key, not_before=NOW - 100 * DAY, not_after=NOW - 10 * DAY)
    verdict = check_chain([leaf.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.UNKNOWN_ISSUER
    assert verdict.expired


def test_not_yet_valid_leaf(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(pki, ec_key, not_before=NOW + 2 * DAY, not_after=NOW + 90 * DAY)
    verdict = check_chain([leaf.der, pki.intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.EXPIRED
    assert verdict.not_yet_valid and not verdict.expired
    assert "not valid before" in verdict.trust_detail


def test_expired_intermediate(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    old_intermediate = make_cert(
        _name("Old Intermediate"),
        ec.generate_private_key(ec.SECP256R1()),
        pki.root,
        ca=True,
        not_before=NOW - 400 * DAY,
        not_after=NOW - 1 * DAY,
    )
    leaf = make_cert(
        _name("mail.example.com"),
        ec_key,
        old_intermediate,
        dns=["mail.example.com"],
        not_before=NOW - 30 * DAY,
        not_after=NOW + 30 * DAY,
    )
    verdict = check_chain([leaf.der, old_intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.EXPIRED
    assert "Old Intermediate" in verdict.trust_detail
    assert not verdict.expired  # the leaf itself is fine


def test_verification_time_is_now(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    not_after = NOW + 5 * DAY
    leaf = leaf_of(pki, ec_key, not_before=NOW - 5 * DAY, not_after=not_after)
    chain = [leaf.der, pki.intermediate.der]
    # RFC 5280 s. 4.1.2.5: validity is inclusive of notAfter.
    assert check_chain(chain, pki.store, not_after).trust is TrustStatus.TRUSTED
    later = check_chain(chain, pki.store, not_after + timedelta(seconds=1))
    assert later.trust is TrustStatus.EXPIRED
    assert later.days_to_expiry == -1
    earlier = check_chain(chain, pki.store, NOW - 6 * DAY)
    assert earlier.trust is TrustStatus.EXPIRED and earlier.not_yet_valid


def test_naive_now_is_utc(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(pki, ec_key, not_before=NOW - 5 * DAY, not_after=NOW)
    chain = [leaf.der, pki.intermediate.der]
    naive = (NOW + timedelta(seconds=1)).replace(tzinfo=None)
    assert check_chain(chain, pki.store, naive).trust is TrustStatus.EXPIRED
    assert check_chain(chain, pki.store, NOW.replace(tzinfo=None)).trust is TrustStatus.TRUSTED


def test_wrong_name_is_still_trusted(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(pki, ec_key, cn="www.other.org", dns=["www.other.org"])
    verdict = check_chain([leaf.der, pki.intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.TRUSTED, verdict.trust_detail
    assert verdict.leaf is not None
    assert match_hostname(verdict.leaf, "mail.example.com") is NameMatch.MISMATCH
    assert match_hostname(verdict.leaf, "www.other.org") is NameMatch.SAN


def test_tampered_signature_is_invalid_chain(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    der = bytearray(leaf_of(pki, ec_key).der)
    der[-5] ^= 0x01  # inside the ECDSA signature value; DER structure intact
    verdict = check_chain([bytes(der), pki.intermediate.der], pki.store, NOW)
    assert verdict.parse_errors == ()
    assert verdict.trust is TrustStatus.INVALID_CHAIN
    assert verdict.trust_detail


def test_client_only_eku_is_invalid_chain(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(pki, ec_key, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    verdict = check_chain([leaf.der, pki.intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.INVALID_CHAIN
    assert "serverAuth" in verdict.trust_detail
    no_eku = leaf_of(pki, ec_key, eku=None)
    assert check_chain([no_eku.der, pki.intermediate.der], pki.store, NOW).trust is (TrustStatus.TRUSTED)


def test_ca_certificate_as_leaf_is_invalid_chain(pki: Pki) -> None:
    # A server that sends its intermediate CA as its own certificate.
    verdict = check_chain([pki.intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.INVALID_CHAIN
    assert "EE" in verdict.trust_detail or "basicConstraints" in verdict.trust_detail


def test_empty_chain() -> None:
    verdict = check_chain([], TrustStore.from_certifi(), NOW)
    assert verdict.trust is TrustStatus.NO_CERTIFICATE
    assert verdict.chain == () and verdict.parse_errors == ()
    assert verdict.leaf is None and verdict.days_to_expiry is None
    assert not verdict.expired and not verdict.self_signed


def test_garbage_leaf(pki: Pki) -> None:
    verdict = check_chain([b"\x30\x03\x02\x01\x00garbage"], pki.store, NOW)
    assert verdict.trust is TrustStatus.PARSE_ERROR
    assert verdict.chain == ()
    assert len(verdict.parse_errors) == 1 and "leaf" in verdict.parse_errors[0]
    assert verdict.leaf is None


def test_garbage_leaf_keeps_other_certificates(pki: Pki) -> None:
    verdict = check_chain([b"nope", pki.intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.PARSE_ERROR
    assert [info.subject_cn for info in verdict.chain] == ["Test Intermediate"]
    assert verdict.leaf is None


def test_garbage_intermediate_is_noted_but_chain_verifies(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(pki, ec_key)
    verdict = check_chain([leaf.der, b"\x00" * 40, pki.intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.TRUSTED, verdict.trust_detail
    assert len(verdict.parse_errors) == 1 and "#1" in verdict.parse_errors[0]
    assert len(verdict.chain) == 2


def test_oversized_certificate_is_parse_error(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    big = b"\x30" + b"\x00" * MAX_CERTIFICATE_BYTES
    leaf = leaf_of(pki, ec_key)
    verdict = check_chain([leaf.der, big, pki.intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.TRUSTED
    assert any("limit" in error for error in verdict.parse_errors)
    only_big = check_chain([big], pki.store, NOW)
    assert only_big.trust is TrustStatus.PARSE_ERROR


def test_too_many_certificates_are_capped(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(pki, ec_key)
    presented = [leaf.der] + [pki.root.der] * 15 + [pki.intermediate.der]
    verdict = check_chain(presented, pki.store, NOW)
    assert len(verdict.chain) == MAX_CERTIFICATES
    assert any("17 certificates" in error for error in verdict.parse_errors)
    # The intermediate was beyond the cap, so it was never seen.
    assert verdict.trust is TrustStatus.UNKNOWN_ISSUER


def test_non_bytes_entries_do_not_raise(pki: Pki) -> None:
    verdict = check_chain(["not bytes", None], pki.store, NOW)  # type: ignore[list-item]
    assert verdict.trust is TrustStatus.PARSE_ERROR
    assert len(verdict.parse_errors) == 2


def test_unexpected_verifier_exception_becomes_verdict(
    pki: Pki, ec_key: ec.EllipticCurvePrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_args: object) -> tuple[TrustStatus, str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(certs_module, "_classify", explode)
    verdict = check_chain([leaf_of(pki, ec_key).der], pki.store, NOW)
    assert verdict.trust is TrustStatus.INVALID_CHAIN
    assert "RuntimeError: boom" in verdict.trust_detail
    assert verdict.leaf is not None and verdict.days_to_expiry == 60


# --------------------------------------------------------------------------
# Certificate summaries
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_key", "key_type", "bits", "signature"),
    [
        (
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            KeyType.RSA,
            2048,
            "sha256WithRSAEncryption",
        ),
        (lambda: ec.generate_private_key(ec.SECP256R1()), KeyType.EC, 256, "ecdsa-with-SHA256"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), KeyType.EC, 384, "ecdsa-with-SHA384"),
        (ed25519.Ed25519PrivateKey.generate, KeyType.ED25519, 256, "ED25519"),
    ],
)
def test_key_type_bits_and_signature(make_key: object, key_type: KeyType, bits: int, signature: str) -> None:
    assert callable(make_key)
    key = make_key()
    cert = make_cert(_name("self.example"), key, dns=["self.example"])
    verdict = check_chain([cert.der], TrustStore.from_certificates([cert.cert]), NOW)
    info = verdict.chain[0]
    assert (info.key_type, info.key_bits) == (key_type, bits)
    # Self-signed, so the signature algorithm follows the same key.
    assert info.signature_algorithm == signature


def test_rsa_leaf_under_ec_issuer(pki: Pki, rsa_key: rsa.RSAPrivateKey) -> None:
    leaf = leaf_of(pki, rsa_key)
    info = check_chain([leaf.der, pki.intermediate.der], pki.store, NOW).chain[0]
    assert (info.key_type, info.key_bits) == (KeyType.RSA, 2048)
    assert info.signature_algorithm == "ecdsa-with-SHA256"  # signed by the EC intermediate


def test_certificate_info_fields(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(pki, ec_key, dns=["mail.example.com", "*.example.com"], ips=["127.0.0.1", "::1"])
    verdict = check_chain([leaf.der, pki.intermediate.der], pki.store, NOW)
    info = verdict.chain[0]
    assert info.sha256 == hashlib.sha256(leaf.der).hexdigest()
    assert info.serial == format(leaf.cert.serial_number, "x")
    assert info.subject == "CN=mail.example.com,O=certs test"
    assert info.subject_cn == "mail.example.com"
    assert info.issuer_cn == "Test Intermediate"
    assert info.issuer == "CN=Test Intermediate,O=certs test"
    assert info.san_dns == ("mail.example.com", "*.example.com")
    assert info.san_ip == ("127.0.0.1", "::1")
    assert info.not_before == NOW - 30 * DAY and info.not_before.tzinfo is not None
    assert info.not_after == NOW + 60 * DAY
    assert not info.self_issued
    assert verdict.chain[1].sha256 == hashlib.sha256(pki.intermediate.der).hexdigest()


def test_results_are_frozen(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verdict = check_chain([leaf_of(pki, ec_key).der], pki.store, NOW)
    with pytest.raises(AttributeError):
        verdict.trust = TrustStatus.TRUSTED  # type: ignore[misc]
    with pytest.raises(AttributeError):
        verdict.chain[0].subject = "x"  # type: ignore[misc]
    assert TrustStatus("unknown_issuer") is TrustStatus.UNKNOWN_ISSUER
    assert isinstance(NameMatch.COMMON_NAME, str) and NameMatch.COMMON_NAME.value == "common_name"


# --------------------------------------------------------------------------
# Host name matching
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "hostname", "expected"),
    [
        ("mail.example.com", "mail.example.com", True),
        ("mail.example.com", "MAIL.EXAMPLE.COM", True),
        ("MAIL.Example.COM", "mail.example.com", True),
        ("mail.example.com", "mail.example.com.", True),
        ("mail.example.com.", "mail.example.com", True),
        ("mail.example.com", "mail.example.org", False),
        ("mail.example.com", "example.com", False),
        ("example.com", "mail.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "A.EXAMPLE.COM.", True),
        ("*.EXAMPLE.com", "mx.example.COM", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "a.example.org", False),
        ("*.b.example.com", "a.b.example.com", True),
        ("*.b.example.com", "b.example.com", False),
        ("a.*.example.com", "a.b.example.com", False),  # wildcard not left-most
        ("*.*.example.com", "a.b.example.com", False),
        ("f*.example.com", "foo.example.com", False),  # partial wildcard
        ("*oo.example.com", "foo.example.com", False),
        ("f*o.example.com", "foo.example.com", False),
        ("**.example.com", "a.example.com", False),
        ("*", "localhost", False),
        ("*.com", "example.com", False),  # wildcard over a TLD
        ("*.example.com", "xn--caf-dma.example.com", True),  # whole-label * vs A-label
        ("xn--*.example.com", "xn--caf-dma.example.com", False),  # * inside an A-label
        ("xn--caf-dma.example.com", "café.example.com", True),  # U-label reference
        ("*.example.com", "café.example.com", True),
        ("café.example.com", "xn--caf-dma.example.com", False),  # non-ASCII pattern
        ("*.example.com", "*.example.com", False),  # reference never has a wildcard
        ("mail..example.com", "mail..example.com", False),
        ("", "", False),
        ("", "mail.example.com", False),
        ("mail.example.com", "", False),
        ("127.0.0.1", "127.0.0.1", True),  # plain string equality, no wildcard
        ("mail.example.com ", "mail.example.com", False),  # malformed DNS-ID
        ("mail.example.com", " mail.example.com. ", True),  # reference is trimmed
        ("mail.example.com", "mail.example.com..", False),
    ],
)
def test_hostname_matches_pattern(pattern: str, hostname: str, expected: bool) -> None:
    assert hostname_matches_pattern(pattern, hostname) is expected


def _info(cn: str | None, dns: Sequence[str] = (), ips: Sequence[str] = ()) -> CertificateInfo:
    return CertificateInfo(
        subject=f"CN={cn}" if cn else "",
        subject_cn=cn,
        san_dns=tuple(dns),
        san_ip=tuple(ips),
        issuer="CN=x",
        issuer_cn="x",
        serial="1",
        not_before=NOW,
        not_after=NOW,
        key_type=KeyType.EC,
        key_bits=256,
        signature_algorithm="ecdsa-with-SHA256",
        sha256="00",
        self_issued=False,
    )


@pytest.mark.parametrize(
    ("info", "hostname", "expected"),
    [
        (_info("x", ["mx.example.com"]), "mx.example.com", NameMatch.SAN),
        (_info("x", ["mx.example.com"]), "MX.Example.Com.", NameMatch.SAN),
        (_info("x", ["other.example.com", "*.example.com"]), "mx.example.com", NameMatch.SAN),
        (_info("x", ["mx.example.com"]), "mx2.example.com", NameMatch.MISMATCH),
        # CN only counts when there is no SAN dNSName at all (RFC 6125 s. 6.4.4).
        (_info("mx.example.com"), "mx.example.com", NameMatch.COMMON_NAME),
        (_info("mx.example.com"), "MX.EXAMPLE.COM.", NameMatch.COMMON_NAME),
        (_info("*.example.com"), "mx.example.com", NameMatch.COMMON_NAME),
        (_info("mx.example.com", ["other.example.com"]), "mx.example.com", NameMatch.MISMATCH),
        (_info("mx.example.com", [], ["127.0.0.1"]), "mx.example.com", NameMatch.COMMON_NAME),
        (_info(None), "mx.example.com", NameMatch.MISMATCH),
        (_info("x", [], ["127.0.0.1"]), "127.0.0.1", NameMatch.SAN),
        (_info("x", [], ["::1"]), "0:0::1", NameMatch.SAN),
        (_info("127.0.0.1"), "127.0.0.1", NameMatch.MISMATCH),  # no IP match via CN
        (_info("x", ["mx.example.com"]), "", NameMatch.NOT_CHECKED),
        (_info("x", ["mx.example.com"]), ".", NameMatch.NOT_CHECKED),
    ],
)
def test_match_hostname(info: CertificateInfo, hostname: str, expected: NameMatch) -> None:
    assert match_hostname(info, hostname) is expected


def test_cn_only_certificate_end_to_end(pki: Pki, ec_key: ec.EllipticCurvePrivateKey) -> None:
    # No SAN extension: still trusted (naming is not trust), matched via CN.
    cn_only = leaf_of(pki, ec_key, cn="mx.example.com", dns=None)
    verdict = check_chain([cn_only.der, pki.intermediate.der], pki.store, NOW)
    assert verdict.trust is TrustStatus.TRUSTED, verdict.trust_detail
    assert verdict.leaf is not None and verdict.leaf.san_dns == ()
    assert match_hostname(verdict.leaf, "mx.example.com.") is NameMatch.COMMON_NAME
    # With a SAN present, a CN equal to the host name must not be used.
    with_san = leaf_of(pki, ec_key, cn="mx.example.com", dns=["web.example.com"])
    leaf = check_chain([with_san.der, pki.intermediate.der], pki.store, NOW).leaf
    assert leaf is not None
    assert match_hostname(leaf, "mx.example.com") is NameMatch.MISMATCH


# --------------------------------------------------------------------------
# Trust store loading
# --------------------------------------------------------------------------


def test_trust_store_from_certifi() -> None:
    store = TrustStore.from_certifi()
    assert len(store) > 50
    assert "cacert.pem" in store.source


def test_trust_store_from_pem_file(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "roots.pem"
    path.write_bytes(pki.root.cert.public_bytes(serialization.Encoding.PEM))
    store = TrustStore.from_pem_file(path)
    assert len(store) == 1 and store.has_subject(pki.root.cert.subject)
    assert store.contains(pki.root.cert) and not store.contains(pki.intermediate.cert)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not PEM at all\n",
        b"",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    ],
)
def test_bad_pem_file_raises_trust_store_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(TrustStoreError):
        TrustStore.from_pem_file(path)


def test_missing_pem_file_raises_trust_store_error(tmp_path: Path) -> None:
    with pytest.raises(TrustStoreError, match="cannot read"):
        TrustStore.from_pem_file(tmp_path / "absent.pem")
    assert issubclass(TrustStoreError, ValueError)


def test_empty_certificate_list_raises() -> None:
    with pytest.raises(TrustStoreError):
        TrustStore.from_certificates([])


# --------------------------------------------------------------------------
# Robustness
# --------------------------------------------------------------------------


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """Valid DER with a few bytes changed, truncated, or extended."""

    def mutate(edits: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
        data = bytearray(seed)
        for position, value in edits:
            data[position % len(data)] = value
        return bytes(data[: max(1, len(data) - cut)]) + tail

    return st.builds(
        mutate,
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
        st.integers(0, 40),
        st.binary(max_size=8),
    )


_STORE_ROOT = make_cert(_name("Fuzz Root"), ec.generate_private_key(ec.SECP256R1()), ca=True)
_FUZZ_LEAF = make_cert(
    _name("fuzz.example"), ec.generate_private_key(ec.SECP256R1()), _STORE_ROOT, dns=["fuzz.example"]
)
_FUZZ_STORE = TrustStore.from_certificates([_STORE_ROOT.cert])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=200),
            _mutations(_FUZZ_LEAF.der),
            _mutations(_STORE_ROOT.der),
            st.just(_FUZZ_LEAF.der),
        ),
        max_size=12,
    ),
    st.one_of(
        st.just(NOW),
        st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    ),
)
def test_arbitrary_bytes_never_raise(chain: list[bytes], now: datetime) -> None:
    verdict = check_chain(chain, _FUZZ_STORE, now)
    assert isinstance(verdict, ChainVerdict)
    event(verdict.trust.value)
    assert len(verdict.chain) <= min(len(chain), MAX_CERTIFICATES)
    if not chain:
        assert verdict.trust is TrustStatus.NO_CERTIFICATE
    if verdict.leaf is not None:
        assert verdict.leaf.sha256 == hashlib.sha256(chain[0]).hexdigest()
        match_hostname(verdict.leaf, "fuzz.example")
    else:
        assert verdict.trust in (TrustStatus.NO_CERTIFICATE, TrustStatus.PARSE_ERROR)


@given(st.text(max_size=40), st.text(max_size=40))
def test_hostname_matching_never_raises(pattern: str, hostname: str) -> None:
    assert isinstance(hostname_matches_pattern(pattern, hostname), bool)


def _certifi_root(common_name: str) -> x509.Certificate:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        with open(certifi.where(), "rb") as handle:
            roots = x509.load_pem_x509_certificates(handle.read())
    wanted = x509.NameAttribute(NameOID.COMMON_NAME, common_name)
    matches = [root for root in roots if wanted in root.subject]
    assert matches, common_name
    return matches[0]


def test_zero_serial_is_noted_not_fatal() -> None:
    # Go Daddy's G2 root (in certifi) has serial number 0, which RFC 5280
    # s. 4.1.2.2 forbids and cryptography only tolerates with a warning.
    root = _certifi_root("Go Daddy Root Certificate Authority - G2")
    der = root.public_bytes(serialization.Encoding.DER)
    in_store = check_chain([der], TrustStore.from_certifi(), NOW)
    assert in_store.trust is TrustStatus.TRUSTED, in_store.trust_detail
    assert in_store.chain[0].serial == "0"
    assert any("serial number" in note for note in in_store.parse_errors)
    other = check_chain([der], TrustStore.from_certificates([_STORE_ROOT.cert]), NOW)
    assert other.trust is TrustStatus.SELF_SIGNED and other.self_signed
