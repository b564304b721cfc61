"""Pure assembly of a domain's rows from its DNS result, its addresses' probe summaries and policies.

The domain verdict rule (``starttls_verdict``) is the heart of the headline figure, so it is kept
small and table-tested: an address that could not be tested never counts as "no STARTTLS". Grades
come from ``scanner.grading`` (one rubric), DANE matching from ``scanner.policy.dane``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scanner.certs import NameMatch, TrustStatus, match_hostname
from scanner.dns.lookup import DomainDns, MailHost
from scanner.grading import GRADING_VERSION, MxFacts, MxGrade, PolicyFacts, grade_domain, grade_mx, version_facts
from scanner.input import InputLine
from scanner.output.rows import DomainRow, MxRow
from scanner.policy.dane import DaneVerdict, DnssecStatus, TlsaLookup, match_tlsa
from scanner.policy.domain import DomainPolicies
from scanner.probing import ProbeSummary, probe_id
from scanner.providers import ProviderMapper
from scanner.status import DnsOutcome, DomainStatus, MxSource, ProbeStatus, StarttlsVerdict

__all__ = ["LinkJudge", "LinkJudgement", "Tally", "build_domain_rows", "input_problem_row", "mx_tls_compliance",
           "starttls_verdict"]


@dataclass(frozen=True, slots=True)
class Tally:
    verdict: StarttlsVerdict
    answered: int  # addresses with a definitive answer
    ok: int  # addresses that completed STARTTLS + handshake
    untested: int

    @property
    def all_ok(self) -> bool | None:
        if self.verdict is StarttlsVerdict.ALL:
            return True
        if self.verdict in (StarttlsVerdict.SOME, StarttlsVerdict.NONE):
            return False
        return None

    @property
    def any_ok(self) -> bool | None:
        if self.ok:
            return True
        if self.verdict is StarttlsVerdict.NONE:
            return False
        return None


def starttls_verdict(statuses: list[ProbeStatus]) -> Tally:
    """Aggregate per-address probe statuses into the domain's STARTTLS verdict.

    - no addresses → not_applicable;
    - every address answered → all / some / none by how many completed STARTTLS;
    - some could not be tested → "some" if one answered with TLS and another answered without
      (already decided), otherwise "incomplete": the untested ones could change the answer.
    """
    answered = [s for s in statuses if s.is_definitive]
    ok = sum(1 for s in answered if s.tls_ok)
    untested = len(statuses) - len(answered)
    if not statuses:
        verdict = StarttlsVerdict.NOT_APPLICABLE
    elif untested == 0 and ok == len(answered):
        verdict = StarttlsVerdict.ALL
    elif untested == 0 and ok == 0:
        verdict = StarttlsVerdict.NONE
    elif untested == 0 or 0 < ok < len(answered):
        verdict = StarttlsVerdict.SOME
    else:
        verdict = StarttlsVerdict.INCOMPLETE
    return Tally(verdict, len(answered), ok, untested)


def _name_match(summary: ProbeSummary, host: str) -> NameMatch | None:
    return match_hostname(summary.leaf, host) if summary.leaf else None


@dataclass(frozen=True, slots=True)
class LinkJudgement:
    """Everything about one (MX host, address) link that depends on nothing else: name, facts, grade."""

    name_match: NameMatch | None
    cert_valid: bool | None  # trusted, current and valid for the host; None unless TLS completed
    facts: MxFacts
    grade: MxGrade


class LinkJudge:
    """Judges each (MX host, probe) link once per scan and remembers the answer.

    Most domains sit at a few providers: a million domains make a few thousand distinct links, and
    each would otherwise be name-matched and graded again for every domain behind it. The memo is
    bounded (oldest entries dropped first), so a long tail of self-hosted links cannot grow it.
    """

    def __init__(self, capacity: int = 20_000) -> None:  # ~1.7 KB a link: ~34 MB at most
        self._capacity = capacity
        self._memo: dict[tuple[str, str], tuple[ProbeSummary, LinkJudgement]] = {}
        self._providers: ProviderMapper | None = None

    @property
    def providers(self) -> ProviderMapper:
        """The scan's MX host → provider mapper (the Public Suffix List is parsed on first use, once)."""
        if self._providers is None:
            self._providers = ProviderMapper()
        return self._providers

    def judge(self, host: str, address: str, summary: ProbeSummary) -> LinkJudgement:
        key = (host, summary.probe_id)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is summary:
            return hit[1]
        judgement = _judge_link(host, address, summary)
        if len(self._memo) >= self._capacity:
            del self._memo[next(iter(self._memo))]  # dicts keep insertion order: this is the oldest
        self._memo[key] = (summary, judgement)
        return judgement


def _judge_link(host: str, address: str, summary: ProbeSummary) -> LinkJudgement:
    name = _name_match(summary, host)
    name_valid = name in (NameMatch.SAN, NameMatch.COMMON_NAME)
    cert_valid = summary.chain_trusted_and_current and name_valid \
        if summary.status is ProbeStatus.STARTTLS_OK else None
    facts = _mx_facts(host, address, summary, name)
    return LinkJudgement(name, cert_valid, facts, grade_mx(facts))


def mx_tls_compliance(dns: DomainDns, summaries: Mapping[str, ProbeSummary], judge: LinkJudge) -> dict[str, bool]:
    """Per MX host: would an MTA-STS enforcing sender deliver (RFC 8461 §5)? Untested hosts are left out."""
    out: dict[str, bool] = {}
    for host in dns.hosts:
        addresses = host.resolution.addresses
        results = [summaries[a] for a in addresses]
        if results and all(s.status.is_definitive for s in results):
            out[host.name] = all(judge.judge(host.name, a, summaries[a]).cert_valid is True for a in addresses)
    return out


def _mx_facts(host: str, address: str, summary: ProbeSummary, name: NameMatch | None) -> MxFacts:
    enum = summary.enumeration
    versions, known = version_facts(enum.versions) if enum else (frozenset(), False)
    leaf = summary.leaf
    trust = summary.cert_trust
    return MxFacts(
        mx_host=host, address=address, tested=summary.status.is_definitive,
        starttls=summary.status is ProbeStatus.STARTTLS_OK,
        tls_versions=versions, versions_known=known,
        weak_classes=frozenset(c.value for c in enum.weak_classes) if enum else frozenset(),
        nist_r1=enum.nist_r1 if enum else None, nist_r2=enum.nist_r2 if enum else None,
        # Expiry is judged on its own (cert_expired): an expired but otherwise trusted chain is "trusted".
        cert_trusted=trust in (TrustStatus.TRUSTED, TrustStatus.EXPIRED) if trust else None,
        cert_expired=summary.cert_expired,
        cert_name_valid=name in (NameMatch.SAN, NameMatch.COMMON_NAME) if name else None,
        cert_self_signed=summary.cert_self_signed,
        cert_key_bits=leaf.key_bits if leaf else None, cert_key_type=leaf.key_type.value if leaf else None,
        cert_signature_algorithm=leaf.signature_algorithm if leaf else None,
        plaintext_after_starttls=summary.plaintext_after_starttls,
    )


def _dane(lookup: TlsaLookup | None, summary: ProbeSummary, host: str) -> tuple[str | None, str | None]:
    if lookup is None:
        return None, None
    if lookup.outcome not in (DnsOutcome.ANSWER, DnsOutcome.NODATA, DnsOutcome.NXDOMAIN):
        return DaneVerdict.LOOKUP_FAILED.value, lookup.dnssec.value
    if not lookup.records:
        return DaneVerdict.NO_RECORDS.value, lookup.dnssec.value
    match = match_tlsa(lookup.records, summary.chain or None, reference_names=(host,))
    return match.verdict.value, lookup.dnssec.value


def _link_rows(scan_id: str, dns: DomainDns, rank: int, host: MailHost, summaries: Mapping[str, ProbeSummary],
               port: int, policies: DomainPolicies | None, judge: LinkJudge) -> tuple[list[MxRow], list[MxFacts]]:
    res = host.resolution
    common: dict[str, Any] = {
        "scan_id": scan_id, "domain": dns.domain, "mx_host": host.name, "provider": judge.providers.provider(host.name),
        "mx_preference": host.preference,
        "mx_rank": rank, "host_status": res.status, "host_detail": res.detail, "host_cnames": list(res.cnames),
    }
    if not res.addresses:
        return [MxRow(**common, address=None, ip_version=None, port=None, probe_id=None, probe_status=None,
                      cert_name_match=None, cert_valid=None, dane_verdict=None, dane_dnssec=None, grade=None,
                      grade_ordinal=None, grade_rules=[])], []
    rows, facts = [], []
    lookup = policies.tlsa.get(host.name) if policies else None
    for address in res.addresses:
        summary = summaries[address]
        link = judge.judge(host.name, address, summary)
        graded = link.grade
        dane_verdict, dane_dnssec = _dane(lookup, summary, host.name)
        rows.append(MxRow(
            **common, address=address, ip_version=6 if ":" in address else 4, port=port,
            probe_id=probe_id(address, port), probe_status=summary.status,
            cert_name_match=link.name_match.value if link.name_match else None, cert_valid=link.cert_valid,
            dane_verdict=dane_verdict, dane_dnssec=dane_dnssec,
            grade=graded.grade.value if graded.grade else None,
            grade_ordinal=graded.grade.rank if graded.grade else None, grade_rules=[h.code for h in graded.hits],
        ))
        facts.append(link.facts)
    return rows, facts


def _dane_valid(mx_rows: list[MxRow]) -> bool | None:
    probed = [r for r in mx_rows if r.address is not None]
    if not probed or any(r.dane_verdict is None for r in probed):
        return None
    if any(r.dane_verdict != DaneVerdict.MATCH.value for r in probed):
        return False
    if any(r.dane_dnssec != DnssecStatus.AUTHENTICATED.value for r in probed):
        return None if any(r.dane_dnssec == DnssecStatus.UNKNOWN.value for r in probed) else False
    return True


def _policy_facts(policies: DomainPolicies | None, dane_valid: bool | None) -> PolicyFacts:
    if policies is None:
        return PolicyFacts(None, None, None, None, None)
    sts = policies.mta_sts
    active = sts.active and sts.mode is not None
    compliant = [v.compliant for v in sts.mx_verdicts]
    return PolicyFacts(
        mta_sts_mode=sts.mode.value if active and sts.mode else None,
        mta_sts_matches_all_mx=(not sts.unmatched_mx) if active else None,
        mta_sts_all_mx_pass=(None if None in compliant else all(compliant)) if active else None,
        dane_valid=dane_valid,
        tlsrpt_valid=policies.tlsrpt.valid,
    )


def _policy_columns(policies: DomainPolicies | None, dane_valid: bool | None) -> dict[str, Any]:
    """Domain-row policy columns (all null when the policies were not checked)."""
    if policies is None:
        keys = ("mta_sts_txt", "mta_sts_active", "mta_sts_mode", "mta_sts_id", "mta_sts_max_age",
                "mta_sts_mx_patterns", "mta_sts_unmatched_mx", "mta_sts_mx_fail", "mta_sts_errors",
                "mta_sts_error_detail", "tlsrpt_status", "tlsrpt_rua", "dane_valid", "dane_mx_with_tlsa")
        return dict.fromkeys(keys)
    sts, rpt = policies.mta_sts, policies.tlsrpt
    usable_tlsa = sum(1 for lookup in policies.tlsa.values() if lookup is not None and lookup.records)
    return {
        "mta_sts_txt": sts.txt_present, "mta_sts_active": sts.active,
        "mta_sts_mode": sts.mode.value if sts.mode else None, "mta_sts_id": sts.txt_id,
        "mta_sts_max_age": sts.max_age, "mta_sts_mx_patterns": list(sts.mx_patterns),
        "mta_sts_unmatched_mx": list(sts.unmatched_mx),
        "mta_sts_mx_fail": [v.mx_host for v in sts.mx_verdicts if v.matched_pattern and v.tls_ok is False],
        "mta_sts_errors": [e.value for e in sts.error_classes],
        "mta_sts_error_detail": "; ".join(detail for _, detail in sts.errors),
        "tlsrpt_status": rpt.status.value, "tlsrpt_rua": [u.uri for u in rpt.rua],
        "dane_valid": dane_valid, "dane_mx_with_tlsa": usable_tlsa,
    }


def build_domain_rows(
    scan_id: str,
    line: InputLine,
    dns: DomainDns,
    summaries: Mapping[str, ProbeSummary],
    port: int,
    finished_at: datetime,
    policies: DomainPolicies | None = None,
    judge: LinkJudge | None = None,
) -> tuple[DomainRow, list[MxRow]]:
    """The domain row and its MX link rows. ``summaries`` maps every address in ``dns`` to its probe.

    ``judge`` is the scan's link memo (a fresh one when omitted).
    """
    judge = judge if judge is not None else LinkJudge()
    mx_rows: list[MxRow] = []
    facts: list[MxFacts] = []
    for rank, host in enumerate(dns.hosts):
        rows, host_facts = _link_rows(scan_id, dns, rank, host, summaries, port, policies, judge)
        mx_rows += rows
        facts += host_facts
    cert_checks = [r.cert_valid for r in mx_rows if r.cert_valid is not None]
    tally = starttls_verdict([s.status for s in summaries.values()])
    dane_valid = _dane_valid(mx_rows) if policies else None
    graded = grade_domain(facts, _policy_facts(policies, dane_valid)) if facts else None
    row = DomainRow(
        scan_id=scan_id, domain=dns.domain, input_line=line.line_no, input_raw=line.raw, input_rank=line.rank,
        status=dns.status, status_detail=dns.detail, duplicate_of_line=None, mx_source=dns.mx_source,
        mx_count=len(dns.hosts), mx_hosts=[h.name for h in dns.hosts],
        mx_provider=judge.providers.first(h.name for h in dns.hosts), null_mx_mixed=dns.null_mx_mixed,
        address_count=len(summaries),
        probed_count=tally.answered, starttls_ok_count=tally.ok, untested_count=tally.untested,
        starttls=tally.verdict, starttls_all=tally.all_ok, starttls_any=tally.any_ok,
        certs_valid_all=all(cert_checks) if cert_checks else None,
        **_policy_columns(policies, dane_valid),
        grade=graded.grade.value if graded and graded.grade else None,
        grade_ordinal=graded.grade.rank if graded and graded.grade else None,
        grade_rules=sorted({h.code for h in graded.hits}) if graded else [],
        grading_version=GRADING_VERSION if graded else None,
        forced_tls_safe=graded.forced_tls_safe if graded else None,
        forced_tls_reasons=list(graded.forced_tls_reasons) if graded else [],
        recommendations=[r.code for r in graded.recommendations] if graded else [],
        dns_ms=dns.elapsed_ms, finished_at=finished_at,
    )
    return row, mx_rows


def input_problem_row(
    scan_id: str,
    line: InputLine,
    status: DomainStatus,
    detail: str,
    finished_at: datetime,
    duplicate_of_line: int | None = None,
) -> DomainRow:
    """A domain row for a line that was not scanned: invalid, duplicate, excluded, or a bug."""
    return DomainRow(
        scan_id=scan_id, domain=line.domain, input_line=line.line_no, input_raw=line.raw, input_rank=line.rank,
        status=status, status_detail=detail, duplicate_of_line=duplicate_of_line, mx_source=MxSource.NONE, mx_count=0,
        mx_hosts=[], mx_provider=None, null_mx_mixed=False, address_count=0, probed_count=0, starttls_ok_count=0,
        untested_count=0,
        starttls=StarttlsVerdict.NOT_APPLICABLE, starttls_all=None, starttls_any=None, certs_valid_all=None,
        **_policy_columns(None, None), grade=None, grade_ordinal=None, grade_rules=[], grading_version=None,
        forced_tls_safe=None,
        forced_tls_reasons=[], recommendations=[], dns_ms=None, finished_at=finished_at,
    )
