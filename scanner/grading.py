"""PURE A+..F grading of a domain's inbound mail TLS, by worst MX address (no I/O, no clock).

The rubric is one table (``_MX_RULES`` and ``_DOMAIN_RULES`` below, exposed read-only as ``RUBRIC``):
every deduction is a named rule with a stable ``code``, a ``severity``, an optional ``cap`` (the best
grade still possible once the rule fires) and ``points`` (deducted from 100). A grade therefore
explains itself: it is the list of rules that fired. Change any rule → bump ``GRADING_VERSION``.
``schemas/grading.md`` documents the same table (a unit test keeps the two identical).

How a grade is computed (design reasons in schemas/grading.md):

1. An MX address that was not tested (timeout, throttled, unreachable...) is not graded: it neither
   passes nor fails (``MxGrade.grade is None``).
2. Tested without a working STARTTLS → F (``no_starttls``), nothing else is looked at.
3. Otherwise score = 100 − Σ points → A ≥ 95, B ≥ 80, C ≥ 65, D ≥ 50, else E; then the lowest cap of
   the rules that fired. F is reserved for "no TLS at all": any TLS beats plaintext for opportunistic
   SMTP (RFC 7435 §1: keep "weak TLS" apart from "no TLS"), so a server that
   does TLS never falls below E.
4. A rule whose input is unknown (None / not enumerated) does not fire: only observations deduct.
   An "info" hit records what was unknown, and blocks A+ (A+ asserts that everything is right).
5. The best an MX can get is A. The domain takes its worst tested MX, applies domain caps (a broken
   enforced MTA-STS policy), and is promoted to A+ when every tested MX is a clean A (no hit at all)
   and an enforced MTA-STS policy covers and passes every MX, or DANE validates for every MX.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Final

from scanner.certs import KeyType
from scanner.status import StsMode
from scanner.tls.ciphers import WeakClass
from scanner.tls.enumeration import POSTURE_VERSIONS, VersionVerdict
from scanner.tls.groups import GroupClass, group_class, group_code
from scanner.tls.versions import VERSION_NAMES, TlsVersion

__all__ = [
    "GRADING_VERSION",
    "RECOMMENDATIONS",
    "RUBRIC",
    "TLS_VERSION_NAMES",
    "DomainGrade",
    "Grade",
    "MxFacts",
    "MxGrade",
    "PolicyFacts",
    "Recommendation",
    "RecommendationCode",
    "Rule",
    "RuleCode",
    "RuleHit",
    "Scope",
    "Severity",
    "forced_tls",
    "grade_domain",
    "grade_for_score",
    "grade_mx",
    "render_recommendations_table",
    "render_rubric_table",
    "version_facts",
    "worst_grade",
]

GRADING_VERSION: Final = "2026.2"

SSL3: Final = VERSION_NAMES[TlsVersion.SSL3]
TLS10: Final = VERSION_NAMES[TlsVersion.TLS10]
TLS11: Final = VERSION_NAMES[TlsVersion.TLS11]
TLS12: Final = VERSION_NAMES[TlsVersion.TLS12]
TLS13: Final = VERSION_NAMES[TlsVersion.TLS13]
TLS_VERSION_NAMES: Final = (SSL3, TLS10, TLS11, TLS12, TLS13)
_MODERN: Final = frozenset({TLS12, TLS13})  # RFC 9325 §3.1.1: TLS 1.2 MUST be supported
_TLS10_OR_LATER: Final = frozenset({TLS10, TLS11, TLS12, TLS13})


class Grade(StrEnum):
    """Letter grades, best first. Compare with ``rank`` (the string order is not the grade order)."""

    A_PLUS = "A+"
    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"
    F = "F"

    @property
    def rank(self) -> int:
        """6 for A+ down to 0 for F: higher is better."""
        return _RANKS[self]

    @classmethod
    def from_rank(cls, rank: int) -> Grade:
        for grade, value in _RANKS.items():
            if value == rank:
                return grade
        raise ValueError(f"no grade has rank {rank}")

    def better_than(self, other: Grade) -> bool:
        return self.rank > other.rank

    def at_most(self, cap: Grade | None) -> Grade:
        """This grade limited by ``cap`` (None = no limit)."""
        return self if cap is None or self.rank <= cap.rank else cap


_RANKS: Final[Mapping[Grade, int]] = MappingProxyType({g: len(Grade) - 1 - i for i, g in enumerate(Grade)})


def worst_grade(grades: Iterable[Grade]) -> Grade:
    """The lowest of ``grades``; ValueError when there is none (there is no neutral grade)."""
    return min(grades, key=lambda g: g.rank)


class Severity(str, Enum):
    CRITICAL = "critical"  # caps at F
    HIGH = "high"  # caps at C
    MEDIUM = "medium"  # points (15-25), or a domain cap at B
    LOW = "low"  # points (10)
    INFO = "info"  # no effect on the letter; explains what was unknown or absent


class Scope(str, Enum):
    MX = "mx"  # judged per MX address from MxFacts
    DOMAIN = "domain"  # judged once per domain from PolicyFacts / the set of MX addresses


class RuleCode(StrEnum):
    """The rubric's rule codes (``mx.grade_rules``, ``domains.grade_rules``): a closed set, one rule each
    (``RUBRIC``; what each means and why: schemas/grading.md)."""

    NO_STARTTLS = "no_starttls"
    INCONSISTENT_ANSWERS = "inconsistent_answers"
    NO_TLS12_OR_TLS13 = "no_tls12_or_tls13"
    SSLV3_ENABLED = "sslv3_enabled"
    CERT_EXPIRED = "cert_expired"
    CERT_SELF_SIGNED = "cert_self_signed"
    CERT_UNTRUSTED = "cert_untrusted"
    NO_NIST_R1_SUITE = "no_nist_r1_suite"
    INSECURE_SUITES = "insecure_suites"
    RC4_MD5_SUITES = "rc4_md5_suites"
    PLAINTEXT_AFTER_STARTTLS = "plaintext_after_starttls"
    SMALL_KEY = "small_key"
    MD5_SIGNATURE = "md5_signature"
    TLS_COMPRESSION = "tls_compression"
    DH_GROUP_BELOW_2048 = "dh_group_below_2048"
    DH_COMMON_1024_PRIME = "dh_common_1024_prime"
    ONLY_DEPRECATED_CURVES = "only_deprecated_curves"
    NO_SECURE_RENEGOTIATION = "no_secure_renegotiation"
    TRIPLE_DES_IDEA_SUITES = "3des_idea_suites"
    TLS10_OR_TLS11_ENABLED = "tls10_or_tls11_enabled"
    NO_NIST_R2_SUITE = "no_nist_r2_suite"
    CERT_NAME_MISMATCH = "cert_name_mismatch"
    SHA1_SIGNATURE = "sha1_signature"
    NO_EXTENDED_MASTER_SECRET = "no_extended_master_secret"
    VERSIONS_UNKNOWN = "versions_unknown"
    SUITES_UNKNOWN = "suites_unknown"
    CERTIFICATE_UNKNOWN = "certificate_unknown"
    MX_UNTESTED = "mx_untested"
    NO_MX_TESTED = "no_mx_tested"
    NO_MTA_STS = "no_mta_sts"
    MTA_STS_TESTING = "mta_sts_testing"
    MTA_STS_MODE_NONE = "mta_sts_mode_none"
    MTA_STS_MX_NOT_COVERED = "mta_sts_mx_not_covered"
    MTA_STS_MX_FAIL = "mta_sts_mx_fail"
    NO_TLSRPT = "no_tlsrpt"
    DANE_TLSA_NO_MATCH = "dane_tlsa_no_match"
    DANE_STARTTLS_FAILED = "dane_starttls_failed"
    DANE_TLSA_BOGUS = "dane_tlsa_bogus"
    DANE_TLSA_UNUSABLE = "dane_tlsa_unusable"
    DANE_TLSA_UNSIGNED = "dane_tlsa_unsigned"


class RecommendationCode(StrEnum):
    """What the rubric recommends (``domains.recommendations``): a closed set; each code's text is in
    ``RECOMMENDATIONS`` (schemas/grading.md §6)."""

    USE_TRUSTED_CERTIFICATE = "use_trusted_certificate"
    REISSUE_SHA2_CERTIFICATE = "reissue_sha2_certificate"
    ENABLE_STARTTLS = "enable_starttls"
    ENABLE_TLS12_TLS13 = "enable_tls12_tls13"
    DISABLE_SSLV3 = "disable_sslv3"
    RENEW_CERTIFICATE = "renew_certificate"
    ENABLE_NIST_SUITES = "enable_nist_suites"
    DISABLE_INSECURE_SUITES = "disable_insecure_suites"
    DISABLE_RC4_MD5_SUITES = "disable_rc4_md5_suites"
    FIX_STARTTLS_INJECTION = "fix_starttls_injection"
    REPLACE_SMALL_KEY = "replace_small_key"
    DISABLE_TLS_COMPRESSION = "disable_tls_compression"
    USE_2048_BIT_DH = "use_2048_bit_dh"
    ENABLE_MODERN_CURVES = "enable_modern_curves"
    ENABLE_SECURE_RENEGOTIATION = "enable_secure_renegotiation"
    DISABLE_3DES_IDEA_SUITES = "disable_3des_idea_suites"
    DISABLE_TLS10_TLS11 = "disable_tls10_tls11"
    ENABLE_FORWARD_SECRET_AES = "enable_forward_secret_aes"
    FIX_CERTIFICATE_NAME = "fix_certificate_name"
    ENABLE_EXTENDED_MASTER_SECRET = "enable_extended_master_secret"
    PUBLISH_MTA_STS_ENFORCE = "publish_mta_sts_enforce"
    SWITCH_MTA_STS_TO_ENFORCE = "switch_mta_sts_to_enforce"
    FIX_MTA_STS_MX_PATTERNS = "fix_mta_sts_mx_patterns"
    FIX_MX_FOR_MTA_STS = "fix_mx_for_mta_sts"
    PUBLISH_TLSRPT = "publish_tlsrpt"
    FIX_TLSA_RECORDS = "fix_tlsa_records"
    FIX_STARTTLS_FOR_DANE = "fix_starttls_for_dane"
    FIX_DNSSEC_SIGNATURES = "fix_dnssec_signatures"
    USE_DANE_EE_OR_TA_RECORDS = "use_dane_ee_or_ta_records"
    SIGN_ZONE_FOR_DANE = "sign_zone_for_dane"


@dataclass(frozen=True, slots=True)
class Recommendation:
    code: RecommendationCode
    text: str


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the rubric."""

    code: RuleCode
    scope: Scope
    severity: Severity
    cap: Grade | None  # best grade still possible when the rule fires
    points: int  # deducted from 100 (MX rules only; domain rules act through caps)
    summary: str  # human meaning, also the start of every hit's text
    basis: str  # why (standard / reference)
    recommendation: Recommendation | None


@dataclass(frozen=True, slots=True)
class RuleHit:
    code: RuleCode
    severity: Severity
    cap: Grade | None
    points: int
    text: str


@dataclass(frozen=True, slots=True)
class MxFacts:
    """One MX address as the scanner saw it.

    ``tls_versions`` holds accepted versions (names from ``TLS_VERSION_NAMES``); a version present is
    an observation even when ``versions_known`` is False. ``weak_classes`` holds ``WeakClass`` values
    (or members; normalised to values). ``cert_trusted`` is "chains to a trusted root", judged apart
    from the validity period: ``certs.TrustStatus.EXPIRED`` maps to trusted=True, expired=True.
    None means unknown: a rule never fires on an unknown.
    """

    mx_host: str
    address: str
    tested: bool  # the probe gave a definitive STARTTLS answer (False: timeout/throttled/unreachable...)
    starttls: bool  # STARTTLS advertised and our handshake completed
    tls_versions: frozenset[str]
    versions_known: bool  # enumeration ran and answered every version question
    weak_classes: frozenset[str]
    nist_r1: bool | None
    nist_r2: bool | None
    cert_trusted: bool | None
    cert_expired: bool | None
    cert_name_valid: bool | None
    cert_self_signed: bool | None
    cert_key_bits: int | None
    cert_key_type: str | None  # certs.KeyType value ("rsa", "ec", "ed25519", "ed448", "dsa", "other")
    cert_signature_algorithm: str | None  # OpenSSL-style name, e.g. "sha256WithRSAEncryption"
    plaintext_after_starttls: bool
    # Facts two sessions of the address answered differently (scanner.consistency); the other fields
    # already hold the worst answer seen.
    inconsistent: frozenset[str] = frozenset()
    # Key exchange and protocol hygiene (scanner.tls.enumeration.KeyExchangeResult); None = not observed.
    dh_bits: int | None = None  # smallest finite-field DH prime seen
    dh_group: str | None = None  # its published name (scanner.tls.groups), None when not a published prime
    kx_groups: frozenset[str] = frozenset()  # IANA group names accepted
    kx_groups_complete: bool | None = None
    secure_renegotiation: bool | None = None
    tls_compression: bool | None = None
    extended_master_secret: bool | None = None

    def __post_init__(self) -> None:
        # Unknown names are an upstream bug: fail loudly rather than grade around them.
        unknown = set(self.tls_versions) - set(TLS_VERSION_NAMES)
        if unknown:
            raise ValueError(f"unknown TLS version names {sorted(unknown)}")
        object.__setattr__(self, "weak_classes", frozenset(WeakClass(c).value for c in self.weak_classes))

    @property
    def label(self) -> str:
        return f"{self.mx_host} [{self.address}]"


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """The domain's policies. None = no valid policy / could not be determined."""

    mta_sts_mode: str | None  # "enforce" | "testing" | "none" (StsMode values), None: no valid policy
    mta_sts_matches_all_mx: bool | None  # every MX host matches a policy mx pattern
    mta_sts_all_mx_pass: bool | None  # every MX would pass an enforcing sender (STARTTLS + cert)
    dane_valid: bool | None  # every MX has usable TLSA records that match, DNSSEC-authenticated
    tlsrpt_valid: bool | None
    # DANE defects as (finding code, "host [address]: why"); codes are policy.dane.DaneFinding values.
    dane_findings: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.mta_sts_mode is not None:
            object.__setattr__(self, "mta_sts_mode", StsMode(self.mta_sts_mode).value)


@dataclass(frozen=True, slots=True)
class MxGrade:
    grade: Grade | None  # None: the address was not tested, so it is not graded
    hits: tuple[RuleHit, ...]
    recommendations: tuple[Recommendation, ...]


@dataclass(frozen=True, slots=True)
class DomainGrade:
    grade: Grade | None  # None when no MX address could be tested
    worst_mx: str | None  # host name of the worst tested MX address (first in input order on ties)
    hits: tuple[RuleHit, ...]  # every MX hit (text prefixed "host [address]: ") then domain hits
    recommendations: tuple[Recommendation, ...]  # one per code; MX ones name the affected hosts
    forced_tls_safe: bool | None
    forced_tls_reasons: tuple[str, ...]
    grading_version: str


# --------------------------------------------------------------------------
# Facts derived from scanner types
# --------------------------------------------------------------------------


def version_facts(versions: Mapping[TlsVersion, VersionVerdict]) -> tuple[frozenset[str], bool]:
    """``(tls_versions, versions_known)`` from ``EnumerationResult.versions``.

    Known only when every posture version got a definite accept/refuse: an SSLv3 probe that timed
    out leaves "is SSLv3 on?" open even if TLS 1.3 answered.
    """
    accepted = frozenset(
        VERSION_NAMES[v] for v, verdict in versions.items() if verdict.supported and v in VERSION_NAMES
    )
    known = all(versions.get(v, VersionVerdict.UNTESTED).supported is not None for v in POSTURE_VERSIONS)
    return accepted, known


def _nist_suite(facts: MxFacts) -> bool | None:
    """Does the server accept a NIST SP 800-52 suite (r1 list, or an r2 TLS 1.3 suite)?

    r1 (2014) predates TLS 1.3, so the enumeration reports nist_r1=False for a TLS 1.3-only server;
    r2 supersedes r1 and every r2 suite is either in r1 (≤1.2) or a TLS 1.3 AES suite. So r2 accepted
    ⇒ an approved suite is available (NIST SP 800-52r2 §3.3.1).
    """
    if facts.nist_r1 or facts.nist_r2:
        return True
    no_tls13 = facts.versions_known and TLS13 not in facts.tls_versions
    if facts.nist_r1 is False and (facts.nist_r2 is False or no_tls13):
        return False
    return None


# --------------------------------------------------------------------------
# The rubric: MX rules (checks return a detail string when the rule fires)
# --------------------------------------------------------------------------

_INSECURE: Final = frozenset(
    c.value
    for c in (WeakClass.NULL, WeakClass.ANON, WeakClass.EXPORT, WeakClass.DES, WeakClass.RC2, WeakClass.LOW_BITS)
)
_RC4_MD5: Final = frozenset({WeakClass.RC4.value, WeakClass.MD5.value})
_BLOCK64: Final = frozenset({WeakClass.TRIPLE_DES.value, WeakClass.IDEA.value})
# RFC 9325 §4.1 / SP 800-57: 112-bit security = RSA/DSA 2048, EC 224.
_MIN_KEY_BITS: Final[Mapping[str, int]] = MappingProxyType(
    {KeyType.RSA.value: 2048, KeyType.DSA.value: 2048, KeyType.EC.value: 224}
)

MxCheck = Callable[[MxFacts], str | None]


def _listed(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))


def _classes(facts: MxFacts, tier: frozenset[str]) -> str | None:
    found = facts.weak_classes & tier
    return f"accepts {_listed(found)} suites" if found else None


def _check_no_modern(f: MxFacts) -> str | None:
    if not f.versions_known or f.tls_versions & _MODERN:
        return None
    return f"accepted versions: {_listed(f.tls_versions) or 'none identified'}"


def _check_sslv3(f: MxFacts) -> str | None:
    return "SSLv3 accepted" if SSL3 in f.tls_versions else None


def _check_legacy_tls(f: MxFacts) -> str | None:
    found = f.tls_versions & {TLS10, TLS11}
    return f"accepts {_listed(found)}" if found else None


def _check_expired(f: MxFacts) -> str | None:
    return "certificate expired or not yet valid" if f.cert_expired is True else None


def _check_self_signed(f: MxFacts) -> str | None:
    return "self-signed certificate" if f.cert_self_signed is True and f.cert_trusted is not True else None


def _check_untrusted(f: MxFacts) -> str | None:
    if f.cert_trusted is False and f.cert_self_signed is not True:
        return "chain does not lead to a trusted root"
    return None


def _check_name(f: MxFacts) -> str | None:
    return f"certificate does not name {f.mx_host}" if f.cert_name_valid is False else None


def _check_nist_r1(f: MxFacts) -> str | None:
    return "no SP 800-52r1 suite and no SP 800-52r2 TLS 1.3 suite accepted" if _nist_suite(f) is False else None


def _check_nist_r2(f: MxFacts) -> str | None:
    return "no SP 800-52r2 suite accepted (no ECDHE/DHE with AES)" if f.nist_r2 is False else None


def _check_small_key(f: MxFacts) -> str | None:
    key_type = (f.cert_key_type or "").lower()
    minimum = _MIN_KEY_BITS.get(key_type)
    if minimum is None or f.cert_key_bits is None or f.cert_key_bits >= minimum:
        return None
    return f"{key_type.upper()} key of {f.cert_key_bits} bits (minimum {minimum})"


def _signature_has(f: MxFacts, *digests: str) -> str | None:
    name = (f.cert_signature_algorithm or "").lower()
    return f"signed with {f.cert_signature_algorithm}" if any(d in name for d in digests) else None


def _check_plaintext(f: MxFacts) -> str | None:
    if not f.plaintext_after_starttls:
        return None
    return "server sent unprotected bytes between its 220 to STARTTLS and the handshake"


def _check_inconsistent(f: MxFacts) -> str | None:
    if not f.inconsistent:
        return None
    return f"sessions disagreed on {_listed(sorted(f.inconsistent))}; graded on the worst answer seen"


def _check_dh_small(f: MxFacts) -> str | None:
    if f.dh_bits is None or f.dh_bits >= 2048:
        return None
    return f"DHE with a {f.dh_bits}-bit prime" + (f" ({f.dh_group})" if f.dh_group else "")


def _check_dh_common(f: MxFacts) -> str | None:
    # A published prime of 1024 bits or less: one precomputation breaks every server using it (Logjam).
    if f.dh_group is None or f.dh_bits is None or f.dh_bits > 1024:
        return None
    return f"DHE with the published {f.dh_bits}-bit prime {f.dh_group}"


def _check_only_deprecated_curves(f: MxFacts) -> str | None:
    if not f.kx_groups_complete or not f.kx_groups:
        return None
    if any(group_class(group_code(g)) is not GroupClass.DEPRECATED for g in f.kx_groups):
        return None
    return f"only deprecated curves accepted: {_listed(f.kx_groups)}"


def _check_renegotiation(f: MxFacts) -> str | None:
    return "no renegotiation_info in the ServerHello" if f.secure_renegotiation is False else None


def _check_compression(f: MxFacts) -> str | None:
    return "the server chose TLS compression (DEFLATE)" if f.tls_compression else None


def _check_ems(f: MxFacts) -> str | None:
    return "extended_master_secret not agreed" if f.extended_master_secret is False else None


def _check_versions_unknown(f: MxFacts) -> str | None:
    return None if f.versions_known else "protocol versions not (fully) enumerated"


def _check_suites_unknown(f: MxFacts) -> str | None:
    return "NIST suite membership not determined" if _nist_suite(f) is None or f.nist_r2 is None else None


def _check_cert_unknown(f: MxFacts) -> str | None:
    missing = [
        name
        for name, value in (
            ("trust", f.cert_trusted), ("expiry", f.cert_expired), ("name", f.cert_name_valid),
            ("key type", f.cert_key_type), ("signature", f.cert_signature_algorithm),
        )
        if value is None
    ]
    if f.cert_key_bits is None and (f.cert_key_type or "").lower() in _MIN_KEY_BITS:
        missing.append("key size")
    return f"unknown: {', '.join(missing)}" if missing else None


def _rec(code: RecommendationCode, text: str) -> Recommendation:
    return Recommendation(code, text)


_REC_TRUSTED_CERT: Final = _rec(
    RecommendationCode.USE_TRUSTED_CERTIFICATE,
    "Install a certificate from a publicly trusted CA (e.g. ACME/Let's Encrypt) with the full chain; "
    "MTA-STS senders refuse self-signed or unknown-issuer certificates.",
)
_REC_SHA2_CERT: Final = _rec(
    RecommendationCode.REISSUE_SHA2_CERTIFICATE, "Reissue the certificate with a SHA-256 (or stronger) signature."
)

_NO_STARTTLS: Final = Rule(
    RuleCode.NO_STARTTLS, Scope.MX, Severity.CRITICAL, Grade.F, 100,
    "No STARTTLS", "RFC 3207; mail to this address travels in cleartext",
    _rec(RecommendationCode.ENABLE_STARTTLS, "Enable STARTTLS (RFC 3207) with a working TLS 1.2/1.3 configuration."),
)

_INCONSISTENT: Final = Rule(
    RuleCode.INCONSISTENT_ANSWERS, Scope.MX, Severity.INFO, None, 0,
    "Sessions to this address answered differently (certificate, STARTTLS or a version)",
    "load-balanced backends that disagree; graded on the worst answer seen; blocks A+", None,
)

_MX_RULES: Final[tuple[tuple[Rule, MxCheck], ...]] = (
    (Rule(RuleCode.NO_TLS12_OR_TLS13, Scope.MX, Severity.HIGH, Grade.C, 25,
          "Neither TLS 1.2 nor TLS 1.3 accepted", "RFC 9325 §3.1.1 (TLS 1.2 MUST); SP 800-52r2 §3.1",
          _rec(RecommendationCode.ENABLE_TLS12_TLS13,
               "Enable TLS 1.2 and TLS 1.3 (upgrade the TLS library if needed).")),
     _check_no_modern),
    (Rule(RuleCode.SSLV3_ENABLED, Scope.MX, Severity.HIGH, Grade.C, 20,
          "SSLv3 accepted", "RFC 7568 (MUST NOT); POODLE",
          _rec(RecommendationCode.DISABLE_SSLV3, "Disable SSLv3 (and SSLv2).")),
     _check_sslv3),
    (Rule(RuleCode.CERT_EXPIRED, Scope.MX, Severity.HIGH, Grade.C, 20,
          "Certificate expired", "RFC 5280 §4.1.2.5; RFC 8461 §4.2",
          _rec(RecommendationCode.RENEW_CERTIFICATE, "Renew the certificate and automate renewal.")),
     _check_expired),
    (Rule(RuleCode.CERT_SELF_SIGNED, Scope.MX, Severity.HIGH, Grade.C, 20,
          "Self-signed certificate", "RFC 8461 §4.2 (PKIX validation); RFC 5280", _REC_TRUSTED_CERT),
     _check_self_signed),
    (Rule(RuleCode.CERT_UNTRUSTED, Scope.MX, Severity.HIGH, Grade.C, 20,
          "Certificate not trusted (unknown issuer or broken chain)", "RFC 8461 §4.2; RFC 5280 §6",
          _REC_TRUSTED_CERT),
     _check_untrusted),
    (Rule(RuleCode.NO_NIST_R1_SUITE, Scope.MX, Severity.HIGH, Grade.C, 15,
          "No NIST-approved suite", "NIST SP 800-52r1/r2 §3.3.1",
          _rec(RecommendationCode.ENABLE_NIST_SUITES,
               "Enable ECDHE with AES-GCM suites (TLS 1.2) and TLS 1.3 AES-GCM suites.")),
     _check_nist_r1),
    (Rule(RuleCode.INSECURE_SUITES, Scope.MX, Severity.MEDIUM, None, 25,
          "Insecure suites accepted (NULL, anonymous, export, DES, RC2, <112-bit)",
          "RFC 9325 §4.1 (MUST NOT); RFC 4346; RFC 5469",
          _rec(RecommendationCode.DISABLE_INSECURE_SUITES,
               "Disable NULL, anonymous (aNULL), EXPORT, DES and RC2 suites.")),
     lambda f: _classes(f, _INSECURE)),
    (Rule(RuleCode.RC4_MD5_SUITES, Scope.MX, Severity.MEDIUM, None, 15,
          "RC4 or MD5-HMAC suites accepted", "RFC 7465 (RC4 MUST NOT); RFC 9325 §4.1",
          _rec(RecommendationCode.DISABLE_RC4_MD5_SUITES, "Disable RC4 and MD5-based suites.")),
     lambda f: _classes(f, _RC4_MD5)),
    (Rule(RuleCode.PLAINTEXT_AFTER_STARTTLS, Scope.MX, Severity.MEDIUM, None, 15,
          "Plaintext after STARTTLS (injection risk)", "RFC 3207 §4.2 (discard pre-TLS state); CVE-2011-0411 class",
          _rec(RecommendationCode.FIX_STARTTLS_INJECTION,
               "Upgrade the MTA (or remove the middlebox) so that nothing is sent or kept between the 220 to "
               "STARTTLS and the TLS handshake.")),
     _check_plaintext),
    (Rule(RuleCode.SMALL_KEY, Scope.MX, Severity.MEDIUM, None, 15,
          "Certificate key too small (RSA/DSA <2048, EC <224 bits)", "RFC 9325 §4.5; SP 800-52r2 (112-bit security)",
          _rec(RecommendationCode.REPLACE_SMALL_KEY, "Issue a new certificate with an RSA 2048+ or ECDSA P-256+ key.")),
     _check_small_key),
    (Rule(RuleCode.MD5_SIGNATURE, Scope.MX, Severity.MEDIUM, None, 15,
          "Certificate signed with MD5 (or MD2/MD4)", "RFC 6151; RFC 9155; CA/B Forum Baseline Requirements",
          _REC_SHA2_CERT),
     lambda f: _signature_has(f, "md5", "md2", "md4")),
    (Rule(RuleCode.TLS_COMPRESSION, Scope.MX, Severity.MEDIUM, None, 20,
          "TLS compression on (CRIME)", "RFC 9325 §3.3 (SHOULD disable); NIST SP 800-52r2 (null compression "
          "only); BSI TR-02102-2; NCSC-NL TLS guidelines v2.1 (TLS compression: insufficient)",
          _rec(RecommendationCode.DISABLE_TLS_COMPRESSION,
               "Disable TLS-level compression (OpenSSL: SSL_OP_NO_COMPRESSION; "
               "upgrade the TLS library).")),
     _check_compression),
    (Rule(RuleCode.DH_GROUP_BELOW_2048, Scope.MX, Severity.MEDIUM, None, 15,
          "Finite-field DH group below 2048 bits", "RFC 9325 §4.5; NIST SP 800-52r2 (112-bit security: DH >= "
          "2048); BSI TR-02102-2 (DH >= 3000 bits); NCSC-NL TLS guidelines v2.1 (ffdhe groups); Logjam (Adrian "
          "et al., CCS 2015)",
          _rec(RecommendationCode.USE_2048_BIT_DH, "Use an RFC 7919 group of 2048 bits or more for DHE (Postfix: drop "
                                  "smtpd_tls_dh1024_param_file or point it at ffdhe3072), or disable DHE suites.")),
     _check_dh_small),
    (Rule(RuleCode.DH_COMMON_1024_PRIME, Scope.MX, Severity.MEDIUM, None, 15,
          "A published DH prime of 1024 bits or less (shared by many servers)",
          "Logjam (Adrian et al., 'Imperfect Forward Secrecy', CCS 2015): one precomputation per prime; "
          "RFC 2409 §6.2, RFC 5114 §2.1 groups",
          _rec(RecommendationCode.USE_2048_BIT_DH, "Use an RFC 7919 group of 2048 bits or more for DHE (Postfix: drop "
                                  "smtpd_tls_dh1024_param_file or point it at ffdhe3072), or disable DHE suites.")),
     _check_dh_common),
    (Rule(RuleCode.ONLY_DEPRECATED_CURVES, Scope.MX, Severity.MEDIUM, None, 15,
          "ECDHE only with deprecated curves", "RFC 8422 §5.1.1 (deprecated curves); RFC 9325 §4.2.1 (P-256 "
          "and X25519); NIST SP 800-52r2 (P-256/P-384); BSI TR-02102-2",
          _rec(RecommendationCode.ENABLE_MODERN_CURVES, "Enable X25519 and secp256r1 (and secp384r1) for ECDHE.")),
     _check_only_deprecated_curves),
    (Rule(RuleCode.NO_SECURE_RENEGOTIATION, Scope.MX, Severity.MEDIUM, None, 15,
          "No RFC 5746 secure renegotiation", "RFC 5746; RFC 9325 §3.5 (renegotiation_info MUST); NIST SP "
          "800-52r2 (renegotiation_info mandatory); BSI TR-02102-2; NCSC-NL TLS guidelines v2.1",
          _rec(RecommendationCode.ENABLE_SECURE_RENEGOTIATION, "Upgrade the TLS library so that it supports RFC 5746 "
                                              "(renegotiation_info), or disable renegotiation.")),
     _check_renegotiation),
    (Rule(RuleCode.TRIPLE_DES_IDEA_SUITES, Scope.MX, Severity.LOW, None, 10,
          "64-bit block suites accepted (3DES, IDEA)", "RFC 9325 §4.1 (SHOULD NOT <128 bits); SWEET32",
          _rec(RecommendationCode.DISABLE_3DES_IDEA_SUITES, "Disable 3DES and IDEA suites.")),
     lambda f: _classes(f, _BLOCK64)),
    (Rule(RuleCode.TLS10_OR_TLS11_ENABLED, Scope.MX, Severity.LOW, None, 10,
          "TLS 1.0 or 1.1 still accepted", "RFC 8996; RFC 9325 §3.1.1",
          _rec(RecommendationCode.DISABLE_TLS10_TLS11, "Disable TLS 1.0 and TLS 1.1 once TLS 1.2 works.")),
     _check_legacy_tls),
    (Rule(RuleCode.NO_NIST_R2_SUITE, Scope.MX, Severity.LOW, None, 10,
          "No SP 800-52r2 suite (no forward-secret AES suite)", "SP 800-52r2 §3.3.1; RFC 9325 §4.2",
          _rec(RecommendationCode.ENABLE_FORWARD_SECRET_AES, "Enable ECDHE-RSA/ECDSA with AES-GCM suites.")),
     _check_nist_r2),
    (Rule(RuleCode.CERT_NAME_MISMATCH, Scope.MX, Severity.LOW, None, 10,
          "Certificate does not match the MX host name", "RFC 9525; RFC 8461 §4.2; opportunistic senders rarely check",
          _rec(RecommendationCode.FIX_CERTIFICATE_NAME, "Use a certificate whose SAN lists the MX host name.")),
     _check_name),
    (Rule(RuleCode.SHA1_SIGNATURE, Scope.MX, Severity.LOW, None, 10,
          "Certificate signed with SHA-1", "RFC 9155; CA/B Forum Baseline Requirements (no SHA-1 since 2016)",
          _REC_SHA2_CERT),
     lambda f: _signature_has(f, "sha1")),
    (_INCONSISTENT, _check_inconsistent),
    (Rule(RuleCode.NO_EXTENDED_MASTER_SECRET, Scope.MX, Severity.LOW, None, 10,
          "No extended master secret (TLS 1.2 and below)", "RFC 7627 (triple handshake); RFC 9325 §3 (MUST for "
          "TLS 1.2); NIST SP 800-52r2 (mandatory extension); BSI TR-02102-2 (recommended)",
          _rec(RecommendationCode.ENABLE_EXTENDED_MASTER_SECRET,
               "Upgrade the TLS library to one that supports RFC 7627 "
               "(OpenSSL >= 1.1.0, GnuTLS >= 3.4).")),
     _check_ems),
    (Rule(RuleCode.VERSIONS_UNKNOWN, Scope.MX, Severity.INFO, None, 0,
          "Protocol versions unknown", "not graded; blocks A+", None),
     _check_versions_unknown),
    (Rule(RuleCode.SUITES_UNKNOWN, Scope.MX, Severity.INFO, None, 0,
          "Cipher-suite compliance unknown", "not graded; blocks A+", None),
     _check_suites_unknown),
    (Rule(RuleCode.CERTIFICATE_UNKNOWN, Scope.MX, Severity.INFO, None, 0,
          "Certificate facts unknown", "not graded; blocks A+", None),
     _check_cert_unknown),
)

# --------------------------------------------------------------------------
# Domain rules (evaluated in _domain_hits; only caps, no points)
# --------------------------------------------------------------------------

_MX_UNTESTED: Final = Rule(
    RuleCode.MX_UNTESTED, Scope.DOMAIN, Severity.INFO, None, 0,
    "Some MX addresses could not be tested", "graded on the tested addresses only", None,
)
_NO_MX_TESTED: Final = Rule(
    RuleCode.NO_MX_TESTED, Scope.DOMAIN, Severity.INFO, None, 0,
    "No MX address could be tested", "no grade", None,
)
_NO_MTA_STS: Final = Rule(
    RuleCode.NO_MTA_STS, Scope.DOMAIN, Severity.INFO, None, 0,
    "No valid MTA-STS policy", "RFC 8461; needed for A+ unless DANE validates",
    _rec(RecommendationCode.PUBLISH_MTA_STS_ENFORCE,
         "Publish an MTA-STS policy (RFC 8461) listing every MX, in testing mode first, then enforce."),
)
_REC_ENFORCE: Final = _rec(
    RecommendationCode.SWITCH_MTA_STS_TO_ENFORCE,
    "Switch the MTA-STS policy to mode: enforce once TLS reports are clean."
)
_MTA_STS_TESTING: Final = Rule(
    RuleCode.MTA_STS_TESTING, Scope.DOMAIN, Severity.INFO, None, 0,
    "MTA-STS policy in testing mode", "RFC 8461 §5: testing only reports", _REC_ENFORCE,
)
_MTA_STS_NONE: Final = Rule(
    RuleCode.MTA_STS_MODE_NONE, Scope.DOMAIN, Severity.INFO, None, 0,
    "MTA-STS policy in mode none", "RFC 8461 §5: none retires the policy", _REC_ENFORCE,
)
_MTA_STS_UNCOVERED: Final = Rule(
    RuleCode.MTA_STS_MX_NOT_COVERED, Scope.DOMAIN, Severity.MEDIUM, Grade.B, 0,
    "Enforced MTA-STS policy does not match every MX", "RFC 8461 §4.1: enforcing senders refuse those MX",
    _rec(RecommendationCode.FIX_MTA_STS_MX_PATTERNS,
         "Add every MX host name (or a matching *.suffix) to the policy's mx lines."),
)
_MTA_STS_FAILING: Final = Rule(
    RuleCode.MTA_STS_MX_FAIL, Scope.DOMAIN, Severity.MEDIUM, Grade.B, 0,
    "Enforced MTA-STS policy: some MX would fail validation", "RFC 8461 §4.2, §5: enforcing senders refuse those MX",
    _rec(RecommendationCode.FIX_MX_FOR_MTA_STS,
         "Give every MX STARTTLS and an unexpired, trusted certificate for its host name, or delivery fails."),
)
_NO_TLSRPT: Final = Rule(
    RuleCode.NO_TLSRPT, Scope.DOMAIN, Severity.INFO, None, 0,
    "No valid TLS-RPT record", "RFC 8460",
    _rec(RecommendationCode.PUBLISH_TLSRPT,
         "Publish a TLS-RPT record (_smtp._tls TXT, RFC 8460) to receive delivery failure reports."),
)

# DANE (RFC 7672). A DANE sender refuses an MX whose authenticated TLSA RRset matches nothing, where
# STARTTLS fails although TLSA is published, or whose TLSA lookup is bogus: the domain's mail is
# deferred and then bounced by every DANE sender, a delivery failure the operator published. That is
# worse than an expired certificate (which only MTA-STS and DANE-TA senders refuse), hence cap D.
_REC_TLSA: Final = _rec(
    RecommendationCode.FIX_TLSA_RECORDS,
    "Publish TLSA records that match the certificate each MX presents (e.g. 3 1 1 of the current key), roll "
    "them over before changing the key or certificate, or withdraw them: DANE senders refuse mail otherwise.",
)
_DANE_RULES: Final[Mapping[str, Rule]] = MappingProxyType({
    "tlsa_no_match": Rule(
        RuleCode.DANE_TLSA_NO_MATCH, Scope.DOMAIN, Severity.HIGH, Grade.D, 0,
        "DNSSEC-authenticated TLSA records match no certificate the MX presents",
        "RFC 7672 §2.2, §3.1: DANE senders refuse the MX (mail deferred, then bounced)", _REC_TLSA),
    "tlsa_starttls_failed": Rule(
        RuleCode.DANE_STARTTLS_FAILED, Scope.DOMAIN, Severity.HIGH, Grade.D, 0,
        "TLSA published but STARTTLS fails on that MX",
        "RFC 7672 §2.2: with TLSA records STARTTLS is mandatory; DANE senders refuse the MX",
        _rec(RecommendationCode.FIX_STARTTLS_FOR_DANE,
             "Make STARTTLS work on every MX that publishes TLSA records, or withdraw the records.")),
    "tlsa_bogus": Rule(
        RuleCode.DANE_TLSA_BOGUS, Scope.DOMAIN, Severity.HIGH, Grade.D, 0,
        "TLSA lookup fails DNSSEC validation (bogus)",
        "RFC 7672 §2.2; RFC 4035 §5.5: DANE senders do not deliver to that MX",
        _rec(RecommendationCode.FIX_DNSSEC_SIGNATURES,
             "Repair the zone's DNSSEC signatures (re-sign, check DS and DNSKEY, keep RRSIGs unexpired).")),
    "tlsa_unusable": Rule(
        RuleCode.DANE_TLSA_UNUSABLE, Scope.DOMAIN, Severity.HIGH, Grade.C, 0,
        "DNSSEC-authenticated TLSA RRset without a usable record",
        "RFC 7672 §3.1.3, §2.2: senders must use TLS but cannot authenticate; the records protect nothing",
        _rec(RecommendationCode.USE_DANE_EE_OR_TA_RECORDS,
             "Replace PKIX-TA/PKIX-EE or malformed TLSA records with DANE-EE (3 1 1) or DANE-TA (2 1 1) records.")),
    "tlsa_unsigned": Rule(
        RuleCode.DANE_TLSA_UNSIGNED, Scope.DOMAIN, Severity.INFO, None, 0,
        "TLSA records in an unsigned zone (ignored by senders, not DANE)",
        "RFC 7672 §2.2: only DNSSEC-secure TLSA RRsets apply",
        _rec(RecommendationCode.SIGN_ZONE_FOR_DANE,
             "Sign the MX host's zone with DNSSEC (and publish the DS), or remove the TLSA "
             "records, which senders ignore without it.")),
})

_DOMAIN_RULES: Final = (
    _MX_UNTESTED, _NO_MX_TESTED, _NO_MTA_STS, _MTA_STS_TESTING, _MTA_STS_NONE, _MTA_STS_UNCOVERED,
    _MTA_STS_FAILING, _NO_TLSRPT, *_DANE_RULES.values(),
)
# DANE findings after which a DANE sender refuses the MX: forced TLS is never "safe" with them.
_DANE_REFUSING: Final = frozenset({"tlsa_no_match", "tlsa_starttls_failed", "tlsa_bogus"})


def _index(rules: Iterable[Rule]) -> Mapping[str, Rule]:
    table: dict[str, Rule] = {}
    for rule in rules:
        if rule.code in table:
            raise ValueError(f"duplicate rule code {rule.code!r}")  # codes are stored: they must be unique
        table[rule.code] = rule
    return MappingProxyType(table)


RUBRIC: Final[Mapping[str, Rule]] = _index((_NO_STARTTLS, *(r for r, _ in _MX_RULES), *_DOMAIN_RULES))

# Recommendation code → text, in rubric order: the one place the text lives. The dataset stores
# only the codes (``domains.recommendations``); ``check`` and schemas/grading.md §6 show this text.
RECOMMENDATIONS: Final[Mapping[str, str]] = {
    rule.recommendation.code: rule.recommendation.text for rule in RUBRIC.values() if rule.recommendation
}

# Score bands (score = 100 - points). Floor E: only no_starttls gives F.
_BANDS: Final = ((95, Grade.A), (80, Grade.B), (65, Grade.C), (50, Grade.D))
_FLOOR: Final = Grade.E


def grade_for_score(score: int) -> Grade:
    for minimum, grade in _BANDS:
        if score >= minimum:
            return grade
    return _FLOOR


# --------------------------------------------------------------------------
# Grading
# --------------------------------------------------------------------------


def _hit(rule: Rule, detail: str = "") -> RuleHit:
    text = f"{rule.summary}: {detail}" if detail else rule.summary
    return RuleHit(rule.code, rule.severity, rule.cap, rule.points, text)


def _letter(hits: Sequence[RuleHit]) -> Grade:
    grade = grade_for_score(100 - sum(h.points for h in hits))
    for h in hits:
        grade = grade.at_most(h.cap)
    return grade


def _recommendations(hits: Iterable[RuleHit]) -> tuple[Recommendation, ...]:
    seen: dict[str, Recommendation] = {}
    for h in hits:
        rec = RUBRIC[h.code].recommendation
        if rec is not None and rec.code not in seen:
            seen[rec.code] = rec
    return tuple(seen.values())


def _tested_hits(facts: MxFacts) -> tuple[RuleHit, ...]:
    if not facts.starttls:
        # Say so when the missing STARTTLS is the worst of answers that disagreed.
        inconsistent = _check_inconsistent(facts)
        if inconsistent is None:
            return (_hit(_NO_STARTTLS),)
        return _hit(_NO_STARTTLS), _hit(_INCONSISTENT, inconsistent)
    return tuple(_hit(rule, detail) for rule, check in _MX_RULES if (detail := check(facts)) is not None)


def grade_mx(facts: MxFacts) -> MxGrade:
    """Grade one MX address. Best possible: A (A+ needs domain policies). None when untested."""
    if not facts.tested:
        return MxGrade(None, (), ())
    hits = _tested_hits(facts)
    return MxGrade(_letter(hits), hits, _recommendations(hits))


def _policy_hits(policy: PolicyFacts) -> list[RuleHit]:
    hits: list[RuleHit] = []
    mode = policy.mta_sts_mode
    if mode is None:
        hits.append(_hit(_NO_MTA_STS))
    elif mode == StsMode.TESTING.value:
        hits.append(_hit(_MTA_STS_TESTING))
    elif mode == StsMode.NONE.value:
        hits.append(_hit(_MTA_STS_NONE))
    else:  # enforce: a broken enforced policy makes conforming senders refuse mail (RFC 8461 §5)
        if policy.mta_sts_matches_all_mx is False:
            hits.append(_hit(_MTA_STS_UNCOVERED))
        if policy.mta_sts_all_mx_pass is False:
            hits.append(_hit(_MTA_STS_FAILING))
    if policy.tlsrpt_valid is False:
        hits.append(_hit(_NO_TLSRPT))
    found: dict[str, list[str]] = {}
    for code, where in policy.dane_findings:
        found.setdefault(code, []).append(where)
    hits.extend(_hit(_DANE_RULES[code], "; ".join(where)) for code, where in found.items())
    return hits


def _a_plus(graded: Sequence[MxGrade], policy: PolicyFacts) -> bool:
    """Every tested MX is a clean A (no hit, nothing unknown) and an enforced policy protects it."""
    if any(g.hits for g in graded) or policy.dane_findings:  # a DANE defect is never "everything right"
        return False
    sts = (
        policy.mta_sts_mode == StsMode.ENFORCE.value
        and policy.mta_sts_matches_all_mx is True
        and policy.mta_sts_all_mx_pass is True
    )
    return sts or policy.dane_valid is True


def _mx_recommendations(graded: Sequence[tuple[MxFacts, MxGrade]]) -> list[Recommendation]:
    hosts: dict[RecommendationCode, list[str]] = {}
    recs: dict[RecommendationCode, Recommendation] = {}
    for facts, g in graded:
        for rec in g.recommendations:
            recs.setdefault(rec.code, rec)
            names = hosts.setdefault(rec.code, [])
            if facts.mx_host not in names:
                names.append(facts.mx_host)
    return [Recommendation(code, f"{rec.text} (affects: {', '.join(hosts[code])})") for code, rec in recs.items()]


def grade_domain(mx: Sequence[MxFacts], policy: PolicyFacts, *, lenient_tls10: bool = False,
                 mx_grades: Sequence[MxGrade] | None = None) -> DomainGrade:
    """Grade a domain by its worst tested MX address, then domain rules (caps, A+).

    ``mx_grades`` are ``grade_mx`` of each of ``mx``, in order, when the caller already has them (the
    scan grades each link once and reuses it for every domain behind it); else they are graded here.
    """
    if mx_grades is None:
        mx_grades = [grade_mx(m) for m in mx]
    graded = [(m, g.grade, g) for m, g in zip(mx, mx_grades, strict=True) if g.grade is not None]
    hits = [
        RuleHit(h.code, h.severity, h.cap, h.points, f"{m.label}: {h.text}") for m, _, g in graded for h in g.hits
    ]
    untested = [m.label for m in mx if not m.tested]
    if untested:
        hits.append(_hit(_MX_UNTESTED, ", ".join(untested)))
    if not graded:
        hits.append(_hit(_NO_MX_TESTED))
    domain_hits = _policy_hits(policy)
    hits.extend(domain_hits)
    safe, reasons = forced_tls(mx, lenient_tls10=lenient_tls10)
    refusing = [f"dane_refused: {where}" for code, where in policy.dane_findings if code in _DANE_REFUSING]
    if refusing:  # a sender that requires TLS and does DANE (RFC 7672) would not deliver there
        safe, reasons = False, (*refusing, *reasons)
    recommendations = (*_mx_recommendations([(m, g) for m, _, g in graded]), *_recommendations(domain_hits))
    if not graded:
        return DomainGrade(None, None, tuple(hits), recommendations, safe, reasons, GRADING_VERSION)
    # min() keeps the first of equal elements: ties go to the earliest MX in input order.
    worst_facts, grade, _ = min(graded, key=lambda entry: entry[1].rank)
    for h in domain_hits:
        grade = grade.at_most(h.cap)
    if grade is Grade.A and _a_plus([g for _, _, g in graded], policy):
        grade = Grade.A_PLUS
    return DomainGrade(grade, worst_facts.mx_host, tuple(hits), recommendations, safe, reasons, GRADING_VERSION)


# --------------------------------------------------------------------------
# Forced TLS
# --------------------------------------------------------------------------


def _forced_tls_mx(facts: MxFacts, lenient_tls10: bool) -> tuple[list[str], list[str]]:
    """(failures, unknowns) for one address, each "code: host [address] - why"."""
    def say(code: str, why: str) -> str:
        return f"{code}: {facts.label} - {why}"

    if not facts.tested:
        return [], [say("not_tested", "the probe gave no STARTTLS answer")]
    if not facts.starttls:
        return [say("no_starttls", "STARTTLS not offered or the handshake failed")], []
    failures: list[str] = []
    unknowns: list[str] = []
    wanted, minimum = (_TLS10_OR_LATER, "TLS 1.0") if lenient_tls10 else (_MODERN, "TLS 1.2")
    if not facts.tls_versions & wanted:
        if facts.versions_known:
            failures.append(say("version_too_old", f"no {minimum} or later accepted"))
        else:
            unknowns.append(say("versions_unknown", "accepted versions not enumerated"))
    nist = _nist_suite(facts)
    if nist is False:
        failures.append(say("no_nist_suite", "no NIST SP 800-52 suite accepted"))
    elif nist is None:
        unknowns.append(say("suites_unknown", "NIST suite support not determined"))
    return failures, unknowns


def forced_tls(mx: Sequence[MxFacts], *, lenient_tls10: bool = False) -> tuple[bool | None, tuple[str, ...]]:
    """Can a sender require TLS (TLS 1.2+, or 1.0+ when lenient, with a NIST suite) to every MX address?

    False as soon as one address definitely fails (an untested one cannot rescue it); None when no
    address fails but one could not be tested or judged; True only when every address passes. The
    certificate is not required: forced-TLS senders encrypt without authenticating.
    """
    if not mx:
        return None, ("no_mx_address: nothing to deliver to",)
    failures: list[str] = []
    unknowns: list[str] = []
    for facts in mx:
        failed, unknown = _forced_tls_mx(facts, lenient_tls10)
        failures.extend(failed)
        unknowns.extend(unknown)
    verdict = False if failures else (None if unknowns else True)
    return verdict, tuple(failures + unknowns)


# --------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------


def render_rubric_table() -> str:
    """The rubric as a Markdown table (pasted into schemas/grading.md; a test checks they agree)."""
    lines = [
        "| code | scope | severity | cap | points | meaning | basis | recommendation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rule in RUBRIC.values():
        cap = rule.cap.value if rule.cap else "-"
        rec = f"`{rule.recommendation.code}`" if rule.recommendation else "-"
        lines.append(
            f"| `{rule.code}` | {rule.scope.value} | {rule.severity.value} | {cap} | {rule.points} | "
            f"{rule.summary} | {rule.basis} | {rec} |"
        )
    return "\n".join(lines) + "\n"


def render_recommendations_table() -> str:
    """``RECOMMENDATIONS`` as the Markdown table of schemas/grading.md §6 (a test checks they agree)."""
    lines = ["| code | text |", "|---|---|"]
    lines += [f"| `{code}` | {text} |" for code, text in RECOMMENDATIONS.items()]
    return "\n".join(lines) + "\n"
