"""Pure assembly of a domain's rows from its DNS result, its addresses' probe summaries and policies.

The domain verdict rule (``starttls_verdict``) is the heart of the headline figure, so it is kept
small and table-tested: an address that could not be tested never counts as "no STARTTLS". Grades
come from ``scanner.grading`` (one rubric); every policy judgement (MTA-STS, TLS-RPT, DANE, what the
rubric sees of them) from the fold ``scanner.policy.judge.judge_policies``, fed the links' facts here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scanner.certs import NameMatch, TrustStatus, match_hostname
from scanner.dns.records import DomainDns, MailHost
from scanner.grading import GRADING_VERSION, MxFacts, MxGrade, PolicyFacts, grade_domain, grade_mx, version_facts
from scanner.output.rows import DomainRow, MxRow
from scanner.policy.dane import TlsaLookup
from scanner.policy.facts import DomainPolicyFacts
from scanner.policy.judge import (
    NOT_CHECKED,
    DaneJudgement,
    LinkEvidence,
    judge_dane_links,
    judge_policies,
    mx_tls_compliance,
)
from scanner.providers import ProviderMapper
from scanner.records import InputLine, ProbeSummary, probe_id
from scanner.status import (
    CertSource,
    DomainStatus,
    Family,
    MxSource,
    ProbeStatus,
    SessionFact,
    StarttlsVerdict,
)
from scanner.tls.enumeration import KeyExchangeResult
from scanner.tls.groups import group_name

# (MX host, address) → the address as a sender sending SNI = that host sees it (ProbeService.link).
LinkViews = Mapping[tuple[str, str], ProbeSummary]
# Links whose own certificate is unknown: no name verdict, never "mismatch" (scanner.sni).
_UNJUDGED = {CertSource.NOT_CHECKED: NameMatch.NOT_CHECKED, CertSource.SESSION_FAILED: NameMatch.SESSION_FAILED}

__all__ = ["Coverage", "LinkJudge", "LinkJudgement", "LinkViews", "MailSet", "Tally", "build_domain_rows", "coverage",
           "covered", "input_problem_row", "link_evidence", "starttls_verdict"]


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
    return _tally(len(statuses), len(answered), ok)


def _tally(addresses: int, answered: int, ok: int) -> Tally:
    """``starttls_verdict`` from the counts: addresses, those answered, those answered with TLS."""
    untested = addresses - answered
    if not addresses:
        verdict = StarttlsVerdict.NOT_APPLICABLE
    elif untested == 0 and ok == answered:
        verdict = StarttlsVerdict.ALL
    elif untested == 0 and ok == 0:
        verdict = StarttlsVerdict.NONE
    elif untested == 0 or 0 < ok < answered:
        verdict = StarttlsVerdict.SOME
    else:
        verdict = StarttlsVerdict.INCOMPLETE
    return Tally(verdict, answered, ok, untested)


def _unjudged(summary: ProbeSummary) -> NameMatch | None:
    return _UNJUDGED.get(summary.cert_source) if summary.cert_source is not None else None


def covered(summary: ProbeSummary) -> bool:
    """Is the address of a family this vantage can reach? Uncovered ones are outside every verdict."""
    return summary.status is not ProbeStatus.SKIPPED_FAMILY_UNREACHABLE


@dataclass(frozen=True, slots=True)
class Coverage:
    """The STARTTLS verdict over the covered families, per family, and which families those are."""

    tally: Tally
    ipv4: StarttlsVerdict
    ipv6: StarttlsVerdict
    families: tuple[Family, ...]
    not_covered: int


def coverage(summaries: Mapping[str, ProbeSummary]) -> Coverage:
    """STARTTLS over the addresses this vantage could probe, and per family (IPv4 first).

    A dual-stack domain scanned from an IPv4-only host is "all" over IPv4 with IPv6 "not_covered",
    never "incomplete" because of addresses it could not route to. One pass that counts, per family,
    the covered addresses, those answered and those answered with TLS (``starttls_verdict``'s rule).
    """
    # Per family: [addresses, covered, answered, ok].
    v4, v6 = [0, 0, 0, 0], [0, 0, 0, 0]
    for address, summary in summaries.items():
        counts = v6 if ":" in address else v4
        counts[0] += 1
        status = summary.status
        if status is ProbeStatus.SKIPPED_FAMILY_UNREACHABLE:
            continue
        counts[1] += 1
        if status.is_definitive:
            counts[2] += 1
            counts[3] += status is ProbeStatus.STARTTLS_OK
    tested = v4[1] + v6[1]
    tally = _tally(tested, v4[2] + v6[2], v4[3] + v6[3])
    if summaries and not tested:
        tally = Tally(StarttlsVerdict.NOT_COVERED, 0, 0, 0)
    families = tuple(f for f, counts in ((Family.IPV4, v4), (Family.IPV6, v6)) if counts[1])
    return Coverage(tally, _family_verdict(v4), _family_verdict(v6), families, len(summaries) - tested)


def _family_verdict(counts: list[int]) -> StarttlsVerdict:
    addresses, covered_count, answered, ok = counts
    if addresses and not covered_count:
        return StarttlsVerdict.NOT_COVERED
    return _tally(covered_count, answered, ok).verdict


def _name_match(summary: ProbeSummary, host: str) -> NameMatch | None:
    if summary.cert_source in _UNJUDGED:
        return None
    return match_hostname(summary.leaf, host) if summary.leaf else None


@dataclass(frozen=True, slots=True)
class LinkJudgement:
    """Everything about one (MX host, address) link that depends on nothing else: name, facts, grade."""

    name_match: NameMatch | None
    cert_valid: bool | None  # trusted, current and valid for the host; None unless TLS completed
    facts: MxFacts
    grade: MxGrade


class LinkJudge:
    """The scan's verdict memo: each (MX host, probe) link judged once, and each set of mail hosts.

    Most domains sit at a few providers: a million domains make a few thousand distinct links, and
    each would otherwise be name-matched and graded again for every domain behind it. The same holds one
    level up: every domain behind the same mail hosts (same names and preferences, the same resolutions,
    probes, link views and TLSA lookups) has the same MX rows but for the domain column, the same DANE
    judgement, coverage and MX grades (``MailSet``); only the MTA-STS and TLS-RPT judgement, and the
    domain grade where they change it, are the domain's own. Both memos are bounded (oldest entries
    dropped first), so a long tail of self-hosted domains cannot grow them.
    """

    def __init__(self, capacity: int = 20_000, mail_sets: int = 10_000) -> None:
        # ~1.7 KB a link, ~3 KB a mail set of two links: ~64 MB at most. The probe summaries a set keeps
        # alive (``MailSet.anchors``) are the probe cache's own, unless the cache has spilled them to disk.
        self._capacity = capacity
        self._memo: dict[tuple[str, str], tuple[ProbeSummary, LinkJudgement]] = {}
        self._set_capacity = mail_sets
        self._sets: dict[tuple[object, ...], MailSet] = {}
        self._providers: ProviderMapper | None = None
        self.mail_set_hits = 0  # domains that found their mail set judged already (ScanStats.mail_sets_reused)

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

    def mail_set(self, head: _RowHead, dns: DomainDns, summaries: Mapping[str, ProbeSummary],
                 views: LinkViews | None, tlsa: Mapping[str, TlsaLookup | None] | None) -> MailSet:
        """The judgement of the domain's mail hosts, from the memo when another domain had the same."""
        anchors, key = _mail_set_key(head, dns, summaries, views, tlsa)
        known = self._sets.get(key)
        if known is not None:
            self.mail_set_hits += 1
            return known
        judged = _judge_mail_set(head, anchors, dns, summaries, views, tlsa, self)
        if len(self._sets) >= self._set_capacity:
            del self._sets[next(iter(self._sets))]
        self._sets[key] = judged
        return judged


# What every MX row of a scan repeats: scan_id, attempt and the port probed.
_RowHead = tuple[str, int, int]


def _mail_set_key(head: _RowHead, dns: DomainDns, summaries: Mapping[str, ProbeSummary],
                  views: LinkViews | None,
                  tlsa: Mapping[str, TlsaLookup | None] | None) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """The objects a mail set is judged from, and its memo key: their identities, with the host names and
    preferences. Resolutions, probe summaries, link views and TLSA lookups are the scan's shared
    objects (one per host, address, link and host), so equal inputs are the same objects; the memo
    entry keeps them alive (``MailSet.anchors``), so no identity in a key is ever reused by another."""
    anchors: list[object] = []
    key: list[object] = [*head, tlsa is None]
    for host in dns.hosts:
        resolution = host.resolution
        lookup = tlsa.get(host.name) if tlsa is not None else None
        anchors += (resolution, lookup)
        key += (host.name, host.preference, id(resolution), id(lookup))
        for address in resolution.addresses:
            summary = summaries[address]
            view = views.get((host.name, address), summary) if views else summary
            anchors += (summary, view)
            key += (id(summary), id(view))
    return tuple(anchors), tuple(key)


@dataclass(frozen=True, slots=True)
class MailSet:
    """Everything about a domain's verdict that its mail hosts decide alone (``LinkJudge.mail_set``)."""

    anchors: tuple[object, ...]  # the objects whose identities make the memo key
    mx_hosts: list[str]
    provider: str | None
    evidence: list[LinkEvidence]  # what the policy judgement reads of each link
    compliance: Mapping[str, bool]  # ``mx_tls_compliance`` of the evidence
    dane: DaneJudgement | None  # None: the policies were not checked
    rows: list[dict[str, Any]]  # each MX row's columns but the domain
    links: list[LinkJudgement]  # the covered links' judgements (the grade speaks for those)
    cover: Coverage
    certs_valid_all: bool | None
    grades: dict[PolicyFacts, dict[str, Any]]  # the domain grade's columns per policy facts, as they come

    def grade_columns(self, policy: PolicyFacts) -> dict[str, Any]:
        """The domain row's grade columns under ``policy`` (the domain's own MTA-STS, TLS-RPT and DANE)."""
        known = self.grades.get(policy)
        if known is None:
            known = self.grades[policy] = _grade_columns(self.links, policy)
        return known


def _grade_columns(links: list[LinkJudgement], policy: PolicyFacts) -> dict[str, Any]:
    graded = grade_domain([link.facts for link in links], policy,
                          mx_grades=[link.grade for link in links]) if links else None
    if graded is None:
        return {"grade": None, "grade_ordinal": None, "grade_rules": [], "grading_version": None,
                "forced_tls_safe": None, "forced_tls_reasons": [], "recommendations": []}
    return {
        "grade": graded.grade, "grade_ordinal": graded.grade.rank if graded.grade else None,
        "grade_rules": sorted({h.code for h in graded.hits}), "grading_version": GRADING_VERSION,
        "forced_tls_safe": graded.forced_tls_safe, "forced_tls_reasons": list(graded.forced_tls_reasons),
        "recommendations": [r.code for r in graded.recommendations],
    }


def _judge_mail_set(head: _RowHead, anchors: tuple[object, ...], dns: DomainDns,
                    summaries: Mapping[str, ProbeSummary], views: LinkViews | None,
                    tlsa: Mapping[str, TlsaLookup | None] | None, judge: LinkJudge) -> MailSet:
    evidence = link_evidence(dns, summaries, judge, views)
    dane = judge_dane_links(evidence, tlsa) if tlsa is not None else None
    rows: list[dict[str, Any]] = []
    links: list[LinkJudgement] = []
    for rank, host in enumerate(dns.hosts):
        host_rows, host_links = _link_rows(head, rank, host, summaries, dane, judge, views)
        rows += host_rows
        links += host_links
    cert_checks = [r["cert_valid"] for r in rows if r["cert_valid"] is not None]
    # A name not checked with its own SNI leaves "every certificate valid" open (unless one already fails).
    unjudged = any(r["cert_source"] in _UNJUDGED for r in rows)
    return MailSet(
        anchors=anchors, mx_hosts=[h.name for h in dns.hosts],
        provider=judge.providers.first(h.name for h in dns.hosts),
        evidence=evidence, compliance=mx_tls_compliance(evidence), dane=dane, rows=rows, links=links,
        cover=coverage(summaries), certs_valid_all=_all_valid(cert_checks, unjudged), grades={})


def _judge_link(host: str, address: str, summary: ProbeSummary) -> LinkJudgement:
    name = _name_match(summary, host)
    name_valid = name in (NameMatch.SAN, NameMatch.COMMON_NAME)
    cert_valid = summary.chain_trusted_and_current and name_valid \
        if summary.status is ProbeStatus.STARTTLS_OK and summary.cert_source not in _UNJUDGED else None
    facts = _mx_facts(host, address, summary, name)
    return LinkJudgement(name, cert_valid, facts, grade_mx(facts))


def _view(views: LinkViews | None, host: str, address: str, summaries: Mapping[str, ProbeSummary]) -> ProbeSummary:
    return views.get((host, address), summaries[address]) if views else summaries[address]


def link_evidence(dns: DomainDns, summaries: Mapping[str, ProbeSummary], judge: LinkJudge,
                  views: LinkViews | None = None) -> list[LinkEvidence]:
    """Every (MX host, address) link of the domain, in MX order, as the policy judgement reads it."""
    out: list[LinkEvidence] = []
    for host in dns.hosts:
        for address in host.resolution.addresses:
            summary = _view(views, host.name, address, summaries)
            out.append(LinkEvidence(
                host.name, address, covered=covered(summary), tested=summary.status.is_definitive,
                tls_ok=summary.status is ProbeStatus.STARTTLS_OK,
                cert_valid=judge.judge(host.name, address, summary).cert_valid, chain=summary.chain))
    return out


def _mx_facts(host: str, address: str, summary: ProbeSummary, name: NameMatch | None) -> MxFacts:
    enum = summary.enumeration
    versions, known = version_facts(enum.versions) if enum else (frozenset(), False)
    leaf = summary.leaf
    trust = summary.cert_trust
    inconsistent = frozenset(summary.inconsistent)
    return MxFacts(
        mx_host=host, address=address, tested=summary.status.is_definitive,
        # Backends that disagree: graded on the worst answer seen (no STARTTLS in one session is no STARTTLS).
        starttls=summary.status is ProbeStatus.STARTTLS_OK and SessionFact.STARTTLS.value not in inconsistent,
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
        inconsistent=inconsistent,
        **_kx_facts(enum.kx if enum else None),
    )


def _kx_facts(kx: KeyExchangeResult | None) -> dict[str, Any]:
    if kx is None:
        return {}
    return {
        "dh_bits": kx.dh_bits, "dh_group": kx.dh_group, "kx_groups": frozenset(group_name(g) for g in kx.groups),
        "kx_groups_complete": kx.groups_complete, "secure_renegotiation": kx.secure_renegotiation,
        "tls_compression": kx.compression, "extended_master_secret": kx.extended_master_secret,
    }


def _link_rows(head: _RowHead, rank: int, host: MailHost, summaries: Mapping[str, ProbeSummary],
               dane: DaneJudgement | None, judge: LinkJudge,
               views: LinkViews | None) -> tuple[list[dict[str, Any]], list[LinkJudgement]]:
    """The columns (but the domain) of one MX host's link rows, and the judgements of those its grade
    speaks for (covered)."""
    scan_id, attempt, port = head
    res = host.resolution
    common: dict[str, Any] = {
        "scan_id": scan_id, "attempt": attempt, "mx_host": host.name,
        "provider": judge.providers.provider(host.name), "mx_preference": host.preference, "mx_rank": rank,
        "host_status": res.status, "host_detail": res.detail, "host_cnames": list(res.cnames),
    }
    if not res.addresses:
        return [{**common, "address": None, "ip_version": None, "port": None, "probe_id": None,
                 "probe_status": None, "cert_name_match": None, "cert_source": None, "cert_sha256": None,
                 "cert_valid": None, "dane_verdict": None, "dane_dnssec": None, "grade": None,
                 "grade_ordinal": None, "grade_rules": []}], []
    rows, judged = [], []
    for address in res.addresses:
        summary = _view(views, host.name, address, summaries)
        link = judge.judge(host.name, address, summary)
        graded = link.grade
        result = dane.links.get((host.name, address)) if dane is not None else None
        if covered(summary):  # grades and forced TLS speak for the covered families only
            judged.append(link)
        rows.append({
            **common, "address": address, "ip_version": 6 if ":" in address else 4, "port": port,
            "probe_id": probe_id(address, port), "probe_status": summary.status,
            "cert_name_match": link.name_match or _unjudged(summary),
            "cert_source": summary.cert_source if summary.status is ProbeStatus.STARTTLS_OK else None,
            "cert_sha256": summary.leaf.sha256 if summary.leaf else None, "cert_valid": link.cert_valid,
            "dane_verdict": result.verdict if result else None, "dane_dnssec": result.dnssec if result else None,
            "grade": graded.grade,
            "grade_ordinal": graded.grade.rank if graded.grade else None,
            "grade_rules": [h.code for h in graded.hits],
        })
    return rows, judged


def _all_valid(checks: list[bool], unjudged: bool) -> bool | None:
    if not all(checks):
        return False
    return None if unjudged or not checks else True


def build_domain_rows(
    scan_id: str,
    attempt: int,
    line: InputLine,
    dns: DomainDns,
    summaries: Mapping[str, ProbeSummary],
    port: int,
    finished_at: datetime,
    policies: DomainPolicyFacts | None = None,
    judge: LinkJudge | None = None,
    views: LinkViews | None = None,
) -> tuple[DomainRow, list[MxRow]]:
    """The domain row and its MX link rows. ``summaries`` maps every address in ``dns`` to its probe;
    ``policies`` are the domain's fetched policy facts (None: not checked), judged here by the fold.

    ``judge`` is the scan's link memo (a fresh one when omitted); ``views`` holds each link's view of its
    address (its own SNI's certificate); a link without one is judged on the address's probe.
    """
    judge = judge if judge is not None else LinkJudge()
    mail = judge.mail_set((scan_id, attempt, port), dns, summaries, views,
                          policies.tlsa if policies is not None else None)
    judged = judge_policies(dns.domain, mail.mx_hosts, mail.evidence, policies,
                            mx_bogus=dns.detail if dns.status is DomainStatus.DNS_BOGUS else None,
                            dane=mail.dane, compliance=mail.compliance)
    domain = dns.domain
    # The rows share the memo's column values: rows are written, never changed.
    mx_rows = [MxRow(**columns, domain=domain) for columns in mail.rows]
    tally = mail.cover.tally
    row = DomainRow(
        scan_id=scan_id, attempt=attempt, domain=domain, input_line=line.line_no, input_raw=line.raw,
        input_rank=line.rank, status=dns.status, status_detail=dns.detail, duplicate_of_line=None,
        mx_source=dns.mx_source, mx_count=len(dns.hosts), mx_hosts=mail.mx_hosts,
        mx_provider=mail.provider, null_mx_mixed=dns.null_mx_mixed,
        mx_capped=dns.capped, address_count=len(summaries),
        probed_count=tally.answered, starttls_ok_count=tally.ok, untested_count=tally.untested,
        not_covered_count=mail.cover.not_covered, families_covered=list(mail.cover.families),
        starttls=tally.verdict, starttls_ipv4=mail.cover.ipv4, starttls_ipv6=mail.cover.ipv6,
        starttls_all=tally.all_ok, starttls_any=tally.any_ok,
        certs_valid_all=mail.certs_valid_all,
        **judged.columns(),
        **mail.grade_columns(judged.grading),
        dns_ms=dns.elapsed_ms, finished_at=finished_at,
    )
    return row, mx_rows


def input_problem_row(
    scan_id: str,
    attempt: int,
    line: InputLine,
    status: DomainStatus,
    detail: str,
    finished_at: datetime,
    duplicate_of_line: int | None = None,
) -> DomainRow:
    """A domain row for a line that was not scanned: invalid, duplicate, excluded, or a bug."""
    return DomainRow(
        scan_id=scan_id, attempt=attempt, domain=line.domain, input_line=line.line_no, input_raw=line.raw,
        input_rank=line.rank, status=status, status_detail=detail, duplicate_of_line=duplicate_of_line,
        mx_source=MxSource.NONE, mx_count=0, mx_hosts=[], mx_provider=None, null_mx_mixed=False, mx_capped=False,
        address_count=0, probed_count=0, starttls_ok_count=0,
        untested_count=0, not_covered_count=0, families_covered=[], starttls=StarttlsVerdict.NOT_APPLICABLE,
        starttls_ipv4=StarttlsVerdict.NOT_APPLICABLE, starttls_ipv6=StarttlsVerdict.NOT_APPLICABLE,
        starttls_all=None, starttls_any=None, certs_valid_all=None,
        **NOT_CHECKED.columns(),
        grade=None, grade_ordinal=None, grade_rules=[], grading_version=None, forced_tls_safe=None,
        forced_tls_reasons=[], recommendations=[], dns_ms=None, finished_at=finished_at,
    )
