"""The policy stage's I/O: one domain's MTA-STS, TLS-RPT and TLSA facts, fetched and not judged.

The fetches need nothing from the probes, so the scan starts them as soon as the domain's DNS is done,
beside its probes; the judgement (MTA-STS compliance of each MX needs the probes) is
``scanner.policy.judge``'s pure fold over the facts. TLSA lookups are cached per MX host for the whole
scan (a provider's MX is looked up once), like the MX host addresses.

``check_mta_sts`` / ``check_tlsrpt`` / ``lookup_sts_txt`` are the same fetches followed by the same
judgement, for one-off checks and tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from scanner.config import ScanConfig
from scanner.dns.resolver import DnsResolver
from scanner.net.addresses import AddressPolicy
from scanner.policy.dane import TlsaLookup
from scanner.policy.facts import DomainPolicyFacts
from scanner.policy.judge import MtaStsResult, judge_mta_sts
from scanner.policy.mta_sts import PolicyDocument, StsTxtResult, read_sts_txt
from scanner.policy.sts_fetch import ConnectionSlot, StsFetch, fetch_policy_document, policy_ssl_context
from scanner.policy.tlsa_lookup import lookup_tlsa
from scanner.policy.tlsrpt import TlsRptResult, read_tlsrpt
from scanner.policy.txt import TxtAnswer, txt_owner
from scanner.shared_lookups import SharedLookups
from scanner.status import DnsOutcome

__all__ = ["PolicyChecker", "check_mta_sts", "check_tlsrpt", "fetch_mta_sts", "lookup_sts_txt", "lookup_txt"]


async def lookup_txt(name: str, resolver: DnsResolver) -> TxtAnswer:
    """The TXT records of ``name`` through the scanner's resolver, as a fact."""
    answer = await resolver.query(name, "TXT")
    return TxtAnswer(name, answer.outcome, answer.texts if answer.outcome is DnsOutcome.ANSWER else (),
                     answer.detail)


async def fetch_mta_sts(domain: str, fetch: StsFetch) -> tuple[TxtAnswer, PolicyDocument | None]:
    """The ``_mta-sts`` TXT answer and, when some record there begins with ``v=STSv1`` (even an invalid
    or duplicated one, which no sender would use), the policy document: the survey wants to know what
    the policy host serves. Without any such record nothing is fetched (no HTTPS connection to every
    surveyed domain)."""
    txt = await lookup_txt(txt_owner("_mta-sts", domain), fetch.resolver)
    if not read_sts_txt(txt).present:
        return txt, None
    return txt, await fetch_policy_document(domain, fetch)


class PolicyChecker:
    """Fetches each domain's policy facts. Owns the HTTPS context for policy fetches and the per-host TLSA
    cache. One per scan; connections go through the injected ``slot`` (the scan's politeness limits)."""

    def __init__(
        self, config: ScanConfig, resolver: DnsResolver, address_policy: AddressPolicy, slot: ConnectionSlot
    ) -> None:
        self._config = config
        self._resolver = resolver
        # One context for every policy fetch (loading the trust store per fetch would dominate); the
        # slot is the scan's politeness limits, shared with the probes.
        self._sts = StsFetch(resolver, address_policy, policy_ssl_context(config.ca_file), slot=slot)
        # Per MX host for the whole scan (a provider's MX is looked up once), bounded like the host cache.
        self._tlsa: SharedLookups[TlsaLookup] = SharedLookups(50_000)

    async def fetch(self, domain: str, mx_hosts: Sequence[str]) -> DomainPolicyFacts:
        """The domain's policy facts. The lookups are independent round trips, so they all overlap.

        The MTA-STS fetch runs in this task and the others beside it; a TLSA answer already cached
        (most MX hosts are a provider's, looked up long ago) is taken as it is, without a task.
        """
        rpt = asyncio.ensure_future(lookup_txt(txt_owner("_smtp._tls", domain), self._resolver))
        tlsa: dict[str, TlsaLookup | None] = {}
        pending: dict[str, asyncio.Future[TlsaLookup | None]] = {}
        for host in dict.fromkeys(mx_hosts):
            known = self._tlsa.known(host) if self._config.dns.servers else None
            if known is not None:
                tlsa[host] = known
            else:
                pending[host] = asyncio.ensure_future(self.tlsa(host))
        tasks: list[asyncio.Future[Any]] = [rpt, *pending.values()]
        try:
            sts_txt, document = await fetch_mta_sts(domain, self._sts)
            for task in tasks:  # usually done by now: awaiting each costs less than a gather
                await task
        except BaseException:
            # A bug in one fetch (or our cancellation): the others stop too, and the bug itself is raised
            # as it is (it becomes the domain's internal_error row).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        tlsa.update((host, task.result()) for host, task in pending.items())
        return DomainPolicyFacts(domain, sts_txt, document, rpt.result(),
                                 {host: tlsa[host] for host in dict.fromkeys(mx_hosts)})

    async def tlsa(self, mx_host: str) -> TlsaLookup | None:
        """TLSA RRset of ``_25._tcp.<mx_host>``, cached; None when no resolver was configured.

        TLSA needs the resolver's AD bit, so it is asked of the configured resolvers directly (never of
        the system resolver, whose trustworthiness for DNSSEC we cannot know).
        """
        if not self._config.dns.servers:
            return None
        return await self._tlsa.get(
            mx_host, lambda: lookup_tlsa(mx_host, self._resolver))


async def lookup_sts_txt(domain: str, resolver: DnsResolver) -> StsTxtResult:
    """Query ``_mta-sts.<domain>`` TXT and read it (resolver failures become DNS_ERROR)."""
    return read_sts_txt(await lookup_txt(txt_owner("_mta-sts", domain), resolver))


async def check_tlsrpt(domain: str, resolver: DnsResolver) -> TlsRptResult:
    """Query ``_smtp._tls.<domain>`` TXT through the scanner's resolver and read it."""
    return read_tlsrpt(await lookup_txt(txt_owner("_smtp._tls", domain), resolver))


async def check_mta_sts(domain: str, mx_hosts: Sequence[str], fetch: StsFetch,
                        per_mx_tls_ok: Mapping[str, bool] | None = None) -> MtaStsResult:
    """TXT lookup, policy fetch (:func:`fetch_mta_sts`) and the scan's judgement of them
    (:func:`~scanner.policy.judge.judge_mta_sts`, with ``per_mx_tls_ok`` for the MX evaluation)."""
    txt, document = await fetch_mta_sts(domain, fetch)
    return judge_mta_sts(domain, txt, document, mx_hosts, per_mx_tls_ok)
