"""The well-known DH primes (RFC formulas and RFC 5114 literals) against OpenSSL's own copies, and the
group registry."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from scanner.tls.groups import (
    ALL_EC_GROUPS,
    DEPRECATED_EC_GROUPS,
    DhSizeClass,
    GroupClass,
    dh_size_class,
    group_class,
    group_code,
    group_name,
    well_known_prime,
    well_known_primes,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl_prime(*pkeyopt: str, algorithm: str = "DH") -> int:
    cmd = ["openssl", "genpkey", "-genparam", "-algorithm", algorithm]
    for opt in pkeyopt:
        cmd += ["-pkeyopt", opt]
    pem = subprocess.run(cmd, capture_output=True, check=True, text=True).stdout
    der = base64.b64decode("".join(line for line in pem.splitlines() if not line.startswith("-----")))
    # DHParameter / DomainParameters (PKCS #3, X9.42): SEQUENCE { INTEGER p, ... }; p comes first.
    pos = _skip_header(der, 0, 0x30)
    start = _skip_header(der, pos, 0x02)
    return int.from_bytes(der[start:start + _length(der, pos + 1)[0]], "big")


def _length(der: bytes, pos: int) -> tuple[int, int]:
    """(length, offset after the length octets) of the DER length at ``pos``."""
    first = der[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    return int.from_bytes(der[pos + 1:pos + 1 + n], "big"), pos + 1 + n


def _skip_header(der: bytes, pos: int, tag: int) -> int:
    assert der[pos] == tag, (der[pos], tag)
    return _length(der, pos + 1)[1]


@pytest.mark.parametrize(("openssl_group", "name"), [
    ("modp_1536", "rfc3526-modp1536"), ("modp_2048", "rfc3526-modp2048"), ("modp_3072", "rfc3526-modp3072"),
    ("modp_4096", "rfc3526-modp4096"), ("modp_6144", "rfc3526-modp6144"), ("modp_8192", "rfc3526-modp8192"),
    ("ffdhe2048", "rfc7919-ffdhe2048"), ("ffdhe3072", "rfc7919-ffdhe3072"), ("ffdhe4096", "rfc7919-ffdhe4096"),
    ("ffdhe6144", "rfc7919-ffdhe6144"), ("ffdhe8192", "rfc7919-ffdhe8192"),
])
def test_formula_primes_equal_openssl(openssl_group: str, name: str) -> None:
    assert well_known_prime(_openssl_prime(f"group:{openssl_group}")) == name


@pytest.mark.parametrize(("index", "name"), [(1, "rfc5114-1024-160"), (2, "rfc5114-2048-224"),
                                             (3, "rfc5114-2048-256")])
def test_rfc5114_literals_equal_openssl(index: int, name: str) -> None:
    assert well_known_prime(_openssl_prime(f"dh_rfc5114:{index}", algorithm="DHX")) == name


def test_oakley_group_2_is_the_1024_bit_prefix_of_the_modp_family() -> None:
    # RFC 2409 §6.2 and RFC 3526 §2 share their leading 64 + 1 bits; Oakley 2 ends in 64 one-bits.
    oakley2 = next(p for p, n in well_known_primes().items() if n == "rfc2409-oakley2")
    assert oakley2.bit_length() == 1024 and oakley2 & (2**64 - 1) == 2**64 - 1
    assert hex(oakley2).startswith("0xffffffffffffffffc90fdaa22168c234")
    assert well_known_prime(oakley2 + 2) is None


def test_group_registry() -> None:
    assert group_name(29) == "x25519" and group_code("x25519") == 29 and group_code(group_name(0x1234)) == 0x1234
    assert group_class(23) is GroupClass.RECOMMENDED and group_class(26) is GroupClass.BRAINPOOL
    assert group_class(19) is GroupClass.DEPRECATED and group_class(256) is GroupClass.FFDHE
    assert all(group_class(g) is GroupClass.DEPRECATED for g in DEPRECATED_EC_GROUPS)
    assert len(set(ALL_EC_GROUPS)) == len(ALL_EC_GROUPS) == 30


@pytest.mark.parametrize(("bits", "size_class"), [(768, DhSizeClass.BELOW_1024), (1024, DhSizeClass.BITS_1024),
                                                  (1536, DhSizeClass.BELOW_2048), (2048, DhSizeClass.BITS_2048),
                                                  (4096, DhSizeClass.ABOVE_2048)])
def test_dh_size_classes(bits: int, size_class: DhSizeClass) -> None:
    assert dh_size_class(bits) is size_class
