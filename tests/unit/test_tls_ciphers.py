"""Invariants of the cipher-suite registry (scanner.tls.ciphers)."""

from __future__ import annotations

import ssl
from collections import Counter
from dataclasses import FrozenInstanceError

import pytest

from scanner.tls import ciphers
from scanner.tls.ciphers import Authentication, KeyExchange, Mac, RegistryDataError, WeakClass
from scanner.tls.versions import TlsVersion

# NIST SP 800-52r2 §3.3.1, typed in from the publication (independent of the CSV).
NIST_R2 = frozenset(
    {
        # ECDSA certificates
        0xC02B,
        0xC02C,
        0xC0AC,
        0xC0AD,
        0xC0AE,
        0xC0AF,
        0xC023,
        0xC024,
        0xC009,
        0xC00A,
        # RSA certificates
        0xC02F,
        0xC030,
        0x009E,
        0x009F,
        0xC09E,
        0xC09F,
        0xC0A2,
        0xC0A3,
        0xC027,
        0xC028,
        0x0067,
        0x006B,
        0xC013,
        0xC014,
        0x0033,
        0x0039,
        # DSA certificates
        0x00A2,
        0x00A3,
        0x0040,
        0x006A,
        0x0032,
        0x0038,
        # DSA-signed DH
        0x00A4,
        0x00A5,
        0x003E,
        0x0068,
        0x0030,
        0x0036,
        # RSA-signed DH
        0x00A0,
        0x00A1,
        0x003F,
        0x0069,
        0x0031,
        0x0037,
        # ECDSA-signed ECDH
        0xC02D,
        0xC02E,
        0xC025,
        0xC026,
        0xC004,
        0xC005,
        # RSA-signed ECDH
        0xC031,
        0xC032,
        0xC029,
        0xC02A,
        0xC00E,
        0xC00F,
        # TLS 1.3
        0x1301,
        0x1302,
        0x1304,
        0x1305,
    }
)
# r2 Appendix D (RSA key transport) and the nine 3DES suites: r1 = r2(≤1.2) + these (§1.2).
R2_APPENDIX_D = frozenset(
    {
        0x002F,
        0x0035,
        0x003C,
        0x003D,
        0x009C,
        0x009D,
        0xC09C,
        0xC09D,
        0xC0A0,
        0xC0A1,
    }
)
R1_3DES = frozenset(
    {
        0x000A,
        0x000D,
        0x0010,
        0x0013,
        0x0016,
        0xC003,
        0xC008,
        0xC00D,
        0xC012,
    }
)
TLS13_STANDARD = frozenset({0x1301, 0x1302, 0x1303, 0x1304, 0x1305})


def codes(suites: tuple[ciphers.CipherSuite, ...]) -> set[int]:
    return {s.code for s in suites}


def real_suites() -> list[ciphers.CipherSuite]:
    return [s for s in ciphers.all_suites() if not s.is_scsv]


def test_registry_size_and_order() -> None:
    suites = ciphers.all_suites()
    assert len(suites) == 352  # every TLS_* code point of the IANA registry (the IANA "TLS Cipher Suites" registry)
    assert [s.code for s in suites] == sorted({s.code for s in suites})  # unique and sorted
    assert len({s.iana_name for s in suites}) == len(suites)
    assert all(s.iana_name.startswith("TLS_") for s in suites)
    assert all(ciphers.suite(s.code) is s for s in suites)


def test_lookups() -> None:
    gcm = ciphers.suite(0xC02F)
    assert gcm is not None
    assert gcm.iana_name == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert gcm.openssl_name == "ECDHE-RSA-AES128-GCM-SHA256"
    assert (gcm.kx, gcm.au, gcm.enc, gcm.bits, gcm.mac) == (
        KeyExchange.ECDHE,
        Authentication.RSA,
        "AES_128_GCM",
        128,
        Mac.AEAD,
    )
    assert gcm.min_version is TlsVersion.TLS12 and gcm.nist_r1 and gcm.nist_r2 and not gcm.weak
    assert gcm.hex_code == "0xC02F" and gcm.forward_secret and gcm.is_aead
    assert ciphers.suite_by_name("ECDHE-RSA-AES128-GCM-SHA256") is gcm
    assert ciphers.suite_by_name(gcm.iana_name) is gcm
    assert ciphers.suite(0xABCD) is None
    assert ciphers.suite(0x0A0A) is None  # GREASE is not a suite
    assert ciphers.suite_by_name("NO-SUCH-SUITE") is None


def test_corrected_aegis_name() -> None:
    # IANA renamed 0x1306 after the Dec-2022 snapshot the shared CSV came from.
    aegis = ciphers.suite(0x1306)
    assert aegis is not None and aegis.iana_name == "TLS_AEGIS_256_SHA512"


def test_scsvs() -> None:
    for code in (0x00FF, 0x5600):
        entry = ciphers.suite(code)
        assert entry is not None and entry.is_scsv and not entry.weak
        assert entry.kx is KeyExchange.SCSV
        assert all(code not in codes(ciphers.suites_for(v)) for v in TlsVersion if v >= TlsVersion.SSL3)


def test_tls13_suites() -> None:
    by13 = ciphers.suites_for(TlsVersion.TLS13)
    assert codes(by13) >= TLS13_STANDARD
    for s in by13:
        assert s.min_version is TlsVersion.TLS13 and s.is_tls13
        assert s.kx is KeyExchange.ANY and s.au is Authentication.ANY
    for code in TLS13_STANDARD:
        entry = ciphers.suite(code)
        assert entry is not None and entry.min_version is TlsVersion.TLS13 and entry.is_aead
        assert entry.openssl_name == entry.iana_name
    assert not codes(by13) & codes(ciphers.suites_for(TlsVersion.TLS12))


def test_suites_for_versions_nest() -> None:
    ssl3, tls10, tls11, tls12 = (
        codes(ciphers.suites_for(v)) for v in (TlsVersion.SSL3, TlsVersion.TLS10, TlsVersion.TLS11, TlsVersion.TLS12)
    )
    assert ssl3 < tls10 <= tls11 < tls12
    assert all(ciphers.suite(c).min_version is TlsVersion.SSL3 for c in ssl3)  # type: ignore[union-attr]
    assert 0x002F in ssl3 and 0xC013 in tls10 - ssl3 and 0xC02F in tls12 - tls11
    assert codes(ciphers.suites_for(0x0303)) == tls12  # plain ints are accepted
    with pytest.raises(ValueError):
        ciphers.suites_for(0x0305)


def test_nist_r2_is_exactly_the_standard_list() -> None:
    assert codes(ciphers.nist_r2()) == NIST_R2
    assert len(NIST_R2) == 60


def test_nist_r1_reconstruction() -> None:
    expected = {c for c in NIST_R2 if c not in TLS13_STANDARD} | R2_APPENDIX_D | R1_3DES
    assert codes(ciphers.nist_r1()) == expected
    assert len(expected) == 75


def test_nist_r2_members_follow_the_standards_rules() -> None:
    tls13_members = set()
    for s in ciphers.nist_r2():
        assert not s.weak  # no NIST suite is weak
        assert s.enc.startswith("AES_")  # approved block cipher only: no ChaCha, Camellia, ARIA, SEED
        assert s.enc.rsplit("_", 1)[-1] in {"GCM", "CCM", "8", "CBC"}  # GCM, CCM, CCM_8 or CBC
        assert s.mac in {Mac.AEAD, Mac.SHA1, Mac.SHA256, Mac.SHA384}
        assert s.kx not in {KeyExchange.RSA, KeyExchange.PSK, KeyExchange.SRP, KeyExchange.KRB5}  # App. C/D only
        assert s.au in {Authentication.RSA, Authentication.DSS, Authentication.ECDSA, Authentication.ANY}
        if s.is_tls13:
            tls13_members.add(s.code)
        elif s.mac is Mac.SHA1:
            assert s.min_version < TlsVersion.TLS12  # the "TLS 1.0-1.2" rows of §3.3.1
        else:
            assert s.min_version is TlsVersion.TLS12  # SHA-2 CBC and AEAD rows are 1.2-only
    assert tls13_members == {0x1301, 0x1302, 0x1304, 0x1305}  # ChaCha20 (0x1303) excluded


def test_nist_r1_members_are_not_weak_except_3des() -> None:
    for s in ciphers.nist_r1():
        assert s.weak <= {WeakClass.TRIPLE_DES}
        assert (s.weak == {WeakClass.TRIPLE_DES}) == (s.code in R1_3DES)


def test_weak_class_definitions() -> None:
    for s in real_suites():
        w = s.weak
        assert (WeakClass.NULL in w) == (s.enc == "NULL")
        assert (s.enc == "NULL") == (s.bits == 0)
        assert (WeakClass.ANON in w) == (s.au is Authentication.ANON or s.code == 0x0000)
        assert (WeakClass.EXPORT in w) == ("EXPORT" in s.iana_name)
        assert (WeakClass.RC4 in w) == s.enc.startswith("RC4")
        assert (WeakClass.RC2 in w) == s.enc.startswith("RC2")
        assert (WeakClass.IDEA in w) == s.enc.startswith("IDEA")
        assert (WeakClass.DES in w) == s.enc.startswith("DES")
        assert (WeakClass.TRIPLE_DES in w) == s.enc.startswith("3DES")
        assert (WeakClass.MD5 in w) == (s.mac is Mac.MD5)
        assert (WeakClass.LOW_BITS in w) == (0 < s.bits < 128)
        if WeakClass.EXPORT in w:
            assert WeakClass.LOW_BITS in w and s.bits <= 56
        if WeakClass.TRIPLE_DES in w:
            assert s.bits == 168 and s.effective_bits == 112
        else:
            assert s.effective_bits == s.bits


def test_weak_class_counts_match_standards() -> None:
    counts = Counter(cls for s in ciphers.all_suites() for cls in s.weak)
    assert counts == {
        WeakClass.ANON: 28,
        WeakClass.NULL: 23,
        WeakClass.LOW_BITS: 23,
        WeakClass.TRIPLE_DES: 20,
        WeakClass.RC4: 18,
        WeakClass.DES: 16,
        WeakClass.EXPORT: 15,
        WeakClass.MD5: 13,
        WeakClass.RC2: 3,
        WeakClass.IDEA: 3,
    }
    for cls in WeakClass:
        assert codes(ciphers.weak_suites(cls)) == {s.code for s in ciphers.all_suites() if cls in s.weak}
    assert 0x0005 in codes(ciphers.weak_suites(WeakClass.RC4))


def test_min_version_counts_match_standards() -> None:
    counts = Counter(s.min_version for s in real_suites())
    assert counts == {TlsVersion.TLS12: 177, TlsVersion.SSL3: 90, TlsVersion.TLS10: 68, TlsVersion.TLS13: 15}


def test_every_suite_parses_its_own_name() -> None:
    # kx/au/enc are derived from the IANA name; check the derivation holds.
    for s in real_suites():
        if "_WITH_" not in s.iana_name:
            continue
        assert s.enc.split("_")[0] in s.iana_name.split("_WITH_")[1]
        if s.mac in {Mac.SHA256, Mac.SHA384, Mac.MD5}:
            assert s.iana_name.endswith(s.mac.value)
        elif s.mac is Mac.SHA1:
            assert s.iana_name.endswith("_SHA")


def test_agrees_with_the_local_openssl() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    seen = ctx.get_ciphers()
    assert len(seen) > 50
    for c in seen:
        entry = ciphers.suite(c["id"] & 0xFFFF)
        assert entry is not None, c["name"]
        assert entry.openssl_name == c["name"]
        assert entry.min_version == ciphers_version(c["protocol"])
        assert entry.bits == c["alg_bits"]
        assert entry.is_aead == c["aead"]


def ciphers_version(name: str) -> TlsVersion:
    return {
        "SSLv3": TlsVersion.SSL3,
        "TLSv1.0": TlsVersion.TLS10,
        "TLSv1.2": TlsVersion.TLS12,
        "TLSv1.3": TlsVersion.TLS13,
    }[name]


def test_registry_is_immutable() -> None:
    entry = ciphers.suite(0x002F)
    assert entry is not None
    with pytest.raises(FrozenInstanceError):
        entry.bits = 40  # type: ignore[misc]
    assert isinstance(ciphers.all_suites(), tuple)
    with pytest.raises(TypeError):
        ciphers._REGISTRY[0x002F] = entry  # type: ignore[index]
    hash(entry)


HEADER = "code,iana_name,openssl_name,min_version,kx,au,enc,enc_bits,mac,nist_800_52r1,nist_800_52r2,weak_reason\n"
GOOD_ROW = "0x002F,TLS_RSA_WITH_AES_128_CBC_SHA,AES128-SHA,SSLv3,RSA,RSA,AES_128_CBC,128,SHA1,true,false,\n"


def test_loader_parses_a_good_row() -> None:
    table = ciphers._parse_csv(HEADER + GOOD_ROW)
    assert list(table) == [0x002F]


@pytest.mark.parametrize(
    "text",
    [
        "code,name\n0x0001,X\n",
        HEADER + GOOD_ROW + GOOD_ROW,
        HEADER + GOOD_ROW.replace("SSLv3", "TLSv9"),
        HEADER + GOOD_ROW.replace(",RSA,RSA,", ",RSA,BOGUS,"),
        HEADER + GOOD_ROW.replace("true", "yes"),
        HEADER + GOOD_ROW.replace(",128,", ",many,"),
        HEADER + GOOD_ROW.rstrip("\n") + "WEAKISH\n",
        HEADER + GOOD_ROW.replace("0x002F", "0x10000"),
    ],
)
def test_loader_rejects_bad_data(text: str) -> None:
    with pytest.raises(RegistryDataError):
        ciphers._parse_csv(text)
