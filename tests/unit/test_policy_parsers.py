"""Pure policy parsers: MTA-STS TXT and policy files, MX patterns, TLS-RPT records, TLSA matching."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.certs import NameMatch
from scanner.policy.dane import (
    DaneDelivery,
    DaneFinding,
    DaneLink,
    DaneVerdict,
    DnssecStatus,
    TlsaProblem,
    TlsaRecord,
    TlsaSyntaxError,
    dane_sender_verdict,
    dnssec_status,
    match_tlsa,
    mx_bogus_verdict,
    parse_tlsa_text,
    tlsa_name,
    tlsa_problem,
)
from scanner.policy.judge import evaluate, mx_matches
from scanner.policy.mta_sts import (
    MAX_AGE_LIMIT,
    StsError,
    StsFailure,
    StsMode,
    StsPolicy,
    parse_policy,
    parse_sts_txt,
)
from scanner.policy.tlsrpt import TlsRptStatus, parse_tlsrpt
from scanner.policy.txt import TxtRecord
from worlds.ca import TestCA

# --------------------------------------------------------------------------
# MTA-STS TXT (RFC 8461 §3.1)
# --------------------------------------------------------------------------

TXT_CASES: list[tuple[str, list[TxtRecord], StsError | None, str | None]] = [
    ("plain", ["v=STSv1; id=20160831085700Z"], None, "20160831085700Z"),
    ("no space", ["v=STSv1;id=abc"], None, "abc"),
    ("trailing delimiter", ["v=STSv1; id=abc;"], None, "abc"),
    ("spaces around delimiters", ["v=STSv1 ; id=abc ;  "], None, "abc"),
    ("tab delimiters", ["v=STSv1;\tid=abc"], None, "abc"),
    ("extension kept", ["v=STSv1; id=abc; ext.x-1=val!"], None, "abc"),
    ("32-char id", ["v=STSv1; id=" + "a1" * 16], None, "a1" * 16),
    ("split character-strings, str", [("v=STSv1; ", "id=abc")], None, "abc"),
    ("split character-strings, bytes", [[b"v=STSv1; id=", b"abc"]], None, "abc"),
    ("joined bytes", [b"v=STSv1; id=xyz"], None, "xyz"),
    ("other TXT ignored", ["v=spf1 -all", "v=STSv1; id=1", "google-site-verification=x"], None, "1"),
    ("repeated id: first wins", ["v=STSv1; id=1; id=2"], None, "1"),
    ("no records", [], StsError.TXT_MISSING, None),
    ("only other records", ["v=spf1 -all"], StsError.TXT_MISSING, None),
    ("version is case-sensitive", ["v=stsv1; id=1"], StsError.TXT_MISSING, None),
    ("other version", ["v=STSv10; id=1"], StsError.TXT_MISSING, None),
    ("leading space is not the version", [" v=STSv1; id=1"], StsError.TXT_MISSING, None),
    ("version only", ["v=STSv1"], StsError.TXT_INVALID, None),
    ("version and delimiter only", ["v=STSv1;"], StsError.TXT_INVALID, None),
    ("text after version", ["v=STSv1 x; id=1"], StsError.TXT_INVALID, None),
    ("empty id", ["v=STSv1; id="], StsError.TXT_INVALID, None),
    ("id with hyphen", ["v=STSv1; id=abc-def"], StsError.TXT_INVALID, None),
    ("33-char id", ["v=STSv1; id=" + "a" * 33], StsError.TXT_INVALID, None),
    ("no id", ["v=STSv1; ext=1"], StsError.TXT_INVALID, None),
    ("empty field", ["v=STSv1; id=1;; ext=2"], StsError.TXT_INVALID, None),
    ("spaces around =", ["v=STSv1; id = 1"], StsError.TXT_INVALID, None),
    ("field without =", ["v=STSv1; id=1; bad field"], StsError.TXT_INVALID, None),
    ("extension value with =", ["v=STSv1; id=1; a=b=c"], StsError.TXT_INVALID, None),
    ("non-ASCII", [b"v=STSv1; id=\xff"], StsError.TXT_INVALID, None),
    ("two valid records", ["v=STSv1; id=1", "v=STSv1; id=2"], StsError.TXT_MULTIPLE, None),
    ("valid and invalid record", ["v=STSv1; id=1", "v=STSv1; garbage"], StsError.TXT_MULTIPLE, None),
]


@pytest.mark.parametrize(("records", "error", "record_id"), [c[1:] for c in TXT_CASES], ids=[c[0] for c in TXT_CASES])
def test_parse_sts_txt(records: list[TxtRecord], error: StsError | None, record_id: str | None) -> None:
    result = parse_sts_txt(records)
    assert (result.error, result.id) == (error, record_id), result.detail
    assert result.valid == (error is None)
    assert result.present == (error is not StsError.TXT_MISSING)


def test_sts_txt_counts_and_extensions() -> None:
    result = parse_sts_txt(["v=spf1 -all", "v=STSv1; id=9; ext=1; other=two"])
    assert (result.candidates, result.ignored) == (1, 1)
    assert result.extensions == (("ext", "1"), ("other", "two"))
    multiple = parse_sts_txt(["v=STSv1; id=1", "v=STSv1; id=2", "x"])
    assert (multiple.candidates, multiple.ignored) == (2, 1)


# --------------------------------------------------------------------------
# MTA-STS policy file (RFC 8461 §3.2)
# --------------------------------------------------------------------------

GOOD = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 86400\n"


@pytest.mark.parametrize(
    ("text", "mode", "max_age", "mx"),
    [
        (GOOD, StsMode.ENFORCE, 86400, ("mail.example.com", "*.example.net")),
        (GOOD.replace("\n", "\r\n"), StsMode.ENFORCE, 86400, ("mail.example.com", "*.example.net")),
        (GOOD.rstrip("\n"), StsMode.ENFORCE, 86400, ("mail.example.com", "*.example.net")),
        (
            "version: STSv1\nmode: testing\nmx: MAIL.Example.COM\nmax_age: 0\n",
            StsMode.TESTING,
            0,
            ("mail.example.com",),
        ),
        ("version: STSv1\nmode: none\nmax_age: 31557600\n", StsMode.NONE, MAX_AGE_LIMIT, ()),
        ("mode: enforce\nmax_age: 5\nmx: a.example\nversion: STSv1\n", StsMode.ENFORCE, 5, ("a.example",)),
        ("version:STSv1\nmode:\tenforce  \nmx: a.example\nmax_age: 00086400\n", StsMode.ENFORCE, 86400, ("a.example",)),
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmx: A.example\nmax_age: 1\n",
            StsMode.ENFORCE,
            1,
            ("a.example",),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: xn--mnchen-3ya.de\nmax_age: 1\n",
            StsMode.ENFORCE,
            1,
            ("xn--mnchen-3ya.de",),
        ),
    ],
    ids=[
        "lf",
        "crlf",
        "no final newline",
        "testing",
        "none without mx",
        "any order",
        "whitespace",
        "dup mx",
        "a-label",
    ],
)
def test_parse_policy_valid(text: str, mode: StsMode, max_age: int, mx: tuple[str, ...]) -> None:
    policy = parse_policy(text)
    assert isinstance(policy, StsPolicy), policy
    assert (policy.mode, policy.max_age, policy.mx) == (mode, max_age, mx)


def test_parse_policy_ignores_unknown_keys_and_keeps_first_duplicate() -> None:
    text = "version: STSv1\nmode: testing\nmode: enforce\nfoo.bar: some value; with=stuff\nmx: a.example\nmax_age: 7\n"
    policy = parse_policy(text.encode())
    assert isinstance(policy, StsPolicy)
    assert policy.mode is StsMode.TESTING
    assert policy.extensions == (("foo.bar", "some value; with=stuff"),)
    assert any("repeated 'mode'" in note for note in policy.notes)


def test_parse_policy_tolerates_blank_lines_and_bom_with_notes() -> None:
    policy = parse_policy("\ufeffversion: STSv1\n\nmode: none\n  \nmax_age: 1\n\n")
    assert isinstance(policy, StsPolicy)
    assert len(policy.notes) == 4  # BOM, two inner blank lines, one extra blank line at the end


def _policy(mode: str = "enforce", max_age: str = "86400", mx: Sequence[str] = ("mail.example.com",)) -> str:
    return "".join([f"version: STSv1\nmode: {mode}\n", *(f"mx: {m}\n" for m in mx), f"max_age: {max_age}\n"])


BAD_POLICIES: list[tuple[str, str | bytes]] = [
    ("empty", ""),
    ("missing version", "mode: enforce\nmx: a.example\nmax_age: 1\n"),
    ("missing mode", "version: STSv1\nmx: a.example\nmax_age: 1\n"),
    ("missing max_age", "version: STSv1\nmode: enforce\nmx: a.example\n"),
    ("other version", _policy().replace("STSv1", "STSv2")),
    ("lower-case version", _policy().replace("STSv1", "stsv1")),
    ("capitalised mode", _policy(mode="Enforce")),
    ("unknown mode", _policy(mode="reject")),
    ("enforce without mx", _policy(mx=())),
    ("testing without mx", _policy(mode="testing", mx=())),
    ("max_age too large", _policy(max_age=str(MAX_AGE_LIMIT + 1))),
    ("max_age 11 digits", _policy(max_age="12345678901")),
    ("max_age negative", _policy(max_age="-1")),
    ("max_age exponent", _policy(max_age="1e5")),
    ("max_age fullwidth digits", _policy(max_age="１２")),
    ("wildcard not leftmost", _policy(mx=["mail.*.example.com"])),
    ("partial wildcard", _policy(mx=["*mail.example.com"])),
    ("double wildcard", _policy(mx=["*.*.example.com"])),
    ("bare wildcard", _policy(mx=["*"])),
    ("underscore", _policy(mx=["mail_1.example.com"])),
    ("leading hyphen", _policy(mx=["-mail.example.com"])),
    ("empty label", _policy(mx=["mail..example.com"])),
    ("trailing dot", _policy(mx=["mail.example.com."])),
    ("U-label", _policy(mx=["münchen.de"])),
    ("label too long", _policy(mx=["a" * 64 + ".example"])),
    ("empty mx value", "version: STSv1\nmode: none\nmx:\nmax_age: 1\n"),
    ("line without colon", "version: STSv1\nmode: none\nmax_age: 1\ngarbage\n"),
    ("space before colon", "version : STSv1\nmode: none\nmax_age: 1\n"),
    ("indented line", "version: STSv1\n mode: none\nmax_age: 1\n"),
    ("json", '{"version": "STSv1", "mode": "none", "max_age": 1}'),
    ("not UTF-8", b"version: STSv1\nmode: none\nmax_age: 1\nx: \xff\n"),
    ("control character in value", "version: STSv1\nmode: none\nmax_age: 1\nx: a\x00b\n"),
]


@pytest.mark.parametrize("body", [c[1] for c in BAD_POLICIES], ids=[c[0] for c in BAD_POLICIES])
def test_parse_policy_invalid(body: str | bytes) -> None:
    result = parse_policy(body)
    assert isinstance(result, StsFailure), result
    assert result.error is StsError.POLICY_SYNTAX and result.detail


# --------------------------------------------------------------------------
# MX patterns (RFC 8461 §4.1) and evaluation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("mail.example.com", "mail.example.com", True),
        ("mail.example.com", "MAIL.EXAMPLE.COM.", True),
        ("MAIL.example.com", "mail.example.com", True),
        ("*.example.com", "mail.example.com", True),
        ("*.example.com", "Mail.Example.Com.", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "mail.example.org", False),
        ("*.example.com", "mail.notexample.com", False),
        ("*.com", "example.com", True),  # §4.1 sets no minimum label count
        ("mail.*.com", "mail.example.com", False),
        ("m*.example.com", "mail.example.com", False),
        ("*", "com", False),
        ("*.", "a.", False),
        ("mail.example.com", "mail.example.com.evil", False),
        ("mail.example.com", "xmail.example.com", False),
        ("*.example.com", "*.example.com", False),
        ("xn--mnchen-3ya.de", "münchen.de", True),  # MX host given as U-label
        ("*.xn--mnchen-3ya.de", "mx.münchen.de", True),
        ("", "mail.example.com", False),
        ("mail.example.com", "", False),
    ],
)
def test_mx_matches(pattern: str, host: str, expected: bool) -> None:
    assert mx_matches(pattern, host) is expected


def test_evaluate_enforce() -> None:
    policy = StsPolicy(StsMode.ENFORCE, 86400, ("mx1.example.com", "*.backup.example.com"))
    verdicts = evaluate(
        policy,
        ["MX1.example.com.", "b.backup.example.com", "rogue.example.org", "c.backup.example.com", "mx1.example.com"],
        {"mx1.example.com": True, "B.BACKUP.example.com.": False, "rogue.example.org": True},
    )
    got = [(v.mx_host, v.matched_pattern, v.tls_ok, v.compliant, v.would_reject) for v in verdicts]
    assert got == [
        ("mx1.example.com", "mx1.example.com", True, True, False),
        ("b.backup.example.com", "*.backup.example.com", False, False, True),
        ("rogue.example.org", None, True, False, True),  # good TLS does not help an unlisted MX
        ("c.backup.example.com", "*.backup.example.com", None, None, None),  # TLS unknown: no guess
    ]


@pytest.mark.parametrize("mode", [StsMode.TESTING, StsMode.NONE])
def test_evaluate_report_only_modes_never_reject(mode: StsMode) -> None:
    policy = StsPolicy(mode, 1, ("mx1.example.com",))
    verdicts = evaluate(policy, ["mx1.example.com", "other.example.com"], {"mx1.example.com": False})
    assert [(v.matched, v.compliant, v.would_reject) for v in verdicts] == [(True, False, False), (False, False, False)]


# --------------------------------------------------------------------------
# TLS-RPT (RFC 8460 §3)
# --------------------------------------------------------------------------

TLSRPT_CASES: list[tuple[str, list[TxtRecord], TlsRptStatus, tuple[str, ...]]] = [
    ("mailto", ["v=TLSRPTv1; rua=mailto:tlsrpt@example.com"], TlsRptStatus.VALID, ("mailto",)),
    ("https", ["v=TLSRPTv1;rua=https://reporting.example.com/v1/tlsrpt"], TlsRptStatus.VALID, ("https",)),
    (
        "both, spaced",
        ["v=TLSRPTv1; rua=mailto:a@example.com , https://r.example.com/x ;"],
        TlsRptStatus.VALID,
        ("mailto", "https"),
    ),
    ("https port and query", ["v=TLSRPTv1; rua=https://r.example.com:8443/p?a=b&c=d"], TlsRptStatus.VALID, ("https",)),
    ("https IPv6 literal", ["v=TLSRPTv1; rua=https://[2001:db8::1]/r"], TlsRptStatus.VALID, ("https",)),
    ("mailto with header", ["v=TLSRPTv1; rua=mailto:a@example.com?subject=tls"], TlsRptStatus.VALID, ("mailto",)),
    ("encoded !", ["v=TLSRPTv1; rua=mailto:a%21b@example.com"], TlsRptStatus.VALID, ("mailto",)),
    ("scheme case", ["v=TLSRPTv1; rua=MAILTO:a@example.com"], TlsRptStatus.VALID, ("mailto",)),
    ("extension", ["v=TLSRPTv1; rua=mailto:a@example.com; ext=1"], TlsRptStatus.VALID, ("mailto",)),
    ("split strings", [("v=TLSRPTv1; rua=mailto:", "a@example.com")], TlsRptStatus.VALID, ("mailto",)),
    ("other records ignored", ["v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@example.com"], TlsRptStatus.VALID, ("mailto",)),
    ("none", [], TlsRptStatus.MISSING, ()),
    ("version case", ["v=tlsrptv1; rua=mailto:a@example.com"], TlsRptStatus.MISSING, ()),
    ("version only", ["v=TLSRPTv1"], TlsRptStatus.INVALID, ()),
    ("no rua", ["v=TLSRPTv1; ruf=mailto:a@example.com"], TlsRptStatus.INVALID, ()),
    ("empty rua", ["v=TLSRPTv1; rua="], TlsRptStatus.INVALID, ()),
    ("empty URI in list", ["v=TLSRPTv1; rua=mailto:a@example.com,,https://r.example.com/"], TlsRptStatus.INVALID, ()),
    ("http scheme", ["v=TLSRPTv1; rua=http://r.example.com/x"], TlsRptStatus.INVALID, ()),
    ("no scheme", ["v=TLSRPTv1; rua=tlsrpt@example.com"], TlsRptStatus.INVALID, ()),
    ("mailto without @", ["v=TLSRPTv1; rua=mailto:tlsrpt.example.com"], TlsRptStatus.INVALID, ()),
    ("mailto empty local", ["v=TLSRPTv1; rua=mailto:@example.com"], TlsRptStatus.INVALID, ()),
    ("mailto bad domain", ["v=TLSRPTv1; rua=mailto:a@exa_mple.com"], TlsRptStatus.INVALID, ()),
    ("unencoded !", ["v=TLSRPTv1; rua=mailto:a!b@example.com"], TlsRptStatus.INVALID, ()),
    ("space in URI", ["v=TLSRPTv1; rua=https://r.example.com/a b"], TlsRptStatus.INVALID, ()),
    ("bad percent", ["v=TLSRPTv1; rua=https://r.example.com/%zz"], TlsRptStatus.INVALID, ()),
    ("https no host", ["v=TLSRPTv1; rua=https:///path"], TlsRptStatus.INVALID, ()),
    ("https bad port", ["v=TLSRPTv1; rua=https://r.example.com:99999/"], TlsRptStatus.INVALID, ()),
    ("malformed field", ["v=TLSRPTv1; rua=mailto:a@example.com; junk"], TlsRptStatus.INVALID, ()),
    (
        "two records",
        ["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1; rua=mailto:b@example.com"],
        TlsRptStatus.MULTIPLE,
        (),
    ),
]


@pytest.mark.parametrize(
    ("records", "status", "schemes"), [c[1:] for c in TLSRPT_CASES], ids=[c[0] for c in TLSRPT_CASES]
)
def test_parse_tlsrpt(records: list[TxtRecord], status: TlsRptStatus, schemes: tuple[str, ...]) -> None:
    result = parse_tlsrpt(records)
    assert result.status is status, result.detail
    if status is TlsRptStatus.VALID:
        assert result.schemes == schemes


def test_tlsrpt_reports_each_bad_uri_and_first_rua_wins() -> None:
    result = parse_tlsrpt(["v=TLSRPTv1; rua=mailto:ok@example.com,ftp://x.example.com/; rua=mailto:b@example.com"])
    assert result.status is TlsRptStatus.INVALID
    assert [(u.uri, u.valid) for u in result.rua] == [("mailto:ok@example.com", True), ("ftp://x.example.com/", False)]
    assert "ftp" in result.detail


# --------------------------------------------------------------------------
# TLSA records (RFC 6698 §2, RFC 7672 §3.1)
# --------------------------------------------------------------------------

D32 = bytes(32)
D64 = bytes(64)


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (TlsaRecord(3, 1, 1, D32), None),
        (TlsaRecord(2, 0, 2, D64), None),
        (TlsaRecord(3, 0, 0, b"x"), None),
        (TlsaRecord(0, 1, 1, D32), TlsaProblem.PKIX_USAGE),
        (TlsaRecord(1, 1, 1, D32), TlsaProblem.PKIX_USAGE),
        (TlsaRecord(4, 1, 1, D32), TlsaProblem.UNKNOWN_USAGE),
        (TlsaRecord(255, 1, 1, D32), TlsaProblem.UNKNOWN_USAGE),
        (TlsaRecord(3, 2, 1, D32), TlsaProblem.UNKNOWN_SELECTOR),
        (TlsaRecord(3, 1, 3, D32), TlsaProblem.UNKNOWN_MATCHING_TYPE),
        (TlsaRecord(3, 1, 1, bytes(31)), TlsaProblem.DIGEST_LENGTH),
        (TlsaRecord(3, 1, 2, D32), TlsaProblem.DIGEST_LENGTH),
        (TlsaRecord(3, 0, 0, b""), TlsaProblem.EMPTY_DATA),
    ],
)
def test_tlsa_problem(record: TlsaRecord, problem: TlsaProblem | None) -> None:
    assert tlsa_problem(record) is problem
    assert record.usable is (problem is None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 1 1 abcd", TlsaRecord(3, 1, 1, b"\xab\xcd")),
        ("  2 0 1 AB CD\n EF ", TlsaRecord(2, 0, 1, b"\xab\xcd\xef")),
        ("3 1 1", None),
        ("256 1 1 ab", None),
        ("3 1 1 abc", None),
        ("3 1 1 zz", None),
        ("-3 1 1 ab", None),
        ("", None),
    ],
)
def test_parse_tlsa_text(text: str, expected: TlsaRecord | None) -> None:
    result = parse_tlsa_text(text)
    if expected is None:
        assert isinstance(result, TlsaSyntaxError)
    else:
        assert result == expected
        assert parse_tlsa_text(expected.text()) == expected


def test_tlsa_name() -> None:
    assert tlsa_name("MX.Example.com.") == "_25._tcp.mx.example.com"
    assert tlsa_name("mx.münchen.de") == "_25._tcp.mx.xn--mnchen-3ya.de"


@dataclass(frozen=True)
class Pki:
    leaf: x509.Certificate
    intermediate: x509.Certificate
    root: x509.Certificate
    expired_leaf: x509.Certificate
    other_leaf: x509.Certificate
    rsa_leaf: x509.Certificate
    unrelated_ca: x509.Certificate

    def chain(self, leaf: x509.Certificate | None = None) -> list[bytes]:
        return [_der(leaf or self.leaf), _der(self.intermediate)]


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pems(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = TestCA(tmp_path_factory.mktemp("tlsa-ca"))
    leaf, intermediate = _pems(ca.issue(["mx.example.test"]).cert_file)
    expired = _pems(ca.issue(["mx.example.test"], not_after=datetime.now(UTC) - timedelta(days=2)).cert_file)[0]
    other = _pems(ca.issue(["mx.example.test"]).cert_file)[0]
    rsa_leaf = _pems(ca.issue(["mx.example.test"], key="rsa2048").cert_file)[0]
    unrelated = x509.load_pem_x509_certificate(trustme.CA().cert_pem.bytes())
    root = x509.load_der_x509_certificate(ca.root_der)
    return Pki(leaf, intermediate, root, expired, other, rsa_leaf, unrelated)


def _rec(usage: int, selector: int, mtype: int, cert: x509.Certificate) -> TlsaRecord:
    content = _der(cert) if selector == 0 else _spki(cert)
    data = {0: content, 1: hashlib.sha256(content).digest(), 2: hashlib.sha512(content).digest()}[mtype]
    return TlsaRecord(usage, selector, mtype, data)


@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_dane_ee_matches_leaf_by_every_selector_and_matching_type(pki: Pki, selector: int, mtype: int) -> None:
    result = match_tlsa([_rec(3, selector, mtype, pki.leaf)], pki.chain())
    assert (result.verdict, result.matched_depth) == (DaneVerdict.MATCH, 0)


def _self_signed_with(key: ec.EllipticCurvePrivateKey, serial: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.test")])
    start = datetime.now(UTC) - timedelta(days=1)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def test_spki_records_survive_a_reissue_with_the_same_key_full_cert_records_do_not() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    old, new = _self_signed_with(key, 1), _self_signed_with(key, 2)
    assert match_tlsa([_rec(3, 1, 1, old)], [_der(new)]).verdict is DaneVerdict.MATCH
    assert match_tlsa([_rec(3, 0, 1, old)], [_der(new)]).verdict is DaneVerdict.NO_MATCH


def test_dane_ee_other_key_and_rsa(pki: Pki) -> None:
    assert match_tlsa([_rec(3, 1, 1, pki.other_leaf)], pki.chain()).verdict is DaneVerdict.NO_MATCH
    assert match_tlsa([_rec(3, 1, 2, pki.rsa_leaf)], pki.chain(pki.rsa_leaf)).verdict is DaneVerdict.MATCH


def test_sha256_and_sha512_are_not_interchangeable(pki: Pki) -> None:
    sha256 = _rec(3, 1, 1, pki.leaf)
    assert match_tlsa([TlsaRecord(3, 1, 2, sha256.data + bytes(32))], pki.chain()).verdict is DaneVerdict.NO_MATCH
    sha512 = _rec(3, 1, 2, pki.leaf)
    assert match_tlsa([TlsaRecord(3, 1, 1, sha512.data[:32])], pki.chain()).verdict is DaneVerdict.NO_MATCH


def test_dane_ee_ignores_names_and_dates(pki: Pki) -> None:
    result = match_tlsa([_rec(3, 1, 1, pki.expired_leaf)], pki.chain(pki.expired_leaf), reference_names=["x.test"])
    assert result.verdict is DaneVerdict.MATCH and result.name_match is NameMatch.NOT_CHECKED


def test_dane_ee_only_matches_the_leaf(pki: Pki) -> None:
    assert match_tlsa([_rec(3, 1, 1, pki.intermediate)], pki.chain()).verdict is DaneVerdict.NO_MATCH


@pytest.mark.parametrize("selector", [0, 1])
def test_dane_ta_intermediate(pki: Pki, selector: int) -> None:
    result = match_tlsa([_rec(2, selector, 1, pki.intermediate)], pki.chain(), reference_names=["mx.example.test"])
    assert (result.verdict, result.matched_depth, result.name_match) == (DaneVerdict.MATCH, 1, NameMatch.SAN)


def test_dane_ta_root_only_when_presented(pki: Pki) -> None:
    record = _rec(2, 0, 1, pki.root)
    with_root = match_tlsa([record], [*pki.chain(), _der(pki.root)], reference_names=["mx.example.test"])
    assert (with_root.verdict, with_root.matched_depth) == (DaneVerdict.MATCH, 2)
    assert match_tlsa([record], pki.chain()).verdict is DaneVerdict.NO_MATCH


def test_dane_ta_never_matches_the_leaf(pki: Pki) -> None:
    assert match_tlsa([_rec(2, 1, 1, pki.leaf)], pki.chain()).verdict is DaneVerdict.NO_MATCH


def test_dane_ta_checks_the_name(pki: Pki) -> None:
    result = match_tlsa([_rec(2, 1, 1, pki.intermediate)], pki.chain(), reference_names=["mx.other.test"])
    assert (result.verdict, result.name_match) == (DaneVerdict.NAME_MISMATCH, NameMatch.MISMATCH)
    either = match_tlsa(
        [_rec(2, 1, 1, pki.intermediate)], pki.chain(), reference_names=["mx.other.test", "mx.example.test"]
    )
    assert either.verdict is DaneVerdict.MATCH


def test_dane_ta_requires_the_leaf_to_chain_to_the_anchor(pki: Pki) -> None:
    # The TLSA record names a CA certificate the server appended, but the leaf was not issued by it.
    result = match_tlsa([_rec(2, 0, 1, pki.unrelated_ca)], [*pki.chain(), _der(pki.unrelated_ca)])
    assert (result.verdict, result.matched_depth) == (DaneVerdict.TA_CHAIN_INVALID, 2)


def test_dane_ta_checks_dates(pki: Pki) -> None:
    result = match_tlsa([_rec(2, 1, 1, pki.intermediate)], pki.chain(pki.expired_leaf))
    assert result.verdict is DaneVerdict.TA_CHAIN_INVALID and "expired" in result.detail


def test_dane_ta_uses_the_given_time(pki: Pki) -> None:
    later = datetime.now(UTC) + timedelta(days=400)  # TestCA leaves live 30 days
    result = match_tlsa([_rec(2, 1, 1, pki.intermediate)], pki.chain(), now=later)
    assert result.verdict is DaneVerdict.TA_CHAIN_INVALID


def test_pkix_usages_are_flagged_and_ignored(pki: Pki) -> None:
    pkix = [_rec(0, 0, 1, pki.intermediate), _rec(1, 1, 1, pki.leaf)]
    result = match_tlsa(pkix, pki.chain())
    assert result.verdict is DaneVerdict.NO_USABLE_RECORDS and result.pkix_only
    assert [p for _, p in result.unusable] == [TlsaProblem.PKIX_USAGE, TlsaProblem.PKIX_USAGE]
    # A matching PKIX-EE record does not rescue a non-matching DANE-EE one.
    mixed = match_tlsa([_rec(1, 1, 1, pki.leaf), _rec(3, 1, 1, pki.other_leaf)], pki.chain())
    assert (mixed.verdict, mixed.usable, mixed.pkix_only) == (DaneVerdict.NO_MATCH, 1, False)


def test_match_prefers_a_match_among_several_records(pki: Pki) -> None:
    records = [_rec(3, 1, 1, pki.other_leaf), TlsaRecord(3, 1, 1, bytes(31)), _rec(3, 0, 2, pki.leaf)]
    result = match_tlsa(records, pki.chain())
    assert result.verdict is DaneVerdict.MATCH and result.matched == records[2]
    assert result.usable == 2 and len(result.unusable) == 1 and not result.pkix_only


def test_match_edge_cases(pki: Pki) -> None:
    assert match_tlsa([], pki.chain()).verdict is DaneVerdict.NO_RECORDS
    assert match_tlsa([_rec(3, 1, 1, pki.leaf)], []).verdict is DaneVerdict.NO_CERTIFICATE
    assert match_tlsa([_rec(3, 1, 1, pki.leaf)], None).verdict is DaneVerdict.NO_CERTIFICATE
    garbage = [b"not a certificate", b"\x30\x03\x02\x01\x01"]
    assert match_tlsa([_rec(3, 1, 1, pki.leaf), _rec(2, 1, 1, pki.root)], garbage).verdict is DaneVerdict.NO_MATCH
    # Full-certificate records compare raw DER, so they work even on a certificate we cannot parse.
    raw = TlsaRecord(3, 0, 1, hashlib.sha256(garbage[0]).digest())
    assert match_tlsa([raw], garbage).verdict is DaneVerdict.MATCH


@pytest.mark.parametrize(
    ("answered", "ad", "ra", "do_echoed", "expected"),
    [
        (True, True, True, True, DnssecStatus.AUTHENTICATED),
        (True, False, True, True, DnssecStatus.NOT_AUTHENTICATED),
        (True, True, False, True, DnssecStatus.UNKNOWN),  # authoritative-only: AD is not a validation
        (True, False, False, True, DnssecStatus.UNKNOWN),
        (True, True, True, False, DnssecStatus.UNKNOWN),  # DO not echoed: not DNSSEC-aware
        (True, False, True, False, DnssecStatus.UNKNOWN),
        (False, True, True, True, DnssecStatus.UNKNOWN),  # SERVFAIL/timeout says nothing
    ],
)
def test_dnssec_status(answered: bool, ad: bool, ra: bool, do_echoed: bool, expected: DnssecStatus) -> None:
    assert dnssec_status(answered=answered, ad=ad, ra=ra, do_echoed=do_echoed) is expected


# --------------------------------------------------------------------------
# Parsers never raise (hypothesis)
# --------------------------------------------------------------------------

txt_records = st.lists(
    st.one_of(
        st.text(max_size=120),
        st.binary(max_size=120),
        st.lists(st.one_of(st.text(max_size=60), st.binary(max_size=60)), max_size=4),
        st.builds(lambda s: "v=STSv1" + s, st.text(max_size=80)),
        st.builds(lambda s: "v=TLSRPTv1" + s, st.text(max_size=80)),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(txt_records)
def test_txt_parsers_never_raise(records: list[TxtRecord]) -> None:
    sts = parse_sts_txt(records)
    assert (sts.error is None) == (sts.id is not None)
    rpt = parse_tlsrpt(records)
    assert rpt.valid == (rpt.status is TlsRptStatus.VALID)


policy_lines = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(["version: STSv1", "mode: enforce", "mode: none", "max_age: 1", "mx: a.example", "mx: *.b.c"]),
        st.builds(lambda k, v: f"{k}: {v}", st.sampled_from(["version", "mode", "mx", "max_age", "x"]), st.text()),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(policy_lines, st.sampled_from(["\n", "\r\n"]))
def test_parse_policy_never_raises(lines: list[str], newline: str) -> None:
    result = parse_policy(newline.join(lines))
    assert isinstance(result, StsPolicy | StsFailure)
    if isinstance(result, StsPolicy):
        assert 0 <= result.max_age <= MAX_AGE_LIMIT
        assert result.mx or result.mode is StsMode.NONE


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_parse_policy_bytes_never_raises(body: bytes) -> None:
    assert isinstance(parse_policy(body), StsPolicy | StsFailure)


host_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(StsMode)),
    st.integers(0, MAX_AGE_LIMIT),
    st.lists(st.tuples(st.booleans(), st.lists(host_label, min_size=1, max_size=4)), min_size=1, max_size=4),
)
def test_generated_valid_policy_round_trips(mode: StsMode, max_age: int, mx: list[tuple[bool, list[str]]]) -> None:
    patterns = [("*." if wild else "") + ".".join(labels) for wild, labels in mx]
    policy = parse_policy(_policy(mode.value, str(max_age), patterns))
    assert isinstance(policy, StsPolicy)
    assert (policy.mode, policy.max_age, policy.mx) == (mode, max_age, tuple(dict.fromkeys(patterns)))
    for wild, labels in mx:
        host = "x." + ".".join(labels) if wild else ".".join(labels)
        assert any(mx_matches(p, host) for p in policy.mx)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_mx_matches_never_raises(pattern: str, host: str) -> None:
    assert isinstance(mx_matches(pattern, host), bool)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.from_regex(r"\s*\d{1,3} \d{1,3} \d{1,3} [0-9a-f ]{0,20}", fullmatch=True)))
def test_parse_tlsa_text_never_raises(text: str) -> None:
    result = parse_tlsa_text(text)
    assert isinstance(result, TlsaRecord | TlsaSyntaxError)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.builds(TlsaRecord, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=70)),
        max_size=4,
    ),
    st.lists(st.binary(max_size=200), max_size=3),
)
def test_match_tlsa_never_raises(records: list[TlsaRecord], chain: list[bytes]) -> None:
    assert match_tlsa(records, chain).verdict in set(DaneVerdict)


# --------------------------------------------------------------------------
# Would a DANE sender deliver? (RFC 7672)
# --------------------------------------------------------------------------

_A, _NA, _UNK, _BOGUS = (DnssecStatus.AUTHENTICATED, DnssecStatus.NOT_AUTHENTICATED, DnssecStatus.UNKNOWN,
                         DnssecStatus.BOGUS)


def _link(verdict: DaneVerdict | None, dnssec: DnssecStatus | None, *, tested: bool = True, tls_ok: bool = True,
          host: str = "mx1.example") -> DaneLink:
    return DaneLink(host, "192.0.2.1", verdict, dnssec, tested, tls_ok)


@pytest.mark.parametrize(
    ("links", "delivery", "findings"),
    [
        ([_link(DaneVerdict.MATCH, _A)], DaneDelivery.YES, []),
        ([_link(DaneVerdict.NO_MATCH, _A)], DaneDelivery.NO, [DaneFinding.TLSA_NO_MATCH]),
        ([_link(DaneVerdict.NAME_MISMATCH, _A)], DaneDelivery.NO, [DaneFinding.TLSA_NO_MATCH]),
        ([_link(DaneVerdict.NO_USABLE_RECORDS, _A)], DaneDelivery.YES, [DaneFinding.TLSA_UNUSABLE]),
        ([_link(DaneVerdict.NO_USABLE_RECORDS, _A, tls_ok=False)], DaneDelivery.NO,
         [DaneFinding.TLSA_STARTTLS_FAILED]),
        ([_link(DaneVerdict.NO_CERTIFICATE, _A, tls_ok=False)], DaneDelivery.NO, [DaneFinding.TLSA_STARTTLS_FAILED]),
        ([_link(DaneVerdict.NO_MATCH, _NA)], DaneDelivery.NOT_DANE, [DaneFinding.TLSA_UNSIGNED]),
        ([_link(DaneVerdict.NO_MATCH, _UNK)], DaneDelivery.UNKNOWN, []),
        ([_link(DaneVerdict.BOGUS, _BOGUS)], DaneDelivery.NO, [DaneFinding.TLSA_BOGUS]),
        ([_link(DaneVerdict.NO_RECORDS, _A)], DaneDelivery.NOT_DANE, []),
        ([_link(DaneVerdict.LOOKUP_FAILED, _UNK)], DaneDelivery.UNKNOWN, []),
        ([_link(None, None)], DaneDelivery.UNKNOWN, []),
        ([_link(DaneVerdict.MATCH, _A, tested=False)], DaneDelivery.UNKNOWN, []),
        # one MX refused, the other reachable: mail arrives through the other
        ([_link(DaneVerdict.NO_MATCH, _A), _link(DaneVerdict.NO_RECORDS, _A, host="mx2.example")],
         DaneDelivery.PARTIAL, [DaneFinding.TLSA_NO_MATCH]),
        ([_link(DaneVerdict.NO_MATCH, _A), _link(DaneVerdict.MATCH, _A, tested=False, host="mx2.example")],
         DaneDelivery.UNKNOWN, [DaneFinding.TLSA_NO_MATCH]),
        ([], DaneDelivery.UNKNOWN, []),
    ],
)
def test_dane_sender_verdict(links: list[DaneLink], delivery: DaneDelivery, findings: list[DaneFinding]) -> None:
    got = dane_sender_verdict(links)
    assert got.delivery is delivery, got.reasons
    assert [f for f, _ in got.findings] == findings
    assert all(r.split(": ", 1)[0].replace("_", "").isalpha() for r in got.reasons)


def test_bogus_mx_means_no_delivery() -> None:
    got = mx_bogus_verdict("example.com", "MX example.com: DNSSEC validation failed")
    assert got.delivery is DaneDelivery.NO and got.reasons[0].startswith("mx_bogus: example.com")
