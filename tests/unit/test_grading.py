"""The grading rubric: each rule alone, combinations, caps vs points, worst-MX aggregation, A+, forced TLS."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scanner.grading import (
    GRADING_VERSION,
    RECOMMENDATIONS,
    RUBRIC,
    TLS_VERSION_NAMES,
    DomainGrade,
    Grade,
    MxFacts,
    PolicyFacts,
    RecommendationCode,
    RuleCode,
    Scope,
    Severity,
    forced_tls,
    grade_domain,
    grade_for_score,
    grade_mx,
    render_recommendations_table,
    render_rubric_table,
    version_facts,
    worst_grade,
)
from scanner.status import StsMode
from scanner.tls.ciphers import WeakClass
from scanner.tls.enumeration import VersionVerdict
from scanner.tls.versions import VERSION_NAMES, TlsVersion

G = Grade
ROOT = Path(__file__).resolve().parents[2]
MODERN = frozenset({"TLSv1.2", "TLSv1.3"})

GOOD = MxFacts(
    mx_host="mx1.example.com", address="127.0.0.1", tested=True, starttls=True, tls_versions=MODERN,
    versions_known=True, weak_classes=frozenset(), nist_r1=True, nist_r2=True, cert_trusted=True,
    cert_expired=False, cert_name_valid=True, cert_self_signed=False, cert_key_bits=2048, cert_key_type="rsa",
    cert_signature_algorithm="sha256WithRSAEncryption", plaintext_after_starttls=False,
)
NO_POLICY = PolicyFacts(None, None, None, None, None)
STS_OK = PolicyFacts("enforce", True, True, None, True)


def mx(**changes: Any) -> MxFacts:
    return dataclasses.replace(GOOD, **changes)


def codes(facts: MxFacts) -> set[str]:
    return {h.code for h in grade_mx(facts).hits}


# --------------------------------------------------------------------------
# Grade ordering and score bands
# --------------------------------------------------------------------------


def test_grade_ranks_are_ordered_best_first() -> None:
    assert [g.rank for g in Grade] == [6, 5, 4, 3, 2, 1, 0]
    assert [Grade.from_rank(r) for r in range(7)] == list(reversed(Grade))
    assert G.A_PLUS.better_than(G.A) and not G.F.better_than(G.E) and not G.C.better_than(G.C)
    assert G.A.at_most(G.C) is G.C and G.D.at_most(G.C) is G.D and G.B.at_most(None) is G.B
    assert worst_grade([G.B, G.A_PLUS, G.D, G.C]) is G.D
    with pytest.raises(ValueError):
        worst_grade([])
    with pytest.raises(ValueError):
        Grade.from_rank(7)


@pytest.mark.parametrize(
    ("score", "grade"),
    [(100, G.A), (95, G.A), (94, G.B), (80, G.B), (79, G.C), (65, G.C), (64, G.D), (50, G.D), (49, G.E),
     (0, G.E), (-40, G.E)],
)
def test_score_bands(score: int, grade: Grade) -> None:
    assert grade_for_score(score) is grade


# --------------------------------------------------------------------------
# Each MX rule alone
# --------------------------------------------------------------------------

# rule code -> facts that fire it (and as little else as the facts allow), expected codes, expected grade
TRIGGERS: dict[str, tuple[MxFacts, set[str], Grade]] = {
    "no_starttls": (mx(starttls=False), {"no_starttls"}, G.F),
    "no_tls12_or_tls13": (mx(tls_versions=frozenset()), {"no_tls12_or_tls13"}, G.C),
    "sslv3_enabled": (mx(tls_versions=MODERN | {"SSLv3"}), {"sslv3_enabled"}, G.C),
    "cert_expired": (mx(cert_expired=True), {"cert_expired"}, G.C),
    "cert_self_signed": (mx(cert_trusted=False, cert_self_signed=True), {"cert_self_signed"}, G.C),
    "cert_untrusted": (mx(cert_trusted=False), {"cert_untrusted"}, G.C),
    "no_nist_r1_suite": (mx(nist_r1=False, nist_r2=None, tls_versions=frozenset({"TLSv1.2"})),
                         {"no_nist_r1_suite", "suites_unknown"}, G.C),
    "insecure_suites": (mx(weak_classes=frozenset({"export"})), {"insecure_suites"}, G.C),
    "rc4_md5_suites": (mx(weak_classes=frozenset({"rc4"})), {"rc4_md5_suites"}, G.B),
    "plaintext_after_starttls": (mx(plaintext_after_starttls=True), {"plaintext_after_starttls"}, G.B),
    "small_key": (mx(cert_key_bits=1024), {"small_key"}, G.B),
    "md5_signature": (mx(cert_signature_algorithm="md5WithRSAEncryption"), {"md5_signature"}, G.B),
    "3des_idea_suites": (mx(weak_classes=frozenset({"3des"})), {"3des_idea_suites"}, G.B),
    "tls10_or_tls11_enabled": (mx(tls_versions=MODERN | {"TLSv1.0"}), {"tls10_or_tls11_enabled"}, G.B),
    "no_nist_r2_suite": (mx(nist_r2=False), {"no_nist_r2_suite"}, G.B),
    "cert_name_mismatch": (mx(cert_name_valid=False), {"cert_name_mismatch"}, G.B),
    "sha1_signature": (mx(cert_signature_algorithm="sha1WithRSAEncryption"), {"sha1_signature"}, G.B),
    "tls_compression": (mx(tls_compression=True), {"tls_compression"}, G.B),
    "dh_group_below_2048": (mx(dh_bits=1536), {"dh_group_below_2048"}, G.B),
    # A published 1024-bit prime is also below 2048 bits: both rules fire (85 - 15 = 70).
    "dh_common_1024_prime": (mx(dh_bits=1024, dh_group="rfc2409-oakley2"),
                             {"dh_common_1024_prime", "dh_group_below_2048"}, G.C),
    "only_deprecated_curves": (mx(kx_groups=frozenset({"secp192r1", "secp224r1"}), kx_groups_complete=True),
                               {"only_deprecated_curves"}, G.B),
    "no_secure_renegotiation": (mx(secure_renegotiation=False), {"no_secure_renegotiation"}, G.B),
    "no_extended_master_secret": (mx(extended_master_secret=False), {"no_extended_master_secret"}, G.B),
    "versions_unknown": (mx(versions_known=False), {"versions_unknown"}, G.A),
    "suites_unknown": (mx(nist_r1=None, nist_r2=None), {"suites_unknown"}, G.A),
    "certificate_unknown": (mx(cert_trusted=None), {"certificate_unknown"}, G.A),
    "inconsistent_answers": (mx(inconsistent=frozenset({"certificate"})), {"inconsistent_answers"}, G.A),
}


def test_missing_starttls_among_disagreeing_answers_is_f_and_says_why() -> None:
    result = grade_mx(mx(starttls=False, inconsistent=frozenset({"starttls"})))
    assert result.grade is G.F
    assert [h.code for h in result.hits] == ["no_starttls", "inconsistent_answers"]
    assert "worst answer" in result.hits[1].text


def test_good_mx_is_a_without_hits() -> None:
    result = grade_mx(GOOD)
    assert (result.grade, result.hits, result.recommendations) == (G.A, (), ())


@pytest.mark.parametrize("code", sorted(TRIGGERS))
def test_each_rule_alone(code: str) -> None:
    facts, expected_codes, expected_grade = TRIGGERS[code]
    result = grade_mx(facts)
    assert {h.code for h in result.hits} == expected_codes
    assert result.grade is expected_grade
    hit = next(h for h in result.hits if h.code == code)
    rule = RUBRIC[code]
    assert (hit.severity, hit.cap, hit.points) == (rule.severity, rule.cap, rule.points)
    assert hit.text.startswith(rule.summary)


def test_every_mx_rule_has_a_trigger() -> None:
    """A new rule must come with a case in TRIGGERS (and thereby a recommendation test)."""
    assert {code for code, rule in RUBRIC.items() if rule.scope is Scope.MX} == set(TRIGGERS)


@pytest.mark.parametrize("code", sorted(TRIGGERS))
def test_recommendation_for_each_failing_rule(code: str) -> None:
    rule = RUBRIC[code]
    result = grade_mx(TRIGGERS[code][0])
    if rule.severity is Severity.INFO:
        assert rule.recommendation is None
        assert result.recommendations == ()
    else:
        assert rule.recommendation is not None
        assert rule.recommendation in result.recommendations


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"weak_classes": frozenset({"null"})}, {"insecure_suites"}),
        ({"weak_classes": frozenset({"anon"})}, {"insecure_suites"}),
        ({"weak_classes": frozenset({"des", "rc2", "low_bits"})}, {"insecure_suites"}),
        ({"weak_classes": frozenset({"md5"})}, {"rc4_md5_suites"}),
        ({"weak_classes": frozenset({"idea"})}, {"3des_idea_suites"}),
        # An export RC4-MD5 suite carries four classes: one hit per tier, not per class.
        ({"weak_classes": frozenset({"export", "rc4", "md5", "low_bits"})}, {"insecure_suites", "rc4_md5_suites"}),
        ({"tls_versions": MODERN | {"TLSv1.1"}}, {"tls10_or_tls11_enabled"}),
        ({"tls_versions": frozenset({"TLSv1.2", "TLSv1.1", "TLSv1.0"})}, {"tls10_or_tls11_enabled"}),
        ({"cert_key_type": "ec", "cert_key_bits": 192}, {"small_key"}),
        ({"cert_key_type": "ec", "cert_key_bits": 256}, set()),
        ({"cert_key_type": "dsa", "cert_key_bits": 1024}, {"small_key"}),
        ({"cert_key_type": "RSA", "cert_key_bits": 2047}, {"small_key"}),
        ({"cert_key_type": "ed25519", "cert_key_bits": 256}, set()),
        ({"cert_key_type": "other", "cert_key_bits": None}, set()),
        ({"cert_key_type": "rsa", "cert_key_bits": None}, {"certificate_unknown"}),
        ({"cert_signature_algorithm": "ecdsa-with-SHA1"}, {"sha1_signature"}),
        ({"cert_signature_algorithm": "dsaWithSHA1"}, {"sha1_signature"}),
        ({"cert_signature_algorithm": "md2WithRSAEncryption"}, {"md5_signature"}),
        ({"cert_signature_algorithm": "id-rsassa-pkcs1-v1_5-with-sha3-256"}, set()),
        ({"cert_signature_algorithm": "ecdsa-with-SHA384"}, set()),
        # Trusted wins over a self-issued flag (a trust anchor served as leaf).
        ({"cert_self_signed": True}, set()),
        # Unknown trust but a self-signed leaf is an observation.
        ({"cert_trusted": None, "cert_self_signed": True}, {"cert_self_signed", "certificate_unknown"}),
        ({"cert_expired": None}, {"certificate_unknown"}),
        ({"cert_name_valid": None}, {"certificate_unknown"}),
        ({"cert_signature_algorithm": None}, {"certificate_unknown"}),
    ],
)
def test_rule_variants(changes: dict[str, Any], expected: set[str]) -> None:
    assert codes(mx(**changes)) == expected


# --------------------------------------------------------------------------
# NIST and TLS 1.3
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("r1", "r2", "versions", "known", "expected"),
    [
        (True, True, MODERN, True, set()),
        (True, False, MODERN, True, {"no_nist_r2_suite"}),  # only static-RSA / 3DES NIST suites
        (False, False, MODERN, True, {"no_nist_r1_suite", "no_nist_r2_suite"}),
        # The enumeration reports r1=False for a TLS 1.3-only server (r1 predates 1.3): r2 decides.
        (False, True, frozenset({"TLSv1.3"}), True, set()),
        (False, None, frozenset({"TLSv1.3"}), True, {"suites_unknown"}),
        (False, None, frozenset({"TLSv1.2"}), True, {"no_nist_r1_suite", "suites_unknown"}),
        (False, None, frozenset({"TLSv1.2"}), False, {"suites_unknown", "versions_unknown"}),
        (None, True, MODERN, True, set()),
        (None, None, MODERN, True, {"suites_unknown"}),
        (True, None, MODERN, True, {"suites_unknown"}),
    ],
)
def test_nist_rules(
    r1: bool | None, r2: bool | None, versions: frozenset[str], known: bool, expected: set[str]
) -> None:
    assert codes(mx(nist_r1=r1, nist_r2=r2, tls_versions=versions, versions_known=known)) == expected


def test_tls13_only_server_is_a() -> None:
    facts = mx(tls_versions=frozenset({"TLSv1.3"}), nist_r1=False, nist_r2=True)
    assert grade_mx(facts).grade is G.A
    assert forced_tls([facts]) == (True, ())


# --------------------------------------------------------------------------
# Caps vs points, combinations, floor
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "grade", "why"),
    [
        # Cap binds: 100-20 = 80 would be B, SSLv3 caps at C.
        ({"tls_versions": MODERN | {"SSLv3"}}, G.C, "cap"),
        # Points bind without any cap: three light defects, 100-30 = 70.
        ({"weak_classes": frozenset({"3des"}), "tls_versions": MODERN | {"TLSv1.0"}, "cert_name_valid": False},
         G.C, "points"),
        # Points go below the cap: self-signed (20) + name (10) + TLS 1.0 (10) + 3DES (10) = 50.
        ({"cert_trusted": False, "cert_self_signed": True, "cert_name_valid": False,
          "tls_versions": MODERN | {"TLSv1.0"}, "weak_classes": frozenset({"3des"})}, G.D, "points"),
        # Two light defects: 100-20 = 80 is still B.
        ({"cert_name_valid": False, "nist_r2": False}, G.B, "points"),
        # Only SSLv3: no 1.2/1.3 (25) + SSLv3 (20) + NIST (15+10) = 30.
        ({"tls_versions": frozenset({"SSLv3"}), "nist_r1": False, "nist_r2": False}, G.E, "points"),
        # Two heavy defects: both caps are C, the points (40) decide.
        ({"cert_expired": True, "cert_trusted": False}, G.D, "points"),
        # A heavy defect with one light one stays at the cap: 100-30 = 70.
        ({"cert_expired": True, "cert_name_valid": False}, G.C, "points"),
    ],
)
def test_caps_versus_points(changes: dict[str, Any], grade: Grade, why: str) -> None:
    result = grade_mx(mx(**changes))
    assert result.grade is grade
    score = 100 - sum(h.points for h in result.hits)
    caps = [h.cap for h in result.hits if h.cap is not None]
    if why == "cap":
        assert grade_for_score(score).better_than(grade) and min(c.rank for c in caps) == grade.rank
    else:
        assert grade_for_score(score) is grade


def test_floor_is_e_for_any_server_that_does_tls() -> None:
    worst_tls = mx(
        tls_versions=frozenset({"SSLv3", "TLSv1.0"}), weak_classes=frozenset(c.value for c in WeakClass),
        nist_r1=False, nist_r2=False, cert_trusted=False, cert_expired=True, cert_name_valid=False,
        cert_self_signed=True, cert_key_bits=512, cert_signature_algorithm="md5WithRSAEncryption",
        plaintext_after_starttls=True,
    )
    result = grade_mx(worst_tls)
    assert 100 - sum(h.points for h in result.hits) < 0
    assert result.grade is G.E
    assert grade_mx(dataclasses.replace(worst_tls, starttls=False)).grade is G.F


def test_no_starttls_ignores_everything_else() -> None:
    result = grade_mx(mx(starttls=False, tls_versions=frozenset({"SSLv3"}), cert_expired=True))
    assert [h.code for h in result.hits] == ["no_starttls"]
    assert [r.code for r in result.recommendations] == ["enable_starttls"]


def test_untested_is_not_graded() -> None:
    assert grade_mx(mx(tested=False)) == grade_mx(mx(tested=False, starttls=False))
    result = grade_mx(mx(tested=False, tls_versions=frozenset({"SSLv3"})))
    assert (result.grade, result.hits, result.recommendations) == (None, (), ())


def test_observations_count_even_when_enumeration_incomplete() -> None:
    facts = mx(versions_known=False, tls_versions=frozenset({"SSLv3", "TLSv1.2"}))
    assert codes(facts) == {"sslv3_enabled", "versions_unknown"}
    # Unknown versions never read as "no TLS 1.2".
    assert codes(mx(versions_known=False, tls_versions=frozenset())) == {"versions_unknown"}


def test_shared_recommendation_is_listed_once() -> None:
    result = grade_mx(mx(cert_signature_algorithm="sha1WithRSAEncryption", cert_trusted=False, cert_expired=True))
    rec_codes = [r.code for r in result.recommendations]
    assert rec_codes == ["renew_certificate", "use_trusted_certificate", "reissue_sha2_certificate"]


# --------------------------------------------------------------------------
# Facts validation and helpers
# --------------------------------------------------------------------------


def test_facts_validation() -> None:
    with pytest.raises(ValueError):
        mx(tls_versions=frozenset({"TLSv1.4"}))
    with pytest.raises(ValueError):
        mx(weak_classes=frozenset({"rot13"}))
    with pytest.raises(ValueError):
        PolicyFacts("strict", None, None, None, None)
    # Enum members are normalised to their values.
    assert mx(weak_classes=frozenset({WeakClass.RC4})).weak_classes == frozenset({"rc4"})
    assert PolicyFacts(StsMode.ENFORCE, True, True, None, None).mta_sts_mode == "enforce"
    assert codes(mx(weak_classes=frozenset({WeakClass.TRIPLE_DES}))) == {"3des_idea_suites"}


def test_version_names_match_the_enumeration() -> None:
    assert set(TLS_VERSION_NAMES) == set(VERSION_NAMES.values())


V = TlsVersion
VV = VersionVerdict


@pytest.mark.parametrize(
    ("verdicts", "accepted", "known"),
    [
        ({V.TLS13: VV.ACCEPTED, V.TLS12: VV.ACCEPTED, V.TLS11: VV.REJECTED_ALERT, V.TLS10: VV.REJECTED_CLOSE,
          V.SSL3: VV.REJECTED_DOWNGRADE}, MODERN, True),
        ({V.TLS13: VV.ACCEPTED, V.TLS12: VV.ACCEPTED, V.TLS11: VV.REJECTED_ALERT, V.TLS10: VV.REJECTED_CLOSE,
          V.SSL3: VV.UNTESTED}, MODERN, False),
        ({V.TLS13: VV.PROTOCOL_ERROR, V.TLS12: VV.ACCEPTED, V.TLS11: VV.ACCEPTED, V.TLS10: VV.ACCEPTED,
          V.SSL3: VV.ACCEPTED}, frozenset({"TLSv1.2", "TLSv1.1", "TLSv1.0", "SSLv3"}), False),
        ({V.TLS12: VV.ACCEPTED}, frozenset({"TLSv1.2"}), False),
        ({}, frozenset(), False),
    ],
)
def test_version_facts(verdicts: dict[TlsVersion, VersionVerdict], accepted: frozenset[str], known: bool) -> None:
    assert version_facts(verdicts) == (accepted, known)


# --------------------------------------------------------------------------
# Domain: worst MX, untested MX, policies, A+
# --------------------------------------------------------------------------

MX_B = mx(mx_host="mx2.example.com", address="127.0.0.2", cert_name_valid=False)
MX_C = mx(mx_host="mx3.example.com", address="127.0.0.3", cert_expired=True)
MX_UNTESTED = mx(mx_host="mx4.example.com", address="::1", tested=False, starttls=False)


def test_domain_takes_worst_mx() -> None:
    result = grade_domain([GOOD, MX_C, MX_B], NO_POLICY)
    assert (result.grade, result.worst_mx, result.grading_version) == (G.C, "mx3.example.com", GRADING_VERSION)
    mx_hits = [h for h in result.hits if RUBRIC[h.code].scope is Scope.MX]
    assert [h.text.split(":")[0] for h in mx_hits] == ["mx3.example.com [127.0.0.3]", "mx2.example.com [127.0.0.2]"]
    rec_codes = [r.code for r in result.recommendations]
    assert rec_codes[:2] == ["renew_certificate", "fix_certificate_name"]
    assert "publish_mta_sts_enforce" in rec_codes


def test_worst_mx_ties_go_to_input_order() -> None:
    other_b = mx(mx_host="mx5.example.com", address="127.0.0.5", nist_r2=False)
    assert grade_domain([other_b, MX_B], NO_POLICY).worst_mx == "mx5.example.com"
    assert grade_domain([MX_B, other_b], NO_POLICY).worst_mx == "mx2.example.com"


def test_domain_recommendations_name_affected_hosts_once() -> None:
    second_address = dataclasses.replace(MX_C, address="::1")
    other_host = mx(mx_host="mx9.example.com", address="127.0.0.9", cert_expired=True)
    result = grade_domain([MX_C, second_address, other_host], NO_POLICY)
    renew = [r for r in result.recommendations if r.code == "renew_certificate"]
    assert len(renew) == 1
    assert renew[0].text.endswith("(affects: mx3.example.com, mx9.example.com)")
    assert sum(1 for h in result.hits if h.code == "cert_expired") == 3


def test_untested_mx_neither_passes_nor_fails() -> None:
    result = grade_domain([GOOD, MX_UNTESTED], NO_POLICY)
    assert result.grade is G.A and result.worst_mx == "mx1.example.com"
    assert [h.text for h in result.hits if h.code == "mx_untested"] == [
        "Some MX addresses could not be tested: mx4.example.com [::1]"
    ]
    assert grade_domain([MX_B, MX_UNTESTED], NO_POLICY).grade is G.B


@pytest.mark.parametrize("mx_list", [[], [MX_UNTESTED], [MX_UNTESTED, dataclasses.replace(MX_UNTESTED, address="::2")]])
def test_nothing_tested_means_no_grade(mx_list: list[MxFacts]) -> None:
    result = grade_domain(mx_list, STS_OK)
    assert (result.grade, result.worst_mx, result.forced_tls_safe) == (None, None, None)
    assert "no_mx_tested" in {h.code for h in result.hits}


@pytest.mark.parametrize(
    ("mx_list", "policy", "grade"),
    [
        ([GOOD], STS_OK, G.A_PLUS),
        ([GOOD, dataclasses.replace(GOOD, address="::1")], STS_OK, G.A_PLUS),
        ([GOOD], NO_POLICY, G.A),
        ([GOOD], PolicyFacts("testing", True, True, None, True), G.A),
        ([GOOD], PolicyFacts("none", True, True, None, True), G.A),
        ([GOOD], PolicyFacts("enforce", True, None, None, True), G.A),  # pass unknown: no A+
        ([GOOD], PolicyFacts("enforce", None, True, None, True), G.A),
        ([GOOD], PolicyFacts("enforce", False, True, None, True), G.B),  # broken enforce caps at B
        ([GOOD], PolicyFacts("enforce", True, False, None, True), G.B),
        ([GOOD], PolicyFacts(None, None, None, True, None), G.A_PLUS),  # DANE alone
        ([GOOD], PolicyFacts("testing", False, False, True, None), G.A_PLUS),  # DANE, STS only testing
        ([GOOD], PolicyFacts(None, None, None, False, None), G.A),
        ([GOOD], PolicyFacts(None, None, None, None, False), G.A),  # TLS-RPT is not required
        ([GOOD, MX_B], STS_OK, G.B),  # A+ needs every MX clean
        ([GOOD, MX_B], PolicyFacts("enforce", False, False, None, True), G.B),  # cap does not stack on B
        ([MX_C], PolicyFacts("enforce", False, False, None, True), G.C),
        ([mx(versions_known=False)], STS_OK, G.A),  # an unknown blocks A+
        ([mx(cert_trusted=None)], PolicyFacts(None, None, None, True, None), G.A),
        ([GOOD, MX_UNTESTED], STS_OK, G.A_PLUS),  # policy facts speak for the untested address
        ([mx(starttls=False)], STS_OK, G.F),
    ],
)
def test_domain_grade_and_a_plus(mx_list: list[MxFacts], policy: PolicyFacts, grade: Grade) -> None:
    assert grade_domain(mx_list, policy).grade is grade


@pytest.mark.parametrize(
    ("policy", "expected_hits", "expected_recs"),
    [
        (NO_POLICY, {"no_mta_sts"}, {"publish_mta_sts_enforce"}),
        (PolicyFacts(None, None, None, None, False), {"no_mta_sts", "no_tlsrpt"}, {"publish_mta_sts_enforce",
                                                                                     "publish_tlsrpt"}),
        (PolicyFacts("testing", True, True, None, True), {"mta_sts_testing"}, {"switch_mta_sts_to_enforce"}),
        (PolicyFacts("none", None, None, None, True), {"mta_sts_mode_none"}, {"switch_mta_sts_to_enforce"}),
        (PolicyFacts("enforce", False, True, None, True), {"mta_sts_mx_not_covered"}, {"fix_mta_sts_mx_patterns"}),
        (PolicyFacts("enforce", True, False, None, True), {"mta_sts_mx_fail"}, {"fix_mx_for_mta_sts"}),
        (STS_OK, set(), set()),
    ],
)
def test_domain_policy_hits_and_recommendations(
    policy: PolicyFacts, expected_hits: set[str], expected_recs: set[str]
) -> None:
    result = grade_domain([GOOD], policy)
    assert {h.code for h in result.hits} == expected_hits
    assert {r.code for r in result.recommendations} == expected_recs


_WHERE = "mx.example [192.0.2.1]: why"


@pytest.mark.parametrize(
    ("finding", "grade", "rule", "forced_safe"),
    [
        # DANE senders refuse the MX: worse than an expired certificate (cap C), so cap D.
        ("tlsa_no_match", G.D, "dane_tlsa_no_match", False),
        ("tlsa_bogus", G.D, "dane_tlsa_bogus", False),
        ("tlsa_starttls_failed", G.D, "dane_starttls_failed", False),
        ("tlsa_unusable", G.C, "dane_tlsa_unusable", True),  # TLS still required, nothing authenticated
        ("tlsa_unsigned", G.A, "dane_tlsa_unsigned", True),  # flagged only: senders ignore such records
    ],
)
def test_dane_findings_grade_the_domain(finding: str, grade: Grade, rule: str, forced_safe: bool) -> None:
    result = grade_domain([GOOD], dataclasses.replace(STS_OK, dane_findings=((finding, _WHERE),)))
    assert result.grade is grade
    assert rule in {h.code for h in result.hits}
    assert result.forced_tls_safe is forced_safe
    if not forced_safe:
        assert result.forced_tls_reasons[0] == f"dane_refused: {_WHERE}"
        expired = grade_domain([mx(cert_expired=True)], STS_OK).grade
        assert expired is not None and expired.better_than(grade)  # worse than an expired certificate


def test_every_domain_rule_is_exercised() -> None:
    seen: set[str] = set()
    dane = tuple((code, "mx.example [192.0.2.1]: why") for code in
                 ("tlsa_no_match", "tlsa_starttls_failed", "tlsa_bogus", "tlsa_unusable", "tlsa_unsigned"))
    policies = [NO_POLICY, PolicyFacts(None, None, None, None, False), PolicyFacts("testing", True, True, None, True),
                PolicyFacts("none", None, None, None, None), PolicyFacts("enforce", False, False, None, None),
                PolicyFacts(None, None, None, None, None, dane)]
    for policy in policies:
        for mx_list in ([GOOD, MX_UNTESTED], [MX_UNTESTED]):
            seen |= {h.code for h in grade_domain(mx_list, policy).hits}
    assert {code for code, rule in RUBRIC.items() if rule.scope is Scope.DOMAIN} <= seen


# --------------------------------------------------------------------------
# Forced TLS
# --------------------------------------------------------------------------

TLS10_ONLY = mx(mx_host="old.example.com", address="127.0.0.10", tls_versions=frozenset({"TLSv1.0"}))
TLS11_ONLY = mx(mx_host="old.example.com", address="127.0.0.11", tls_versions=frozenset({"TLSv1.1"}))
SSL3_ONLY = mx(mx_host="old.example.com", address="127.0.0.12", tls_versions=frozenset({"SSLv3"}))
NO_NIST = mx(mx_host="odd.example.com", address="127.0.0.13", nist_r1=False, nist_r2=False)


@pytest.mark.parametrize(
    ("mx_list", "lenient", "safe", "reason_codes"),
    [
        ([GOOD], False, True, []),
        ([GOOD, MX_B, MX_C], False, True, []),  # certificates do not matter for forced TLS
        ([TLS10_ONLY], False, False, ["version_too_old"]),
        ([TLS10_ONLY], True, True, []),
        ([TLS11_ONLY], True, True, []),
        ([SSL3_ONLY], True, False, ["version_too_old"]),
        ([GOOD, TLS10_ONLY], False, False, ["version_too_old"]),
        ([NO_NIST], False, False, ["no_nist_suite"]),
        ([NO_NIST], True, False, ["no_nist_suite"]),
        ([mx(tls_versions=frozenset({"TLSv1.3"}), nist_r1=False, nist_r2=True)], False, True, []),
        ([mx(starttls=False)], False, False, ["no_starttls"]),
        ([GOOD, MX_UNTESTED], False, None, ["not_tested"]),
        ([MX_UNTESTED], True, None, ["not_tested"]),
        # A definite failure decides even with an untested address (it cannot make the domain safe).
        ([mx(starttls=False), MX_UNTESTED], False, False, ["no_starttls", "not_tested"]),
        ([mx(versions_known=False, tls_versions=frozenset())], False, None, ["versions_unknown"]),
        ([mx(versions_known=False, tls_versions=frozenset({"TLSv1.3"}))], False, True, []),
        ([mx(versions_known=False, tls_versions=frozenset({"TLSv1.0"}))], True, True, []),
        ([mx(versions_known=False, tls_versions=frozenset({"TLSv1.0"}))], False, None, ["versions_unknown"]),
        ([mx(nist_r1=None, nist_r2=None)], False, None, ["suites_unknown"]),
        ([TLS10_ONLY, NO_NIST], False, False, ["version_too_old", "no_nist_suite"]),
        ([], False, None, ["no_mx_address"]),
    ],
)
def test_forced_tls(mx_list: list[MxFacts], lenient: bool, safe: bool | None, reason_codes: list[str]) -> None:
    verdict, reasons = forced_tls(mx_list, lenient_tls10=lenient)
    assert verdict is safe
    assert [r.split(":")[0] for r in reasons] == reason_codes
    domain = grade_domain(mx_list, NO_POLICY, lenient_tls10=lenient)
    assert (domain.forced_tls_safe, domain.forced_tls_reasons) == (verdict, reasons)


def test_forced_tls_reasons_name_the_mx() -> None:
    _, reasons = forced_tls([GOOD, TLS10_ONLY, MX_UNTESTED])
    assert reasons == (
        "version_too_old: old.example.com [127.0.0.10] - no TLS 1.2 or later accepted",
        "not_tested: mx4.example.com [::1] - the probe gave no STARTTLS answer",
    )


# --------------------------------------------------------------------------
# Documentation stays in sync
# --------------------------------------------------------------------------


def test_schema_doc_recommendation_texts_are_the_code_s() -> None:
    """grading.md §6 is RECOMMENDATIONS (one source of truth: check shows the same text)."""
    doc = (ROOT / "schemas" / "grading.md").read_text(encoding="utf-8")
    assert render_recommendations_table() in doc, "regenerate §6 of schemas/grading.md from RECOMMENDATIONS"


def test_schema_doc_contains_the_rubric_table_and_version() -> None:
    doc = (ROOT / "schemas" / "grading.md").read_text(encoding="utf-8")
    assert render_rubric_table() in doc, "regenerate the table in schemas/grading.md from render_rubric_table()"
    assert f"`{GRADING_VERSION}`" in doc
    for rule in RUBRIC.values():
        if rule.recommendation is not None:
            assert f"`{rule.recommendation.code}`" in doc


# --------------------------------------------------------------------------
# Properties: never raises, invariants, monotonicity
# --------------------------------------------------------------------------

opt_bool = st.none() | st.booleans()
mx_facts = st.builds(
    MxFacts,
    mx_host=st.sampled_from(["mx1.example.com", "mx2.example.com", "mx.example.net"]),
    address=st.sampled_from(["127.0.0.1", "127.0.0.2", "::1"]),
    tested=st.booleans(),
    starttls=st.booleans(),
    tls_versions=st.frozensets(st.sampled_from(TLS_VERSION_NAMES)),
    versions_known=st.booleans(),
    weak_classes=st.frozensets(st.sampled_from([c.value for c in WeakClass])),
    nist_r1=opt_bool,
    nist_r2=opt_bool,
    cert_trusted=opt_bool,
    cert_expired=opt_bool,
    cert_name_valid=opt_bool,
    cert_self_signed=opt_bool,
    cert_key_bits=st.none() | st.integers(min_value=0, max_value=16384),
    cert_key_type=st.none() | st.sampled_from(["rsa", "ec", "ed25519", "ed448", "dsa", "other", "RSA"]),
    cert_signature_algorithm=st.none() | st.sampled_from(
        ["sha256WithRSAEncryption", "sha1WithRSAEncryption", "md5WithRSAEncryption", "ecdsa-with-SHA384",
         "ecdsa-with-SHA1", "rsassaPss", "ED25519", "1.2.3.4", ""]
    ),
    plaintext_after_starttls=st.booleans(),
)
policies = st.builds(
    PolicyFacts,
    mta_sts_mode=st.none() | st.sampled_from(["enforce", "testing", "none"]),
    mta_sts_matches_all_mx=opt_bool,
    mta_sts_all_mx_pass=opt_bool,
    dane_valid=opt_bool,
    tlsrpt_valid=opt_bool,
)

Defect = Callable[[MxFacts], MxFacts]


def _set(**changes: Any) -> Defect:
    return lambda f: dataclasses.replace(f, **changes)


def _add_version(name: str) -> Defect:
    return lambda f: dataclasses.replace(f, tls_versions=f.tls_versions | {name})


def _drop_version(name: str) -> Defect:
    return lambda f: dataclasses.replace(f, tls_versions=f.tls_versions - {name})


def _add_weak(cls: WeakClass) -> Defect:
    return lambda f: dataclasses.replace(f, weak_classes=f.weak_classes | {cls.value})


def _halve_key(f: MxFacts) -> MxFacts:
    return dataclasses.replace(f, cert_key_bits=None if f.cert_key_bits is None else f.cert_key_bits // 2)


DEFECTS: list[Defect] = [
    _set(starttls=False), _set(nist_r1=False), _set(nist_r2=False), _set(cert_trusted=False),
    _set(cert_expired=True), _set(cert_name_valid=False), _set(cert_self_signed=True),
    _set(cert_signature_algorithm="sha1WithRSAEncryption"), _set(cert_signature_algorithm="md5WithRSAEncryption"),
    _set(plaintext_after_starttls=True), _halve_key,
    *(_add_version(v) for v in ("SSLv3", "TLSv1.0", "TLSv1.1")),
    *(_drop_version(v) for v in ("TLSv1.2", "TLSv1.3")),
    *(_add_weak(c) for c in WeakClass),
]


def _apply(base: MxFacts, defects: list[Defect]) -> MxFacts:
    for defect in defects:
        base = defect(base)
    return base


# Random facts are mostly riddled with defects (grade E), where one more defect rarely moves the letter;
# facts a few defects away from a clean server are where a non-monotone rule would show.
near_good = st.builds(
    _apply,
    st.sampled_from([
        GOOD,
        mx(tls_versions=frozenset({"TLSv1.3"}), nist_r1=False, nist_r2=True),
        mx(cert_key_type="ec", cert_key_bits=256, cert_signature_algorithm="ecdsa-with-SHA256"),
        mx(versions_known=False, nist_r1=None, nist_r2=None, cert_trusted=None),
    ]),
    st.lists(st.sampled_from(DEFECTS), max_size=3),
)
any_facts = near_good | mx_facts


@settings(max_examples=300, deadline=None)
@given(any_facts)
def test_grade_mx_never_raises_and_respects_invariants(facts: MxFacts) -> None:
    result = grade_mx(facts)
    if not facts.tested:
        assert result.grade is None and result.hits == ()
        return
    assert result.grade is not None
    assert result.grade.rank <= G.A.rank
    assert (result.grade is G.F) == (not facts.starttls)
    for h in result.hits:
        assert h.cap is None or result.grade.rank <= h.cap.rank
    assert result.grade.rank <= grade_for_score(100 - sum(h.points for h in result.hits)).rank or not facts.starttls
    assert len({r.code for r in result.recommendations}) == len(result.recommendations)


def _assume_defects_grow(before: MxFacts, after: MxFacts) -> None:
    """A "defect" that replaces a field can remove a worse one (an MD5 signature becomes SHA-1, NULL
    suites become RC4): that is an improvement, not an added defect. Monotonicity is claimed only when
    the set of rules hit grows."""
    assume({h.code for h in grade_mx(before).hits} <= {h.code for h in grade_mx(after).hits})


@settings(max_examples=400, deadline=None)
@given(any_facts, st.sampled_from(DEFECTS))
def test_adding_a_defect_never_improves_an_mx(facts: MxFacts, defect: Defect) -> None:
    facts = dataclasses.replace(facts, tested=True)
    _assume_defects_grow(facts, defect(facts))
    before, after = grade_mx(facts).grade, grade_mx(defect(facts)).grade
    assert before is not None and after is not None
    assert after.rank <= before.rank


@settings(max_examples=200, deadline=None)
@given(st.lists(any_facts, max_size=4), policies, st.booleans())
def test_grade_domain_never_raises(mx_list: list[MxFacts], policy: PolicyFacts, lenient: bool) -> None:
    result = grade_domain(mx_list, policy, lenient_tls10=lenient)
    assert isinstance(result, DomainGrade)
    tested = [m for m in mx_list if m.tested]
    if not tested:
        assert result.grade is None
        return
    assert result.grade is not None
    worst = worst_grade(g for g in (grade_mx(m).grade for m in tested) if g is not None)
    assert result.grade.rank <= worst.rank or (worst is G.A and result.grade is G.A_PLUS)
    if result.forced_tls_safe is True:
        assert all(m.tested and m.starttls for m in mx_list)


@settings(max_examples=300, deadline=None)
@given(st.lists(any_facts, min_size=1, max_size=3), policies, st.data())
def test_adding_a_defect_never_improves_a_domain(
    mx_list: list[MxFacts], policy: PolicyFacts, data: st.DataObject
) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(mx_list) - 1))
    defect = data.draw(st.sampled_from(DEFECTS))
    target = dataclasses.replace(mx_list[index], tested=True)
    _assume_defects_grow(target, defect(target))
    healthy = [*mx_list[:index], target, *mx_list[index + 1:]]
    damaged = [*mx_list[:index], defect(target), *mx_list[index + 1:]]
    before, after = grade_domain(healthy, policy).grade, grade_domain(damaged, policy).grade
    assert before is not None and after is not None
    assert after.rank <= before.rank
    # One more (defective) MX address never helps either.
    extra = grade_domain([*healthy, defect(target)], policy).grade
    assert extra is not None and extra.rank <= before.rank


@pytest.mark.parametrize("facts", [
    mx(dh_bits=2048, dh_group="rfc3526-modp2048"),  # a published prime of 2048 bits is fine
    mx(dh_bits=1024, dh_group=None) ,  # below 2048 but not a published prime: only the size rule
    mx(kx_groups=frozenset({"secp192r1"}), kx_groups_complete=False),  # partial list: unknown, not judged
    mx(kx_groups=frozenset({"secp192r1", "x25519"}), kx_groups_complete=True),  # a recommended curve too
    mx(secure_renegotiation=None, tls_compression=None, extended_master_secret=None),  # TLS 1.3 only: unknown
])
def test_key_exchange_rules_judge_only_observations(facts: MxFacts) -> None:
    codes = {h.code for h in grade_mx(facts).hits}
    assert not codes & {"dh_common_1024_prime", "only_deprecated_curves", "no_secure_renegotiation",
                        "tls_compression", "no_extended_master_secret"}
    assert ("dh_group_below_2048" in codes) == (facts.dh_bits == 1024)


def test_rule_codes_are_a_closed_set_with_one_rule_each() -> None:
    assert sorted(RUBRIC) == sorted(RuleCode)
    assert all(type(code) is RuleCode and RUBRIC[code].code is code for code in RUBRIC)


def test_recommendation_codes_are_a_closed_set_each_given_by_some_rule() -> None:
    given = {rule.recommendation.code for rule in RUBRIC.values() if rule.recommendation}
    assert given == set(RecommendationCode) == set(RECOMMENDATIONS)
    assert all(type(code) is RecommendationCode for code in given)


def test_the_writer_refuses_a_rule_code_that_is_a_plain_string() -> None:
    from scanner.output.arrow_schema import ColumnBuilder
    from scanner.output.rows import MxRow

    builder = ColumnBuilder(MxRow)
    row = MxRow(**{name: None for name in MxRow.__dataclass_fields__})  # type: ignore[arg-type]
    row.grade_rules = [RuleCode.CERT_EXPIRED]
    row.domain, row.mx_rank, row.scan_id, row.attempt = "example.com", 0, "scan", 1
    assert builder.table([row]).column("grade_rules").to_pylist() == [["cert_expired"]]
    row.grade_rules = ["cert_expired"]  # type: ignore[list-item]
    with pytest.raises(TypeError, match="grade_rules"):
        builder.table([row])
