"""The policy judgement: one pure fold over a domain's DNS facts, its links' probe facts and its policy facts.

Model: sslyze's split of a scan command into network jobs (``scan_jobs_for_scan_command``) and a pure
fold over their results (``result_for_completed_scan_jobs``). The jobs are ``scanner.policy.domain``'s
(TXT records, the MTA-STS policy document, TLSA answers: :class:`~scanner.policy.facts.DomainPolicyFacts`);
:func:`judge_policies` is the fold. It decides, on one path each:

- MTA-STS: the TXT record and policy read (``scanner.policy.mta_sts``), each MX judged against the
  policy (RFC 8461 §4.1 :func:`mx_matches`, §5 :func:`evaluate`), MX compliance from the probes;
- TLS-RPT: the record read (``scanner.policy.tlsrpt``);
- DANE: each (MX host, address) link's :func:`~scanner.policy.dane.judge_dane`, the domain's
  ``dane_valid`` and whether a DANE sender would deliver (``dane_delivery``);
- what the rubric sees (:class:`~scanner.grading.PolicyFacts`) and the domain row's policy columns.

No I/O: this module imports no asyncio, aiohttp or DNS client, and never raises on its facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from scanner.grading import PolicyFacts
from scanner.names import normalize_host
from scanner.policy.dane import (
    DaneResult,
    DaneSenderVerdict,
    TlsaLookup,
    dane_link,
    dane_sender_verdict,
    dane_valid,
    judge_dane,
    mx_bogus_verdict,
)
from scanner.policy.facts import DomainPolicyFacts
from scanner.policy.mta_sts import (
    FetchResult,
    PolicyDocument,
    StsPolicy,
    read_document,
    read_sts_txt,
)
from scanner.policy.tlsrpt import TlsRptResult, read_tlsrpt
from scanner.policy.txt import TxtAnswer
from scanner.status import DaneVerdict, DnssecStatus, StsError, StsMode

__all__ = [
    "NOT_CHECKED",
    "DaneJudgement",
    "LinkEvidence",
    "MtaStsResult",
    "MxVerdict",
    "PolicyJudgement",
    "evaluate",
    "judge_dane_links",
    "judge_mta_sts",
    "judge_policies",
    "mx_matches",
    "mx_tls_compliance",
]


@dataclass(frozen=True, slots=True)
class MxVerdict:
    """How one MX host fares under a policy (RFC 8461 §4).

    ``tls_ok`` is the caller's answer to "STARTTLS worked and the certificate is trusted, unexpired
    and valid for this MX name" (None: not known). ``compliant`` is matched-and-tls_ok (None when the
    pattern matched but TLS is unknown); ``would_reject`` is whether an enforcing sender would refuse
    to deliver to this MX (only ever True in enforce mode).
    """

    mx_host: str
    matched_pattern: str | None
    tls_ok: bool | None
    compliant: bool | None
    would_reject: bool | None

    @property
    def matched(self) -> bool:
        return self.matched_pattern is not None




@dataclass(frozen=True, slots=True)
class MtaStsResult:
    """Everything the survey records about one domain's MTA-STS deployment."""

    domain: str
    txt_present: bool
    txt_valid: bool
    txt_id: str | None
    policy_fetched: bool
    policy_valid: bool
    mode: StsMode | None
    max_age: int | None
    mx_patterns: tuple[str, ...]
    unmatched_mx: tuple[str, ...]
    mx_verdicts: tuple[MxVerdict, ...]
    errors: tuple[tuple[StsError, str], ...]
    http_status: int | None = None
    content_type: str | None = None

    @property
    def active(self) -> bool:
        """A conforming sender would apply this policy: valid TXT and a valid fetched policy (§3)."""
        return self.txt_valid and self.policy_valid

    @property
    def error_classes(self) -> tuple[StsError, ...]:
        return tuple(error for error, _ in self.errors)



@dataclass(frozen=True, slots=True)
class LinkEvidence:
    """One (MX host, address) link as the probes saw it, reduced to what the policy judgement reads.

    The facts are those of the address as a sender sending SNI = ``mx_host`` sees it (scanner.sni).
    """

    mx_host: str
    address: str
    covered: bool  # of a family this vantage can reach (uncovered links are outside every verdict)
    tested: bool  # the probe gave a definitive STARTTLS answer
    tls_ok: bool  # STARTTLS and the handshake completed
    cert_valid: bool | None  # trusted, current and valid for mx_host; None unless TLS completed
    chain: tuple[bytes, ...] = ()  # DER as presented, leaf first (for DANE)


# --------------------------------------------------------------------------
# MTA-STS: MX matching and evaluation (RFC 8461 §4-§5)
# --------------------------------------------------------------------------


def mx_matches(pattern: str, mx_host: str) -> bool:
    """Does ``mx_host`` match a policy ``mx`` pattern (RFC 8461 §4.1)?

    Case-insensitive, the MX name's trailing dot ignored. ``*.example.com`` matches exactly one
    extra left-most label: ``mail.example.com`` but neither ``example.com`` nor
    ``a.b.example.com``. A ``*`` anywhere but as the whole left-most label matches nothing.
    Unlike :func:`scanner.certs.hostname_matches_pattern` there is no minimum label count: §4.1
    sets none.
    """
    host = normalize_host(mx_host)
    wanted = pattern.strip().lower()
    if host is None or not wanted or "*" in host:
        return False
    if not wanted.startswith("*."):
        return "*" not in wanted and host == wanted
    suffix = wanted[2:]
    if not suffix or "*" in suffix:
        return False
    first, dot, rest = host.partition(".")
    return bool(first and dot) and rest == suffix


def evaluate(policy: StsPolicy, mx_hosts: Iterable[str], per_mx_tls_ok: Mapping[str, bool]) -> tuple[MxVerdict, ...]:
    """Judge every MX of the domain against ``policy`` (RFC 8461 §4.1-§4.2, §5).

    ``per_mx_tls_ok`` maps an MX host name (any case, trailing dot or not) to whether it passed the
    TLS checks an enforcing sender makes: STARTTLS offered, certificate chains to a trusted root,
    unexpired, and valid for the MX name. A host missing from the map has ``tls_ok`` None.
    """
    tls_by_host: dict[str, bool] = {}
    for name, ok in per_mx_tls_ok.items():
        key = normalize_host(name)
        if key is not None:
            tls_by_host[key] = ok
    enforced = policy.mode is StsMode.ENFORCE
    verdicts: list[MxVerdict] = []
    # The same MX may arrive in several spellings (case, trailing dot): judge each host once.
    for host in dict.fromkeys(normalize_host(raw) or raw for raw in mx_hosts):
        pattern = next((p for p in policy.mx if mx_matches(p, host)), None)
        tls_ok = tls_by_host.get(host)
        # Not matched, or TLS failed: non-compliant. Matched with TLS unknown: unknown (None).
        compliant = False if pattern is None or tls_ok is False else tls_ok
        would_reject = (not compliant if compliant is not None else None) if enforced else False
        verdicts.append(MxVerdict(host, pattern, tls_ok, compliant, would_reject))
    return tuple(verdicts)



def mx_tls_compliance(links: Iterable[LinkEvidence]) -> dict[str, bool]:
    """Per MX host: would an MTA-STS enforcing sender deliver (RFC 8461 §5)? STARTTLS and a valid
    certificate at every covered address. Hosts with an untested (or no covered) address are left out."""
    by_host: dict[str, list[LinkEvidence]] = {}
    for link in links:
        by_host.setdefault(link.mx_host, [])
        if link.covered:
            by_host[link.mx_host].append(link)
    return {host: all(link.cert_valid is True for link in covered) for host, covered in by_host.items()
            if covered and all(link.tested for link in covered)}


def judge_mta_sts(
    domain: str,
    txt_answer: TxtAnswer,
    document: PolicyDocument | None,
    mx_hosts: Sequence[str],
    per_mx_tls_ok: Mapping[str, bool] | None = None,
) -> MtaStsResult:
    """A domain's MTA-STS from its facts: the TXT record (RFC 8461 §3.1), the fetched policy (§3.2-§3.3)
    and every MX judged against it (§4-§5, with ``per_mx_tls_ok`` from the probes)."""
    txt = read_sts_txt(txt_answer)
    errors: list[tuple[StsError, str]] = []
    if txt.error is not None:
        errors.append((txt.error, txt.detail))
    fetched: FetchResult | None = read_document(document) if document is not None else None
    if fetched is not None and fetched.error is not None:
        errors.append((fetched.error, fetched.detail))
    sts_policy: StsPolicy | None = fetched.policy if fetched else None
    verdicts = evaluate(sts_policy, mx_hosts, per_mx_tls_ok or {}) if sts_policy else ()
    return MtaStsResult(
        domain=domain,
        txt_present=txt.present,
        txt_valid=txt.valid,
        txt_id=txt.id,
        policy_fetched=fetched.fetched if fetched else False,
        policy_valid=sts_policy is not None,
        mode=sts_policy.mode if sts_policy else None,
        max_age=sts_policy.max_age if sts_policy else None,
        mx_patterns=sts_policy.mx if sts_policy else (),
        unmatched_mx=tuple(v.mx_host for v in verdicts if not v.matched),
        mx_verdicts=verdicts,
        errors=tuple(errors),
        http_status=fetched.http_status if fetched else None,
        content_type=fetched.content_type if fetched else None,
    )


# --------------------------------------------------------------------------
# The fold
# --------------------------------------------------------------------------

# Domain-row policy columns, all null when the policies were not checked.
_COLUMNS: Final = ("mta_sts_txt", "mta_sts_active", "mta_sts_mode", "mta_sts_fetched_mode", "mta_sts_id",
                   "mta_sts_max_age", "mta_sts_mx_patterns", "mta_sts_unmatched_mx", "mta_sts_mx_fail",
                   "mta_sts_errors", "mta_sts_error_detail", "tlsrpt_status", "tlsrpt_rua", "dane_valid",
                   "dane_mx_with_tlsa")


@dataclass(frozen=True, slots=True)
class PolicyJudgement:
    """Everything decided about a domain's policies. ``mta_sts``/``tlsrpt`` None: not checked."""

    mta_sts: MtaStsResult | None
    tlsrpt: TlsRptResult | None
    dane: Mapping[tuple[str, str], DaneResult] = field(default_factory=dict)  # (MX host, address) → result
    dane_valid: bool | None = None
    dane_sender: DaneSenderVerdict | None = None  # would a DANE sender deliver (RFC 7672)?
    dane_mx_with_tlsa: int = 0  # MX hosts whose TLSA lookup found records
    grading: PolicyFacts = field(default_factory=lambda: PolicyFacts(None, None, None, None, None))

    def link_dane(self, mx_host: str, address: str) -> tuple[DaneVerdict | None, DnssecStatus | None]:
        """A link's ``dane_verdict`` and ``dane_dnssec`` columns (None: TLSA not looked up)."""
        result = self.dane.get((mx_host, address))
        return (result.verdict, result.dnssec) if result else (None, None)

    def columns(self) -> dict[str, Any]:
        """The domain row's policy columns (all null when the policies were not checked)."""
        sender = {"dane_delivery": self.dane_sender.delivery if self.dane_sender else None,
                  "dane_delivery_reasons": list(self.dane_sender.reasons) if self.dane_sender else []}
        sts, rpt = self.mta_sts, self.tlsrpt
        if sts is None or rpt is None:
            return {**dict.fromkeys(_COLUMNS), **sender}
        return {
            "mta_sts_txt": sts.txt_present, "mta_sts_active": sts.active,
            # RFC 8461 §3.1-§3.3: a sender applies the policy only when the TXT record is valid and single
            # and the policy fetched; otherwise there is no mode, whatever the fetched file says.
            "mta_sts_mode": sts.mode if sts.active and sts.mode else None,
            "mta_sts_fetched_mode": sts.mode, "mta_sts_id": sts.txt_id,
            "mta_sts_max_age": sts.max_age, "mta_sts_mx_patterns": list(sts.mx_patterns),
            "mta_sts_unmatched_mx": list(sts.unmatched_mx),
            "mta_sts_mx_fail": [v.mx_host for v in sts.mx_verdicts if v.matched_pattern and v.tls_ok is False],
            "mta_sts_errors": list(sts.error_classes),
            "mta_sts_error_detail": "; ".join(detail for _, detail in sts.errors),
            "tlsrpt_status": rpt.status, "tlsrpt_rua": [u.uri for u in rpt.rua],
            "dane_valid": self.dane_valid, "dane_mx_with_tlsa": self.dane_mx_with_tlsa,
            **sender,
        }


# The judgement of a domain whose policies were not checked (and whose MX RRset is not bogus).
NOT_CHECKED: Final = PolicyJudgement(None, None)


def _grading(sts: MtaStsResult | None, rpt: TlsRptResult | None, valid: bool | None,
             sender: DaneSenderVerdict | None) -> PolicyFacts:
    """What the rubric sees of the policies (scanner.grading, schemas/grading.md)."""
    findings = tuple((f.value, where) for f, where in sender.findings) if sender else ()
    if sts is None or rpt is None:
        return PolicyFacts(None, None, None, None, None, findings)
    active = sts.active and sts.mode is not None
    compliant = [v.compliant for v in sts.mx_verdicts]
    return PolicyFacts(
        mta_sts_mode=sts.mode.value if active and sts.mode else None,
        mta_sts_matches_all_mx=(not sts.unmatched_mx) if active else None,
        mta_sts_all_mx_pass=(None if None in compliant else all(compliant)) if active else None,
        dane_valid=valid,
        tlsrpt_valid=rpt.valid,
        dane_findings=findings,
    )


@dataclass(frozen=True, slots=True)
class DaneJudgement:
    """The DANE part of a domain's judgement: it reads the links and their hosts' TLSA lookups only, never
    the domain, so every domain behind the same mail hosts shares it (``scanner.verdicts.LinkJudge``)."""

    links: Mapping[tuple[str, str], DaneResult]  # (MX host, address) → result, for hosts looked up
    valid: bool | None
    sender: DaneSenderVerdict  # would a DANE sender deliver (RFC 7672)?


def judge_dane_links(links: Sequence[LinkEvidence], tlsa: Mapping[str, TlsaLookup | None], *,
                     now: datetime | None = None) -> DaneJudgement:
    """Each link's TLSA judgement (``judge_dane``), ``dane_valid`` over the covered links and what a DANE
    sender would do. ``now`` is for DANE-TA chain validity (default: the current time)."""
    dane: dict[tuple[str, str], DaneResult] = {}
    for link in links:
        lookup = tlsa.get(link.mx_host)
        if lookup is not None:
            dane[(link.mx_host, link.address)] = judge_dane(link.mx_host, lookup, link.chain or None, now=now)
    covered = [link for link in links if link.covered]
    valid = dane_valid([dane.get((link.mx_host, link.address)) for link in covered])
    sender = dane_sender_verdict([
        dane_link(link.mx_host, link.address, dane.get((link.mx_host, link.address)), tested=link.tested,
                  tls_ok=link.tls_ok)
        for link in covered
    ])
    return DaneJudgement(dane, valid, sender)


def judge_policies(
    domain: str,
    mx_hosts: Sequence[str],
    links: Sequence[LinkEvidence],
    facts: DomainPolicyFacts | None,
    *,
    mx_bogus: str | None = None,
    now: datetime | None = None,
    dane: DaneJudgement | None = None,
    compliance: Mapping[str, bool] | None = None,
) -> PolicyJudgement:
    """Fold a domain's facts into its policy judgement.

    ``mx_hosts`` are the domain's MX host names in MX order and ``links`` its (MX host, address) links in
    that order; ``facts`` are the fetched policy facts (None: the policies were not checked).
    ``mx_bogus`` is the detail when the MX RRset itself failed DNSSEC validation: then no validating
    sender can route mail, whatever else is known (RFC 7672 §2.2.1). ``now`` is for DANE-TA chain
    validity (default: the current time).

    ``dane`` (``judge_dane_links`` of ``links`` and ``facts.tlsa``) and ``compliance``
    (``mx_tls_compliance`` of ``links``) are for a caller that already has them: they depend on the
    links alone, and the scan keeps them per set of mail hosts.
    """
    if facts is None:
        sender = mx_bogus_verdict(domain, mx_bogus) if mx_bogus is not None else None
        return PolicyJudgement(None, None, dane_sender=sender, grading=_grading(None, None, None, sender))
    if compliance is None:
        compliance = mx_tls_compliance(links)
    sts = judge_mta_sts(domain, facts.sts_txt, facts.sts_document, mx_hosts, compliance)
    rpt = read_tlsrpt(facts.tlsrpt_txt)
    if dane is None:
        dane = judge_dane_links(links, facts.tlsa, now=now)
    sender = mx_bogus_verdict(domain, mx_bogus) if mx_bogus is not None else dane.sender
    with_tlsa = sum(1 for lookup in facts.tlsa.values() if lookup is not None and lookup.records)
    return PolicyJudgement(sts, rpt, dane.links, dane.valid, sender, with_tlsa, _grading(sts, rpt, dane.valid, sender))
