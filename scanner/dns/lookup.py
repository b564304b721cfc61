"""Resolve one domain to its mail hosts and their addresses (RFC 5321 §5.1, RFC 7505).

MX host → addresses is cached for the whole scan, and concurrent lookups of the same host share one
in-flight query, so a provider that serves a million domains costs one A and one AAAA query.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

from scanner.dns.dnssec import validation_failure
from scanner.dns.records import DomainDns, HostResolution, MailHost, MxRecord, is_ip_literal, plan_mx
from scanner.dns.resolver import DnsResolver, QueryResult
from scanner.net.addresses import ExcludeList
from scanner.shared_lookups import SharedLookups
from scanner.status import DnsOutcome, DomainStatus, HostStatus, MxSource

__all__ = ["DomainResolver", "ServerTarget", "cap_hosts"]

_DOMAIN_STATUS = {
    DnsOutcome.NXDOMAIN: DomainStatus.DNS_NXDOMAIN,
    DnsOutcome.SERVFAIL: DomainStatus.DNS_SERVFAIL,
    DnsOutcome.TIMEOUT: DomainStatus.DNS_TIMEOUT,
    DnsOutcome.REFUSED: DomainStatus.DNS_REFUSED,
    DnsOutcome.ERROR: DomainStatus.DNS_ERROR,
}
_HOST_STATUS = {
    DnsOutcome.NXDOMAIN: HostStatus.NXDOMAIN,
    DnsOutcome.NODATA: HostStatus.NO_ADDRESS,
    DnsOutcome.SERVFAIL: HostStatus.SERVFAIL,
    DnsOutcome.TIMEOUT: HostStatus.TIMEOUT,
    DnsOutcome.REFUSED: HostStatus.REFUSED,
    DnsOutcome.ERROR: HostStatus.ERROR,
}
# When both the A and the AAAA query fail, the more informative failure is reported.
_HOST_FAILURE_RANK = [
    HostStatus.NXDOMAIN,
    HostStatus.SERVFAIL,
    HostStatus.TIMEOUT,
    HostStatus.REFUSED,
    HostStatus.ERROR,
    HostStatus.NO_ADDRESS,
]


@dataclass(frozen=True, slots=True)
class ServerTarget:
    """One mail server named directly (``check HOST:PORT`` / ``check IP``) instead of a domain's MX.

    ``name`` is the name the probe sends as SNI and matches against the certificate; ``address``,
    when given, is used as is, otherwise ``name`` is resolved to its A/AAAA records.
    """

    name: str
    address: str | None = None


def _host_resolution(name: str, v4: QueryResult, v6: QueryResult) -> HostResolution:
    addresses = v4.addresses + v6.addresses
    cnames = tuple(dict.fromkeys(v4.cnames + v6.cnames))
    if addresses:
        return HostResolution(name, HostStatus.OK, addresses, cnames)
    statuses = [_HOST_STATUS.get(r.outcome, HostStatus.ERROR) for r in (v4, v6)]
    status = min(statuses, key=_HOST_FAILURE_RANK.index)
    detail = "; ".join(r.detail for r in (v4, v6) if r.detail) or "no A or AAAA record"
    return HostResolution(name, status, (), cnames, detail)


def cap_hosts(hosts: Sequence[MailHost], max_addresses: int) -> tuple[list[MailHost], bool]:
    """The first ``max_addresses`` addresses of ``hosts``, in order; a host left with none is dropped.

    Returns the kept hosts and whether anything was cut. A host's cached resolution is not changed:
    another domain may reach the same host with room for all of its addresses.
    """
    kept: list[MailHost] = []
    room, cut = max_addresses, False
    for host in hosts:
        addresses = host.resolution.addresses
        if len(addresses) <= room:
            kept.append(host)
            room -= len(addresses)
            continue
        cut = True
        if room:
            kept.append(dataclasses.replace(host, resolution=dataclasses.replace(host.resolution,
                                                                                 addresses=addresses[:room])))
            room = 0
    return kept, cut


class DomainResolver:
    """Turns a domain name into a ``DomainDns``. One instance per scan.

    At most ``max_hosts`` MX hosts are resolved and ``max_addresses`` addresses kept per domain (see
    ``DnsConfig``); ``DomainDns.capped`` records that a cap applied.
    """

    def __init__(self, resolver: DnsResolver, exclude: ExcludeList, host_cache: int = 50_000, *,
                 max_hosts: int = 10, max_addresses: int = 20) -> None:
        self._resolver = resolver
        self._exclude = exclude
        self._max_hosts = max_hosts
        self._max_addresses = max_addresses
        # MX host → addresses, shared by every domain at that host. Bounded: a long tail of self-hosted
        # domains brings one host name each; a dropped host is simply resolved again if seen again.
        self._hosts: SharedLookups[HostResolution] = SharedLookups(host_cache)

    async def resolve(self, domain: str) -> DomainDns:
        started = time.perf_counter()
        # Only a NOERROR answer without MX records leads to the implicit MX (RFC 5321 §5.1): the resolver
        # reads the rcode from the reply, so YXDOMAIN, NOTAUTH, BADVERS and the like are failures here.
        answer = await self._resolver.query(domain, "MX")
        result = await self._from_mx_answer(domain, answer)
        elapsed = (time.perf_counter() - started) * 1000
        return result.timed(elapsed)

    async def server(self, target: ServerTarget) -> DomainDns:
        """A server given directly: its own mail host of preference 0, like an implicit MX (no MX query)."""
        if target.address is None:
            return await self._implicit(target.name)
        host = MailHost(target.name, 0, HostResolution(target.name, HostStatus.OK, (target.address,)))
        return DomainDns(target.name, DomainStatus.OK, MxSource.IMPLICIT, (host,))

    async def _from_mx_answer(self, domain: str, answer: QueryResult) -> DomainDns:
        if answer.outcome is DnsOutcome.SERVFAIL and self._resolver.config.servers:
            bogus = await validation_failure(domain, "MX", self._resolver.config, budget=self._resolver.budget)
            if bogus is not None:  # DNSSEC validation failed: its own status, not a resolver failure
                return DomainDns(domain, DomainStatus.DNS_BOGUS, MxSource.NONE, detail=bogus)
        if answer.outcome not in (DnsOutcome.ANSWER, DnsOutcome.NODATA):
            # RFC 5321 §5.1: no implicit-MX fallback after a failed (as opposed to empty) MX lookup.
            return DomainDns(domain, _DOMAIN_STATUS[answer.outcome], MxSource.NONE, detail=answer.detail)
        plan = plan_mx(answer.mx)
        if plan.source is MxSource.NULL_MX:
            return DomainDns(domain, DomainStatus.NULL_MX, MxSource.NULL_MX, detail="MX 0 . (RFC 7505)")
        if plan.source is MxSource.IMPLICIT:
            return await self._implicit(domain)
        resolved = await self._mail_hosts(plan.hosts[:self._max_hosts])
        hosts, cut = cap_hosts(resolved, self._max_addresses)
        capped = cut or len(plan.hosts) > self._max_hosts
        if not any(h.resolution.addresses for h in hosts):
            detail = "; ".join(f"{h.name}: {h.resolution.status.value}" for h in hosts)
            return DomainDns(domain, DomainStatus.MX_NO_ADDRESS, MxSource.MX, tuple(hosts), detail,
                             plan.null_mx_mixed, capped=capped)
        return DomainDns(domain, DomainStatus.OK, MxSource.MX, tuple(hosts), null_mx_mixed=plan.null_mx_mixed,
                         capped=capped)

    async def _implicit(self, domain: str) -> DomainDns:
        """No MX records: the domain itself is the mail host, preference 0 (RFC 5321 §5.1)."""
        resolution = await self.host(domain)
        host = MailHost(domain, 0, resolution)
        if resolution.addresses:
            kept, cut = cap_hosts([host], self._max_addresses)
            return DomainDns(domain, DomainStatus.OK, MxSource.IMPLICIT, tuple(kept), capped=cut)
        if resolution.status in (HostStatus.NO_ADDRESS, HostStatus.NXDOMAIN):
            return DomainDns(domain, DomainStatus.DNS_NO_MAIL_HOST, MxSource.IMPLICIT, (host,),
                             "no MX and no A/AAAA record")
        return DomainDns(domain, DomainStatus.DNS_ERROR, MxSource.IMPLICIT, (host,), resolution.detail)

    async def _mail_hosts(self, records: Sequence[MxRecord]) -> list[MailHost]:
        """Every MX host with its addresses. Hosts already resolved (a provider's) cost no task."""
        hosts: list[MailHost | None] = [self._known(record) for record in records]
        missing = [i for i, host in enumerate(hosts) if host is None]
        if len(missing) == 1:
            hosts[missing[0]] = await self._mail_host(records[missing[0]])
        elif missing:
            found = await asyncio.gather(*(self._mail_host(records[i]) for i in missing))
            for i, host in zip(missing, found, strict=True):
                hosts[i] = host
        return [host for host in hosts if host is not None]

    def _known(self, record: MxRecord) -> MailHost | None:
        resolution = self._hosts.known(record.exchange)
        return MailHost(record.exchange, record.preference, resolution) if resolution is not None else None

    async def _mail_host(self, record: MxRecord) -> MailHost:
        if is_ip_literal(record.exchange):
            resolution = HostResolution(record.exchange, HostStatus.IP_LITERAL,
                                        detail="MX exchange is an IP literal (RFC 5321 §5.1)")
        elif self._exclude.excludes_name(record.exchange):
            resolution = HostResolution(record.exchange, HostStatus.EXCLUDED, detail="on the exclude list")
        else:
            resolution = await self.host(record.exchange)
        return MailHost(record.exchange, record.preference, resolution)

    async def host(self, name: str) -> HostResolution:
        """A and AAAA of ``name``, cached for the scan; concurrent callers share one lookup."""
        return await self._hosts.get(name, lambda: self._resolve_host(name))

    async def _resolve_host(self, name: str) -> HostResolution:
        v4, v6 = await asyncio.gather(self._resolver.query(name, "A"), self._resolver.query(name, "AAAA"))
        resolution = _host_resolution(name, v4, v6)
        # An opt-out covers the name wherever a CNAME chain leads to it: a host aliased to an excluded
        # name is the excluded party's server.
        excluded = self._exclude.first_excluded(resolution.cnames)
        if excluded is not None:
            return HostResolution(name, HostStatus.EXCLUDED, (), resolution.cnames,
                                  f"CNAME target {excluded} is on the exclude list")
        return resolution
