"""A small test PKI: root CA, optional intermediate, and leaf certificates.

The survey has to classify real-world certificate problems (expired, no SAN,
self-signed, missing intermediate, ...), so the test worlds need to mint
exactly those certificates.  Everything is generated with ``cryptography``
into a work directory; nothing here touches the system trust store.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import idna
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyKind = Literal["ec", "rsa2048"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# CA certificates cover a wide window so that leaf certificates with validity
# far in the past or future fail only for their own dates, never because an
# issuer is out of its validity period (RFC 5280 section 6.1.3 (a)(2)).
_CA_VALIDITY = timedelta(days=3650)
_LEAF_DEFAULT_VALIDITY = timedelta(days=30)
# Backdate "now" a little: a certificate whose notBefore is the current second
# is rejected by a peer whose clock is slightly behind.
_CLOCK_SKEW = timedelta(hours=1)


@dataclass(frozen=True)
class CertFiles:
    """A served certificate: PEM chain file, PEM key file, and the leaf DER.

    ``cert_file`` holds the leaf first, then any intermediate, as a server
    sends it in its Certificate message (RFC 8446 section 4.4.2).
    """

    cert_file: Path
    key_file: Path
    leaf_der: bytes


def _new_key(kind: KeyKind) -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key kind {kind!r}")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = []
    if organization is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _general_name(name: str) -> x509.GeneralName:
    """Map a host name or IP literal to a SAN entry (RFC 5280 4.2.1.6).

    DNS names are stored as A-labels: a SAN dNSName is an IA5String, so
    internationalized names must be converted first (RFC 5280 7.2).
    """
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if name.isascii():
        return x509.DNSName(name)
    if name.startswith("*."):
        return x509.DNSName("*." + idna.encode(name[2:]).decode("ascii"))
    return x509.DNSName(idna.encode(name).decode("ascii"))


def _resolve_validity(not_before: datetime | None, not_after: datetime | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    if not_before is None:
        if not_after is not None and not_after < now:
            # An already-expired certificate: give it a plausible lifetime
            # that ended at not_after.
            not_before = not_after - _LEAF_DEFAULT_VALIDITY
        else:
            not_before = now - _CLOCK_SKEW
    if not_after is None:
        not_after = max(now, not_before) + _LEAF_DEFAULT_VALIDITY
    if not_after <= not_before:
        raise ValueError(f"not_after ({not_after}) must be after not_before ({not_before})")
    return not_before, not_after


def _slug(text: str) -> str:
    """File-name-safe form of a host name, for readable file names."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("._") or "cert"


def _leaf_builder(
    names: Sequence[str],
    *,
    not_before: datetime | None,
    not_after: datetime | None,
    common_name: str | None,
    include_san: bool,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
) -> x509.CertificateBuilder:
    if not names and common_name is None:
        raise ValueError("a certificate needs at least one name or a common_name")
    start, end = _resolve_validity(not_before, not_after)
    cn = common_name if common_name is not None else names[0]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if include_san and names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]),
            critical=False,
        )
    return builder


class TestCA:
    """A root CA (plus an intermediate) living in ``workdir``.

    Files written: ``ca.pem`` / ``ca.key`` (root), ``intermediate.pem`` /
    ``intermediate.key``, and one ``<name>-<n>.crt``/``.key`` pair per
    :meth:`issue` call.
    """

    # Not a pytest test class, despite the name.
    __test__ = False

    def __init__(self, workdir: Path, name: str = "smtp-tls-survey test CA") -> None:
        self._workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count(1)
        now = datetime.now(UTC)
        start, end = now - _CA_VALIDITY, now + _CA_VALIDITY

        self._root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = _name(name, organization="smtp-tls-survey")
        self._root_cert = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(self._root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._root_key.public_key()),
                critical=False,
            )
            .sign(self._root_key, hashes.SHA256())
        )

        self._int_key = ec.generate_private_key(ec.SECP256R1())
        self._int_cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} intermediate", organization="smtp-tls-survey"))
            .issuer_name(root_name)
            .public_key(self._int_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._int_key.public_key()),
                critical=False,
            )
            .add_extension(_aki(self._root_cert), critical=False)
            .sign(self._root_key, hashes.SHA256())
        )

        self._ca_file = workdir / "ca.pem"
        self._ca_file.write_bytes(_cert_pem(self._root_cert))
        (workdir / "ca.key").write_bytes(_key_pem(self._root_key))
        (workdir / "intermediate.pem").write_bytes(_cert_pem(self._int_cert))
        (workdir / "intermediate.key").write_bytes(_key_pem(self._int_key))

    @property
    def ca_file(self) -> Path:
        """PEM file of the root certificate (the trust anchor for clients)."""
        return self._ca_file

    @property
    def root_der(self) -> bytes:
        return self._root_cert.public_bytes(serialization.Encoding.DER)

    def issue(
        self,
        names: Sequence[str],
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key: KeyKind = "ec",
        common_name: str | None = None,
        include_san: bool = True,
        intermediate: bool = True,
    ) -> CertFiles:
        """Issue a server certificate for ``names`` (DNS names or IP literals).

        ``not_after`` in the past gives an expired certificate;
        ``include_san=False`` gives one identified only by its subject CN:
        RFC 6125 section 6.4.4 still allowed a CN fallback, RFC 9525 removed
        it; Python's ssl module falls back to the CN unless the context sets
        ``hostname_checks_common_name = False``.  With
        ``intermediate=False`` the leaf is signed by the root directly and
        the chain file holds only the leaf.
        """
        leaf_key = _new_key(key)
        issuer_cert, issuer_key = (self._int_cert, self._int_key) if intermediate else (self._root_cert, self._root_key)
        leaf = (
            _leaf_builder(
                names,
                not_before=not_before,
                not_after=not_after,
                common_name=common_name,
                include_san=include_san,
                public_key=leaf_key.public_key(),
            )
            .issuer_name(issuer_cert.subject)
            .add_extension(_leaf_key_usage(key), critical=True)
            .add_extension(_aki(issuer_cert), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        chain = [leaf, self._int_cert] if intermediate else [leaf]
        stem = f"{_slug(names[0] if names else str(common_name))}-{next(self._counter)}"
        return _write_pair(self._workdir, stem, chain, leaf_key)


def self_signed(
    workdir: Path,
    names: Sequence[str],
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key: KeyKind = "ec",
    common_name: str | None = None,
    include_san: bool = True,
) -> CertFiles:
    """Write a self-signed leaf (subject == issuer, not a CA) for ``names``.

    File names carry a random serial, so repeated calls in one directory do
    not overwrite each other.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    leaf_key = _new_key(key)
    builder = _leaf_builder(
        names,
        not_before=not_before,
        not_after=not_after,
        common_name=common_name,
        include_san=include_san,
        public_key=leaf_key.public_key(),
    )
    # The issuer must equal the subject for a self-signed certificate.
    subject = _name(common_name if common_name is not None else names[0])
    leaf = (
        builder.issuer_name(subject).add_extension(_leaf_key_usage(key), critical=True).sign(leaf_key, hashes.SHA256())
    )
    stem = f"selfsigned-{_slug(names[0] if names else str(common_name))}-{leaf.serial_number:x}"
    return _write_pair(workdir, stem, [leaf], leaf_key)


def _write_pair(workdir: Path, stem: str, chain: Sequence[x509.Certificate], leaf_key: PrivateKey) -> CertFiles:
    cert_file = workdir / f"{stem}.crt"
    key_file = workdir / f"{stem}.key"
    cert_file.write_bytes(b"".join(_cert_pem(c) for c in chain))
    key_file.write_bytes(_key_pem(leaf_key))
    key_file.chmod(0o600)
    return CertFiles(
        cert_file=cert_file,
        key_file=key_file,
        leaf_der=chain[0].public_bytes(serialization.Encoding.DER),
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage(kind: KeyKind) -> x509.KeyUsage:
    # RSA keys may also be used for RSA key transport (TLS 1.2 RSA kx);
    # EC keys only sign (ECDHE_ECDSA).
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=kind == "rsa2048",
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
