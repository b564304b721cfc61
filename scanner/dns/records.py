"""Pure MX logic: ordering, null MX (RFC 7505), implicit MX (RFC 5321 §5.1), IP-literal exchanges; and the
records of a domain's resolution (``DomainDns``), which the verdicts read without importing the resolver."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from scanner.names import host_key
from scanner.status import DomainStatus, HostStatus, MxSource

__all__ = ["DomainDns", "HostResolution", "MailHost", "MxPlan", "MxRecord", "is_ip_literal", "plan_mx"]


@dataclass(frozen=True, slots=True)
class MxRecord:
    preference: int
    exchange: str  # lower case, no trailing dot; "" for the root (null MX)


@dataclass(frozen=True, slots=True)
class MxPlan:
    """Which mail hosts a domain has, in the order a sender would try them."""

    source: MxSource
    hosts: tuple[MxRecord, ...]
    # RFC 7505 §3: a null MX must be the only MX record. When it is mixed with real ones we ignore it
    # (senders do) and flag the misconfiguration.
    null_mx_mixed: bool = False


def is_ip_literal(name: str) -> bool:
    """An MX exchange that is an address: RFC 5321 §5.1 requires a host name; we do not probe it."""
    candidate = name.strip("[]")
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def plan_mx(records: Iterable[MxRecord]) -> MxPlan:
    """Order MX records by preference (lowest first), drop repeated exchanges, detect null MX.

    RFC 5321 §5.1 makes senders randomise among equal preferences; a survey wants a reproducible
    order instead, so ties are broken by name. An empty ``records`` means "no MX records": the caller
    falls back to the implicit MX only when the MX query itself succeeded with no data.
    """
    best: dict[str, int] = {}
    saw_null = False
    for record in records:
        exchange = host_key(record.exchange)
        if not exchange:
            saw_null = True
            continue
        if exchange not in best or record.preference < best[exchange]:
            best[exchange] = record.preference
    hosts = tuple(sorted((MxRecord(p, e) for e, p in best.items()), key=lambda r: (r.preference, r.exchange)))
    if saw_null and not hosts:
        return MxPlan(MxSource.NULL_MX, ())
    if not hosts:
        return MxPlan(MxSource.IMPLICIT, ())
    return MxPlan(MxSource.MX, hosts, null_mx_mixed=saw_null)


@dataclass(frozen=True, slots=True)
class HostResolution:
    name: str
    status: HostStatus
    addresses: tuple[str, ...] = ()  # IPv4 first, then IPv6, each in answer order
    cnames: tuple[str, ...] = ()  # RFC 2181 §10.3: an MX target should not be a CNAME; recorded
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MailHost:
    name: str
    preference: int
    resolution: HostResolution


@dataclass(frozen=True, slots=True)
class DomainDns:
    domain: str
    status: DomainStatus
    mx_source: MxSource
    hosts: tuple[MailHost, ...] = ()
    detail: str = ""
    null_mx_mixed: bool = False
    elapsed_ms: float = 0.0
    capped: bool = False  # MX hosts or addresses beyond the configured caps were left out

    def timed(self, elapsed_ms: float) -> DomainDns:
        """The same result with its lookup time (what ``dataclasses.replace`` does, at a fifth of the cost:
        it runs for every domain). A test checks that it keeps every other field."""
        return DomainDns(self.domain, self.status, self.mx_source, self.hosts, self.detail, self.null_mx_mixed,
                         elapsed_ms, self.capped)
