"""One domain's policy checks, run after its probes: MTA-STS, TLS-RPT, and TLSA per MX host.

MTA-STS runs after the probes on purpose: RFC 8461 §5 compliance of each MX (STARTTLS + a trusted,
unexpired, name-valid certificate) is known only then. TLSA lookups are cached per MX host for the
whole scan (a provider's MX is looked up once), like the MX host addresses.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scanner.config import ScanConfig
from scanner.dns.resolver import DnsResolver
from scanner.net.addresses import AddressPolicy
from scanner.policy.dane import TlsaLookup, lookup_tlsa
from scanner.policy.mta_sts import ConnectionSlot, MtaStsResult, check_mta_sts, policy_ssl_context
from scanner.policy.tlsrpt import TlsRptResult, check_tlsrpt
from scanner.shared_lookups import SharedLookups

__all__ = ["DomainPolicies", "PolicyChecker"]


@dataclass(frozen=True, slots=True)
class DomainPolicies:
    mta_sts: MtaStsResult
    tlsrpt: TlsRptResult
    tlsa: Mapping[str, TlsaLookup | None]  # MX host → TLSA lookup (None: not checked, no explicit resolver)


class PolicyChecker:
    """Owns the HTTPS context for policy fetches and the per-host TLSA cache. One per scan."""

    def __init__(
        self, config: ScanConfig, resolver: DnsResolver, address_policy: AddressPolicy, slot: ConnectionSlot
    ) -> None:
        self._config = config
        self._slot = slot  # the scan's politeness limits, shared with the probes
        self._resolver = resolver
        self._address_policy = address_policy
        # One context for every policy fetch: loading the trust store per fetch would dominate.
        self._https: ssl.SSLContext = policy_ssl_context(config.ca_file)
        # Per MX host for the whole scan (a provider's MX is looked up once), bounded like the host cache.
        self._tlsa: SharedLookups[TlsaLookup] = SharedLookups(50_000)

    async def check(self, domain: str, mx_hosts: Sequence[str], per_mx_tls_ok: Mapping[str, bool]) -> DomainPolicies:
        # The three lookups are independent round trips, so they overlap; TLS-RPT runs as a task of
        # its own while this one does MTA-STS and then the TLSA lookups (usually cached per MX host).
        tlsrpt_task = asyncio.create_task(check_tlsrpt(domain, self._resolver))
        try:
            mta_sts = await check_mta_sts(domain, mx_hosts, resolver=self._resolver, policy=self._address_policy,
                                          trust=self._https, per_mx_tls_ok=per_mx_tls_ok, slot=self._slot)
            tlsa = {host: await self.tlsa(host) for host in mx_hosts}
        except BaseException:
            tlsrpt_task.cancel()
            raise
        return DomainPolicies(mta_sts, await tlsrpt_task, tlsa)

    async def tlsa(self, mx_host: str) -> TlsaLookup | None:
        """TLSA RRset of ``_25._tcp.<mx_host>``, cached; None when no resolver was configured.

        TLSA needs the resolver's AD bit, so it is asked of the configured resolvers directly (never of
        the system resolver, whose trustworthiness for DNSSEC we cannot know).
        """
        if not self._config.dns.servers:
            return None
        return await self._tlsa.get(
            mx_host, lambda: lookup_tlsa(mx_host, self._config.dns, budget=self._resolver.budget))
