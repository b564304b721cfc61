"""The policy judgement as a pure fold over hand-made facts (no server, no resolver, no event loop).

``scanner.policy.judge.judge_policies`` decides everything about a domain's MTA-STS, TLS-RPT and DANE
from facts; these tests hand it TXT answers, policy documents, TLSA lookups and links and compare
the judgement with what RFC 8461, RFC 8460 and RFC 7672 say. The last part checks that the scan's
rows carry exactly the DANE decision ``judge_dane`` (the function ``check_dane`` uses) makes.
"""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scanner.certs import TrustStore, check_chain
from scanner.dns.lookup import DomainDns, HostResolution, MailHost
from scanner.input import InputLine
from scanner.policy.dane import (
    DaneDelivery,
    DnssecStatus,
    TlsaLookup,
    TlsaRecord,
    dane_link,
    dane_sender_verdict,
    dane_valid,
    judge_dane,
)
from scanner.policy.facts import DomainPolicyFacts
from scanner.policy.judge import NOT_CHECKED, LinkEvidence, judge_policies, mx_tls_compliance
from scanner.policy.mta_sts import PolicyDocument, PolicyResponse, StsError, StsFailure, StsMode
from scanner.policy.tlsrpt import TlsRptStatus
from scanner.policy.txt import TxtAnswer
from scanner.probing import ProbeSummary
from scanner.status import DnsOutcome, DomainStatus, HostStatus, MxSource, ProbeStatus
from scanner.verdicts import LinkJudge, build_domain_rows
from worlds.ca import TestCA

DOMAIN = "example.test"
MX1, MX2 = f"mx1.{DOMAIN}", f"mx2.{DOMAIN}"
A1, A2 = "192.0.2.1", "192.0.2.2"
ENFORCE = f"version: STSv1\r\nmode: enforce\r\nmx: {MX1}\r\nmx: {MX2}\r\nmax_age: 86400\r\n".encode()


def _txt(prefix: str, *texts: str, outcome: DnsOutcome = DnsOutcome.ANSWER, detail: str = "") -> TxtAnswer:
    return TxtAnswer(f"{prefix}.{DOMAIN}", outcome, texts, detail)


def _document(body: bytes = ENFORCE, *, status: int = 200, content_type: str = "text/plain",
              location: str | None = None, max_bytes: int = 65536) -> PolicyDocument:
    response = PolicyResponse(status, content_type, location, body if status == 200 else None)
    return PolicyDocument(f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt", max_bytes, response, None, (A1,))


def _facts(sts_txt: TxtAnswer | None = None, document: PolicyDocument | None = None,
           rpt: TxtAnswer | None = None, tlsa: dict[str, TlsaLookup | None] | None = None) -> DomainPolicyFacts:
    return DomainPolicyFacts(
        DOMAIN,
        sts_txt if sts_txt is not None else _txt("_mta-sts", "v=STSv1; id=1"),
        document,
        rpt if rpt is not None else _txt("_smtp._tls", f"v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}"),
        tlsa if tlsa is not None else {},
    )


def _link(host: str, address: str, *, cert_valid: bool | None = True, covered: bool = True, tested: bool = True,
          tls_ok: bool = True, chain: tuple[bytes, ...] = ()) -> LinkEvidence:
    return LinkEvidence(host, address, covered, tested, tls_ok, cert_valid, chain)


# --------------------------------------------------------------------------
# MTA-STS (RFC 8461)
# --------------------------------------------------------------------------


def test_enforce_policy_judges_each_mx_from_the_probes() -> None:
    links = [_link(MX1, A1), _link(MX2, A2, cert_valid=False)]
    judged = judge_policies(DOMAIN, [MX1, MX2], links, _facts(document=_document()))
    assert judged.mta_sts is not None and judged.mta_sts.active
    assert [(v.mx_host, v.compliant, v.would_reject) for v in judged.mta_sts.mx_verdicts] == [
        (MX1, True, False), (MX2, False, True)]
    columns = judged.columns()
    assert (columns["mta_sts_mode"], columns["mta_sts_mx_fail"], columns["mta_sts_unmatched_mx"]) == (
        "enforce", [MX2], [])
    assert (judged.grading.mta_sts_mode, judged.grading.mta_sts_matches_all_mx,
            judged.grading.mta_sts_all_mx_pass) == ("enforce", True, False)


def test_an_untested_mx_leaves_compliance_open() -> None:
    links = [_link(MX1, A1), _link(MX2, A2, tested=False, tls_ok=False, cert_valid=None)]
    judged = judge_policies(DOMAIN, [MX1, MX2], links, _facts(document=_document()))
    assert judged.mta_sts is not None
    assert [v.compliant for v in judged.mta_sts.mx_verdicts] == [True, None]
    assert judged.grading.mta_sts_all_mx_pass is None


def test_mx_compliance_reads_covered_addresses_only() -> None:
    links = [_link(MX1, A1), _link(MX1, "2001:db8::1", covered=False, tested=False, cert_valid=None),
             _link(MX2, A2, tested=False, cert_valid=None), _link(MX2, "192.0.2.3", cert_valid=False)]
    # MX1: its only covered address is valid; MX2: one address untested, so left out (unknown).
    assert mx_tls_compliance(links) == {MX1: True}


def test_unmatched_mx_and_testing_mode() -> None:
    body = f"version: STSv1\nmode: testing\nmx: {MX1}\nmax_age: 600\n".encode()
    judged = judge_policies(DOMAIN, [MX1, MX2], [_link(MX1, A1), _link(MX2, A2)], _facts(document=_document(body)))
    assert judged.mta_sts is not None and judged.mta_sts.unmatched_mx == (MX2,)
    assert [v.would_reject for v in judged.mta_sts.mx_verdicts] == [False, False]  # testing never rejects
    assert (judged.grading.mta_sts_mode, judged.grading.mta_sts_matches_all_mx) == ("testing", False)


@pytest.mark.parametrize(
    ("document", "error"),
    [
        (_document(status=301, location="https://elsewhere.test/"), StsError.HTTP_REDIRECT),
        (_document(status=404), StsError.HTTP_STATUS),
        (_document(content_type="text/html"), StsError.MEDIA_TYPE),
        (_document(ENFORCE + b"x" * 100, max_bytes=len(ENFORCE)), StsError.TOO_LARGE),
        (_document(b"version: STSv1\nmode: reject\n"), StsError.POLICY_SYNTAX),
        (PolicyDocument("https://mta-sts.example.test/.well-known/mta-sts.txt", 65536, None,
                        StsFailure(StsError.FETCH_TIMEOUT, "no complete response within 1s")), StsError.FETCH_TIMEOUT),
    ],
)
def test_a_document_that_is_no_policy(document: PolicyDocument, error: StsError) -> None:
    judged = judge_policies(DOMAIN, [MX1], [_link(MX1, A1)], _facts(document=document))
    assert judged.mta_sts is not None
    assert (judged.mta_sts.error_classes, judged.mta_sts.active) == ((error,), False)
    assert judged.columns()["mta_sts_mode"] is None and judged.grading.mta_sts_mode is None


def test_two_sts_records_keep_the_fetched_mode_apart() -> None:
    facts = _facts(_txt("_mta-sts", "v=STSv1; id=1", "v=STSv1; id=2"), _document())
    columns = judge_policies(DOMAIN, [MX1], [_link(MX1, A1)], facts).columns()
    assert (columns["mta_sts_txt"], columns["mta_sts_active"]) == (True, False)
    assert (columns["mta_sts_mode"], columns["mta_sts_fetched_mode"]) == (None, StsMode.ENFORCE.value)
    assert columns["mta_sts_errors"] == [StsError.TXT_MULTIPLE.value]


@pytest.mark.parametrize(
    ("outcome", "sts_error", "rpt_status"),
    [
        (DnsOutcome.NXDOMAIN, StsError.TXT_MISSING, TlsRptStatus.MISSING),
        (DnsOutcome.NODATA, StsError.TXT_MISSING, TlsRptStatus.MISSING),
        (DnsOutcome.SERVFAIL, StsError.DNS_ERROR, TlsRptStatus.DNS_ERROR),
        (DnsOutcome.TIMEOUT, StsError.DNS_ERROR, TlsRptStatus.DNS_ERROR),
    ],
)
def test_txt_answers_without_records(outcome: DnsOutcome, sts_error: StsError, rpt_status: TlsRptStatus) -> None:
    facts = _facts(_txt("_mta-sts", outcome=outcome, detail="upstream said so"),
                   rpt=_txt("_smtp._tls", outcome=outcome))
    judged = judge_policies(DOMAIN, [MX1], [_link(MX1, A1)], facts)
    assert judged.mta_sts is not None and judged.tlsrpt is not None
    assert (judged.mta_sts.error_classes, judged.tlsrpt.status) == ((sts_error,), rpt_status)
    assert judged.grading.tlsrpt_valid is False


def test_tlsrpt_record_is_read() -> None:
    judged = judge_policies(DOMAIN, [MX1], [_link(MX1, A1)], _facts())
    assert judged.columns()["tlsrpt_status"] == "valid" and judged.grading.tlsrpt_valid is True
    bad = judge_policies(DOMAIN, [MX1], [_link(MX1, A1)], _facts(rpt=_txt("_smtp._tls", "v=TLSRPTv1; rua=ftp://x")))
    assert bad.columns()["tlsrpt_status"] == "invalid"


def test_not_checked_and_mx_bogus() -> None:
    unchecked = judge_policies(DOMAIN, [MX1], [_link(MX1, A1)], None)
    assert unchecked.columns() == NOT_CHECKED.columns()
    assert all(v in (None, []) for v in unchecked.columns().values())
    bogus = judge_policies(DOMAIN, [], [], None, mx_bogus="RRSIG expired")
    assert bogus.dane_sender is not None and bogus.dane_sender.delivery is DaneDelivery.NO
    assert bogus.grading.dane_findings == (("mx_bogus", f"{DOMAIN}: MX lookup failed DNSSEC validation "
                                                        "(RRSIG expired)"),)


# --------------------------------------------------------------------------
# DANE (RFC 7672)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    chain1: tuple[bytes, ...]  # mx1's chain, leaf first
    chain2: tuple[bytes, ...]
    store: TrustStore


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = TestCA(tmp_path_factory.mktemp("judge-ca"))

    def chain(host: str) -> tuple[bytes, ...]:
        pems = x509.load_pem_x509_certificates(ca.issue([host]).cert_file.read_bytes())
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in pems)

    return Pki(chain(MX1), chain(MX2), TrustStore.from_pem_file(ca.ca_file))


def _ee(leaf_der: bytes) -> TlsaRecord:
    spki = x509.load_der_x509_certificate(leaf_der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return TlsaRecord(3, 1, 1, hashlib.sha256(spki).digest())


def _ta(ca_der: bytes) -> TlsaRecord:
    return TlsaRecord(2, 0, 1, hashlib.sha256(ca_der).digest())


def _lookup(host: str, *records: TlsaRecord, dnssec: DnssecStatus = DnssecStatus.AUTHENTICATED,
            outcome: DnsOutcome | None = None, name_too_long: bool = False) -> TlsaLookup:
    found = outcome or (DnsOutcome.ANSWER if records else DnsOutcome.NXDOMAIN)
    return TlsaLookup(f"_25._tcp.{host}", found, records, dnssec, "", None, 0.0, name_too_long)


def test_matching_authenticated_tlsa_is_valid_and_delivered(pki: Pki) -> None:
    facts = _facts(tlsa={MX1: _lookup(MX1, _ee(pki.chain1[0]))})
    judged = judge_policies(DOMAIN, [MX1], [_link(MX1, A1, chain=pki.chain1)], facts)
    assert judged.link_dane(MX1, A1) == ("match", "authenticated")
    assert judged.dane_valid is True and judged.dane_mx_with_tlsa == 1
    assert judged.dane_sender is not None and judged.dane_sender.delivery is DaneDelivery.YES


def test_stale_tlsa_refuses_one_mx_of_two(pki: Pki) -> None:
    facts = _facts(tlsa={MX1: _lookup(MX1, _ee(pki.chain2[0])), MX2: _lookup(MX2)})
    links = [_link(MX1, A1, chain=pki.chain1), _link(MX2, A2, chain=pki.chain2)]
    judged = judge_policies(DOMAIN, [MX1, MX2], links, facts)
    assert [judged.link_dane(MX1, A1), judged.link_dane(MX2, A2)] == [("no_match", "authenticated"),
                                                                        ("no_records", "authenticated")]
    assert judged.dane_valid is False
    assert judged.dane_sender is not None and judged.dane_sender.delivery is DaneDelivery.PARTIAL
    assert [code for code, _ in judged.grading.dane_findings] == ["tlsa_no_match"]


def test_dane_ta_checks_the_mx_name(pki: Pki) -> None:
    # mx2 presents a chain through the same intermediate as mx1's TLSA names, but its leaf names mx2.
    facts = _facts(tlsa={MX1: _lookup(MX1, _ta(pki.chain1[1]))})
    judged = judge_policies(DOMAIN, [MX1, MX2], [_link(MX1, A1, chain=pki.chain2)], facts)
    assert judged.link_dane(MX1, A1) == ("name_mismatch", "authenticated")


@pytest.mark.parametrize(
    ("dnssec", "valid", "delivery"),
    [
        (DnssecStatus.AUTHENTICATED, True, DaneDelivery.YES),
        (DnssecStatus.NOT_AUTHENTICATED, False, DaneDelivery.NOT_DANE),
        (DnssecStatus.UNKNOWN, None, DaneDelivery.UNKNOWN),
    ],
)
def test_dnssec_status_decides_whether_dane_applies(pki: Pki, dnssec: DnssecStatus, valid: bool | None,
                                                     delivery: DaneDelivery) -> None:
    facts = _facts(tlsa={MX1: _lookup(MX1, _ee(pki.chain1[0]), dnssec=dnssec)})
    judged = judge_policies(DOMAIN, [MX1], [_link(MX1, A1, chain=pki.chain1)], facts)
    assert judged.dane_valid is valid
    assert judged.dane_sender is not None and judged.dane_sender.delivery is delivery


def test_tlsa_not_looked_up_leaves_dane_open(pki: Pki) -> None:
    judged = judge_policies(DOMAIN, [MX1], [_link(MX1, A1, chain=pki.chain1)], _facts(tlsa={MX1: None}))
    assert judged.link_dane(MX1, A1) == (None, None)
    assert judged.dane_valid is None
    assert judged.dane_sender is not None and judged.dane_sender.delivery is DaneDelivery.UNKNOWN


def test_uncovered_addresses_are_outside_dane(pki: Pki) -> None:
    facts = _facts(tlsa={MX1: _lookup(MX1, _ee(pki.chain1[0]))})
    links = [_link(MX1, A1, chain=pki.chain1),
             _link(MX1, "2001:db8::1", covered=False, tested=False, tls_ok=False, cert_valid=None)]
    judged = judge_policies(DOMAIN, [MX1], links, facts)
    assert judged.link_dane(MX1, "2001:db8::1") == ("no_certificate", "authenticated")  # row still says so
    assert judged.dane_valid is True
    assert judged.dane_sender is not None and judged.dane_sender.delivery is DaneDelivery.YES


# --------------------------------------------------------------------------
# One DANE decision: the scan's rows carry judge_dane's answer (check_dane's function)
# --------------------------------------------------------------------------

_LOOKUP_KINDS = ("ee_match", "ee_stale", "ta_match", "ta_other_name", "pkix_only", "none", "servfail", "bogus",
                 "too_long")
_DNSSEC = (DnssecStatus.AUTHENTICATED, DnssecStatus.NOT_AUTHENTICATED, DnssecStatus.UNKNOWN)


def _kind_lookup(kind: str, host: str, pki: Pki, dnssec: DnssecStatus) -> TlsaLookup:
    records = {
        "ee_match": (_ee(pki.chain1[0]),), "ee_stale": (_ee(pki.chain2[0]),), "ta_match": (_ta(pki.chain1[1]),),
        "ta_other_name": (_ta(pki.chain1[1]),), "pkix_only": (TlsaRecord(1, 1, 1, b"\x00" * 32),),
    }.get(kind, ())
    if kind == "servfail":
        return _lookup(host, outcome=DnsOutcome.SERVFAIL, dnssec=DnssecStatus.UNKNOWN)
    if kind == "bogus":
        return _lookup(host, outcome=DnsOutcome.SERVFAIL, dnssec=DnssecStatus.BOGUS)
    if kind == "too_long":
        return _lookup(host, outcome=DnsOutcome.ERROR, dnssec=DnssecStatus.UNKNOWN, name_too_long=True)
    return _lookup(host, *records, dnssec=dnssec)


def _probe(address: str, chain: tuple[bytes, ...], store: TrustStore, status: ProbeStatus) -> ProbeSummary:
    verdict = check_chain(chain, store, datetime.now(UTC)) if chain else None
    return ProbeSummary(
        probe_id=f"{address}|25", status=status, leaf=verdict.leaf if verdict else None, chain=chain,
        cert_trust=verdict.trust if verdict else None, cert_expired=verdict.expired if verdict else None,
        cert_self_signed=verdict.self_signed if verdict else None, plaintext_after_starttls=False, enumeration=None)


@pytest.mark.parametrize("dnssec", _DNSSEC, ids=[d.value for d in _DNSSEC])
@pytest.mark.parametrize("kind", _LOOKUP_KINDS)
@pytest.mark.parametrize("spelling", ["plain", "upper-dot"])
def test_scan_rows_carry_the_one_dane_decision(pki: Pki, kind: str, dnssec: DnssecStatus, spelling: str) -> None:
    """The scan's rows (build_domain_rows) and check_dane's decision (judge_dane) never disagree: each
    row's dane_verdict/dane_dnssec is judge_dane's, dane_valid and dane_delivery fold those results."""
    mx1 = MX1.upper() + "." if spelling == "upper-dot" else MX1
    chain = pki.chain2 if kind == "ta_other_name" else pki.chain1
    dns = DomainDns(DOMAIN, DomainStatus.OK, MxSource.MX, (
        MailHost(mx1, 10, HostResolution(mx1, HostStatus.OK, (A1,))),
        MailHost(MX2, 20, HostResolution(MX2, HostStatus.OK, (A2,))),
    ))
    summaries = {A1: _probe(A1, chain, pki.store, ProbeStatus.STARTTLS_OK),
                 A2: _probe(A2, (), pki.store, ProbeStatus.NO_STARTTLS)}
    lookups = {mx1: _kind_lookup(kind, mx1, pki, dnssec), MX2: _lookup(MX2, _ee(pki.chain2[0]), dnssec=dnssec)}
    line = InputLine(1, DOMAIN, DOMAIN, None)
    row, mx_rows = build_domain_rows("scan", 1, line, dns, summaries, 25, datetime.now(UTC),
                                     _facts(tlsa=dict(lookups)))
    results = [judge_dane(mx1, lookups[mx1], chain), judge_dane(MX2, lookups[MX2], ())]
    assert [(r.dane_verdict, r.dane_dnssec) for r in mx_rows] == [(d.verdict.value, d.dnssec.value) for d in results]
    assert row.dane_valid is dane_valid(results)
    expected = dane_sender_verdict([dane_link(mx1, A1, results[0], tested=True, tls_ok=True),
                                    dane_link(MX2, A2, results[1], tested=True, tls_ok=False)])
    assert (row.dane_delivery, row.dane_delivery_reasons) == (expected.delivery.value, list(expected.reasons))


# --------------------------------------------------------------------------
# The scan's memo per set of mail hosts (LinkJudge.mail_set)
# --------------------------------------------------------------------------

OTHER = "other.test"


def _plain(row: object) -> dict[str, object]:
    values = {name: getattr(row, name) for name in row.__slots__}  # type: ignore[attr-defined]
    values.pop("finished_at", None)
    return values


def _own_facts(domain: str, *, records: bool, tlsa: dict[str, TlsaLookup | None]) -> DomainPolicyFacts:
    """``domain``'s facts: an enforcing MTA-STS policy and a TLS-RPT record, or no TXT record at all."""
    if not records:
        none = DnsOutcome.NXDOMAIN
        return DomainPolicyFacts(domain, TxtAnswer(f"_mta-sts.{domain}", none, (), "NXDOMAIN"), None,
                                 TxtAnswer(f"_smtp._tls.{domain}", none, (), "NXDOMAIN"), tlsa)
    document = PolicyDocument(f"https://mta-sts.{domain}/.well-known/mta-sts.txt", 65536,
                              PolicyResponse(200, "text/plain", None, ENFORCE), None, (A1,))
    return DomainPolicyFacts(domain, TxtAnswer(f"_mta-sts.{domain}", DnsOutcome.ANSWER, ("v=STSv1; id=7",), ""),
                             document, TxtAnswer(f"_smtp._tls.{domain}", DnsOutcome.ANSWER,
                                                 (f"v=TLSRPTv1; rua=mailto:r@{domain}",), ""), tlsa)


def test_domains_behind_the_same_mail_hosts_share_one_judgement_of_them(pki: Pki) -> None:
    """Two domains behind the same hosts, probes and TLSA lookups: the second reuses the first's judgement
    of the hosts (a memo hit) and gets exactly the rows a judgement of its own gives, its domain
    column and its own MTA-STS/TLS-RPT columns and grade included."""
    hosts = (MailHost(MX1, 10, HostResolution(MX1, HostStatus.OK, (A1,))),
             MailHost(MX2, 20, HostResolution(MX2, HostStatus.OK, (A2,))))
    summaries = {A1: _probe(A1, pki.chain1, pki.store, ProbeStatus.STARTTLS_OK),
                 A2: _probe(A2, pki.chain1, pki.store, ProbeStatus.STARTTLS_OK)}
    tlsa: dict[str, TlsaLookup | None] = {MX1: _lookup(MX1, _ee(pki.chain1[0])), MX2: None}
    shared = LinkJudge()
    for number, (domain, records) in enumerate([(DOMAIN, True), (OTHER, False), (DOMAIN, False)], start=1):
        dns = DomainDns(domain, DomainStatus.OK, MxSource.MX, hosts)
        facts = _own_facts(domain, records=records, tlsa=tlsa)
        args = ("scan", 1, InputLine(number, domain, domain, None), dns, summaries, 25, datetime.now(UTC), facts)
        row, mx_rows = build_domain_rows(*args, judge=shared)
        alone, alone_mx = build_domain_rows(*args, judge=LinkJudge())
        assert _plain(row) == _plain(alone) and [_plain(r) for r in mx_rows] == [_plain(r) for r in alone_mx]
        assert {r.domain for r in mx_rows} == {domain}
        assert row.mta_sts_mode == ("enforce" if records else None)
        assert row.tlsrpt_status == (TlsRptStatus.VALID if records else TlsRptStatus.MISSING)
        assert shared.mail_set_hits == number - 1


def test_another_probe_or_tlsa_lookup_is_judged_anew(pki: Pki) -> None:
    """The memo is keyed by the very objects judged: a new probe summary (even an equal one) or another
    TLSA lookup of the same host is judged again, and its rows say what it found."""
    resolution = HostResolution(MX1, HostStatus.OK, (A1,))
    dns = DomainDns(DOMAIN, DomainStatus.OK, MxSource.MX, (MailHost(MX1, 10, resolution),))
    line = InputLine(1, DOMAIN, DOMAIN, None)
    ok = {A1: _probe(A1, pki.chain1, pki.store, ProbeStatus.STARTTLS_OK)}
    matching: dict[str, TlsaLookup | None] = {MX1: _lookup(MX1, _ee(pki.chain1[0]))}
    judge = LinkJudge()

    def rows(summaries: dict[str, ProbeSummary], tlsa: dict[str, TlsaLookup | None]) -> tuple[object, object]:
        row, mx_rows = build_domain_rows("scan", 1, line, dns, summaries, 25, datetime.now(UTC),
                                         _own_facts(DOMAIN, records=False, tlsa=tlsa), judge=judge)
        return row.starttls, (mx_rows[0].probe_status, mx_rows[0].dane_verdict)

    assert rows(ok, matching) == ("all", ("starttls_ok", "match"))
    assert rows({A1: _probe(A1, (), pki.store, ProbeStatus.NO_STARTTLS)}, matching) == \
        ("none", ("no_starttls", "no_certificate"))
    assert rows(ok, {MX1: _lookup(MX1, _ee(pki.chain2[0]))}) == ("all", ("starttls_ok", "no_match"))
    assert rows(dict(ok), dict(matching)) == ("all", ("starttls_ok", "match"))  # the same objects: a hit
    assert judge.mail_set_hits == 1
    assert rows({A1: _probe(A1, pki.chain1, pki.store, ProbeStatus.STARTTLS_OK)}, matching)[1][1] == "match"
    assert judge.mail_set_hits == 1  # an equal but new summary is judged again


def test_the_mail_set_memo_is_bounded(pki: Pki) -> None:
    judge = LinkJudge(mail_sets=2)
    line = InputLine(1, DOMAIN, DOMAIN, None)
    for i in range(5):
        host = f"mx{i}.{DOMAIN}"
        dns = DomainDns(DOMAIN, DomainStatus.OK, MxSource.MX,
                        (MailHost(host, 10, HostResolution(host, HostStatus.OK, (A1,))),))
        build_domain_rows("scan", 1, line, dns, {A1: _probe(A1, (), pki.store, ProbeStatus.NO_STARTTLS)}, 25,
                          datetime.now(UTC), None, judge=judge)
    assert len(judge._sets) == 2


# --------------------------------------------------------------------------
# Layering: the judgement loads no network code
# --------------------------------------------------------------------------

_PURE = ("scanner.policy.judge", "scanner.policy.dane", "scanner.policy.mta_sts", "scanner.policy.tlsrpt",
         "scanner.policy.txt", "scanner.policy.facts", "scanner.grading")


@pytest.mark.parametrize("module", _PURE)
def test_pure_policy_modules_import_no_io(module: str) -> None:
    """Importing a judgement module loads no asyncio, aiohttp, DNS client or policy I/O module."""
    probe = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
             "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncio', 'aiohttp', 'dns') "
             "or m.startswith('scanner.dns') or m in ('scanner.policy.domain', 'scanner.policy.sts_fetch', "
             "'scanner.policy.tlsa_lookup'))))")
    loaded = subprocess.run([sys.executable, "-c", probe, module], capture_output=True, text=True, check=True).stdout
    assert loaded.split() == []


def test_facts_cross_a_process_boundary_as_they_are(pki: Pki) -> None:
    """The stage's facts are plain values: pickled (as a process pool or Ray would) they judge the same."""
    facts = _facts(document=_document(), tlsa={MX1: _lookup(MX1, _ee(pki.chain1[0])), MX2: None})
    copy = pickle.loads(pickle.dumps(facts))
    assert copy == facts
    links = [_link(MX1, A1, chain=pki.chain1), _link(MX2, A2, cert_valid=False)]
    assert judge_policies(DOMAIN, [MX1, MX2], links, copy).columns() == \
        judge_policies(DOMAIN, [MX1, MX2], links, facts).columns()
