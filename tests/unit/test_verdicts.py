"""The domain STARTTLS verdict: untested addresses never count as "no STARTTLS"."""

from __future__ import annotations

import itertools
import socket
from datetime import UTC, datetime

import pytest

from scanner.certs import CertificateInfo, KeyType, NameMatch, TrustStatus
from scanner.grading import grade_mx
from scanner.net.families import detect_families
from scanner.records import ProbeSummary
from scanner.status import ProbeStatus as P
from scanner.status import StarttlsVerdict as V
from scanner.verdicts import LinkJudge, coverage, starttls_verdict

OK, NO, HS, TO, TH, UN, SK = (P.STARTTLS_OK, P.NO_STARTTLS, P.TLS_HANDSHAKE_FAILED, P.TIMEOUT, P.THROTTLED,
                              P.UNREACHABLE, P.SKIPPED_RESERVED_ADDRESS)


@pytest.mark.parametrize(
    ("statuses", "verdict", "all_ok", "any_ok"),
    [
        ([], V.NOT_APPLICABLE, None, None),
        ([OK], V.ALL, True, True),
        ([OK, OK], V.ALL, True, True),
        ([NO], V.NONE, False, False),
        ([HS, P.STARTTLS_REJECTED], V.NONE, False, False),
        ([OK, NO], V.SOME, False, True),
        ([OK, HS], V.SOME, False, True),
        ([TO], V.INCOMPLETE, None, None),
        ([TH, UN, SK], V.INCOMPLETE, None, None),
        ([OK, TO], V.INCOMPLETE, None, True),  # the timed-out one may or may not do TLS
        ([NO, TH], V.INCOMPLETE, None, None),  # a 421 is never read as "no STARTTLS"
        ([OK, NO, TO], V.SOME, False, True),  # already decided whatever the untested one does
        ([P.SMTP_REJECTED], V.INCOMPLETE, None, None),
    ],
)
def test_verdict_table(statuses: list[P], verdict: V, all_ok: bool | None, any_ok: bool | None) -> None:
    tally = starttls_verdict(statuses)
    assert (tally.verdict, tally.all_ok, tally.any_ok) == (verdict, all_ok, any_ok)
    assert tally.answered + tally.untested == len(statuses)


def _summary(probe: str, names: tuple[str, ...], trust: TrustStatus = TrustStatus.TRUSTED) -> ProbeSummary:
    leaf = CertificateInfo(
        subject="", subject_cn=None, san_dns=names, san_ip=(), issuer="CN=ca", issuer_cn="ca", serial="1",
        not_before=datetime(2026, 1, 1, tzinfo=UTC), not_after=datetime(2027, 1, 1, tzinfo=UTC),
        key_type=KeyType.EC, key_bits=256, signature_algorithm="ecdsa-with-SHA256", sha256="00", self_issued=False,
    )
    return ProbeSummary(probe_id=probe, status=P.STARTTLS_OK, leaf=leaf, chain=(), cert_trust=trust,
                        cert_expired=False, cert_self_signed=False, plaintext_after_starttls=False, enumeration=None)


def test_link_judge_matches_uncached_judgement_per_host() -> None:
    judge = LinkJudge()
    summary = _summary("192.0.2.1|25", ("mx.example.com",))
    good = judge.judge("mx.example.com", "192.0.2.1", summary)
    other = judge.judge("mx.other.example", "192.0.2.1", summary)
    assert (good.name_match, good.cert_valid) == (NameMatch.SAN, True)
    assert (other.name_match, other.cert_valid) == (NameMatch.MISMATCH, False)
    assert judge.judge("mx.example.com", "192.0.2.1", summary) is good  # remembered
    assert good.grade == grade_mx(good.facts)


def test_link_judge_never_serves_a_judgement_of_another_summary() -> None:
    judge = LinkJudge()
    judge.judge("mx.example.com", "192.0.2.1", _summary("192.0.2.1|25", ("mx.example.com",)))
    untrusted = _summary("192.0.2.1|25", ("mx.example.com",), TrustStatus.UNKNOWN_ISSUER)
    assert judge.judge("mx.example.com", "192.0.2.1", untrusted).cert_valid is False


def test_link_judge_is_bounded() -> None:
    judge = LinkJudge(capacity=3)
    summaries = [_summary(f"192.0.2.{i}|25", ("mx.example.com",)) for i in range(10)]
    first = judge.judge("mx.example.com", "192.0.2.0", summaries[0])
    for i, summary in enumerate(summaries):
        judge.judge("mx.example.com", f"192.0.2.{i}", summary)
    assert len(judge._memo) == 3
    assert judge.judge("mx.example.com", "192.0.2.0", summaries[0]) is not first  # evicted, judged again


# --------------------------------------------------------------------------
# Address-family coverage
# --------------------------------------------------------------------------

NC = P.SKIPPED_FAMILY_UNREACHABLE


def _summaries(statuses: dict[str, P]) -> dict[str, ProbeSummary]:
    return {a: ProbeSummary(f"{a}|25", s, None, (), None, None, None, False, None) for a, s in statuses.items()}


@pytest.mark.parametrize(
    ("statuses", "overall", "v4", "v6", "families", "not_covered"),
    [
        ({"192.0.2.1": OK, "2001:db8::1": NC}, V.ALL, V.ALL, V.NOT_COVERED, ("ipv4",), 1),
        ({"192.0.2.1": OK, "2001:db8::1": UN}, V.INCOMPLETE, V.ALL, V.INCOMPLETE, ("ipv4", "ipv6"), 0),
        ({"192.0.2.1": NO, "2001:db8::1": NC}, V.NONE, V.NONE, V.NOT_COVERED, ("ipv4",), 1),
        ({"2001:db8::1": NC}, V.NOT_COVERED, V.NOT_APPLICABLE, V.NOT_COVERED, (), 1),
        ({"192.0.2.1": OK, "2001:db8::1": OK}, V.ALL, V.ALL, V.ALL, ("ipv4", "ipv6"), 0),
        ({}, V.NOT_APPLICABLE, V.NOT_APPLICABLE, V.NOT_APPLICABLE, (), 0),
    ],
)
def test_coverage_by_family(statuses: dict[str, P], overall: V, v4: V, v6: V, families: tuple[str, ...],
                            not_covered: int) -> None:
    got = coverage(_summaries(statuses))
    assert (got.tally.verdict, got.ipv4, got.ipv6, got.families, got.not_covered) == (overall, v4, v6, families,
                                                                                       not_covered)


def _coverage_by_lists(summaries: dict[str, ProbeSummary]) -> tuple[object, ...]:
    """The coverage rule written plainly: ``starttls_verdict`` over the covered addresses, per family."""
    def verdict(statuses: list[P]) -> V:
        if statuses and all(s is NC for s in statuses):
            return V.NOT_COVERED
        return starttls_verdict([s for s in statuses if s is not NC]).verdict
    v4 = [s.status for a, s in summaries.items() if ":" not in a]
    v6 = [s.status for a, s in summaries.items() if ":" in a]
    tested = [s.status for s in summaries.values() if s.status is not NC]
    tally = starttls_verdict(tested) if tested or not summaries else None
    families = tuple(name for name, statuses in (("ipv4", v4), ("ipv6", v6)) if any(s is not NC for s in statuses))
    return (tally.verdict if tally else V.NOT_COVERED, tally.answered if tally else 0, tally.ok if tally else 0,
            verdict(v4), verdict(v6), families, len(summaries) - len(tested))


def test_coverage_counts_agree_with_the_verdict_rule_on_every_mix() -> None:
    statuses = [OK, NO, HS, TO, TH, SK, NC]
    addresses = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"]
    checked = 0
    for size in range(len(addresses) + 1):
        for mix in itertools.product(statuses, repeat=size):
            summaries = _summaries(dict(zip(addresses[:size], mix, strict=True)))
            got = coverage(summaries)
            assert (got.tally.verdict, got.tally.answered, got.tally.ok, got.ipv4, got.ipv6, got.families,
                    got.not_covered) == _coverage_by_lists(summaries), mix
            checked += 1
    assert checked == sum(len(statuses) ** n for n in range(len(addresses) + 1))


@pytest.mark.parametrize(
    ("v4", "v6", "routes", "expected"),
    [
        ("auto", "auto", {4: True, 6: False}, (True, False)),
        ("auto", "auto", {4: True, 6: True}, (True, True)),
        ("auto", "on", {4: False, 6: False}, (False, True)),
        ("off", "auto", {4: True, 6: True}, (False, True)),
    ],
)
def test_detect_families(v4: str, v6: str, routes: dict[int, bool], expected: tuple[bool, bool]) -> None:
    def probe(family: socket.AddressFamily) -> tuple[bool, str]:
        return routes[6 if family is socket.AF_INET6 else 4], "scripted"

    got = detect_families(v4, v6, probe)
    assert (got.ipv4, got.ipv6) == expected
    assert got.covers("2001:db8::1") is expected[1] and got.covers("192.0.2.1") is expected[0]


def test_a_lab_scan_without_any_route_tries_every_family() -> None:
    """--allow-private on a host with no route at all: lab targets (loopback) need none, so every family
    not forced off is tried; a public scan there keeps both unreachable (and preflight refuses it)."""
    from scanner.net.families import detect_families

    def no_route(_: object) -> tuple[bool, str]:
        return False, "no route"

    public = detect_families("auto", "auto", no_route)
    assert (public.ipv4, public.ipv6) == (False, False)
    lab = detect_families("auto", "off", no_route, lab=True)
    assert (lab.ipv4, lab.ipv6) == (True, False) and "lab scan" in lab.detail

    def v4_only(family: object) -> tuple[bool, str]:
        import socket

        return family == socket.AF_INET, "route"

    mixed = detect_families("auto", "auto", v4_only, lab=True)  # a route exists: families as detected
    assert (mixed.ipv4, mixed.ipv6) == (True, False)
