"""The DNS stage against a scriptable DNS server over real UDP/TCP sockets: every failure has its status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scanner.config import DnsConfig
from scanner.dns.lookup import DomainResolver
from scanner.dns.records import DomainDns
from scanner.dns.resolver import DnsResolver
from scanner.net.addresses import ExcludeList
from scanner.policy.domain import check_tlsrpt, lookup_sts_txt
from scanner.policy.mta_sts import StsError
from scanner.policy.tlsrpt import TlsRptStatus
from scanner.status import DomainStatus, HostStatus, MxSource
from worlds.dns import FaultyDnsServer, Record
from worlds.ports import free_port, pick_loopback_block

# Rcodes 6-11 and 16 (the last an EDNS extended rcode): an empty answer, but not NOERROR.
BAD_RCODES = {"yxdomain": 6, "yxrrset": 7, "nxrrset": 8, "notauth": 9, "notzone": 10, "dsotypeni": 11, "badvers": 16}

ZONE_BEHAVIOURS = {
    "timeout.test": "timeout",
    "servfail.test": "servfail",
    "refused.test": "refused",
    "cname.test": [Record("@", "MX", "10 alias.cname.test.")],
    "alias.cname.test": [Record("@", "CNAME", "real.other.test.")],
    "real.other.test": [Record("@", "A", "192.0.2.7")],
    "slowhost.test": [Record("@", "MX", "10 mx.timeout.test.")],
    "mixed.test": [Record("@", "MX", "10 mx.mixed.test."), Record("mx", "A", "192.0.2.8"),
                   Record("@", "MX", "20 mx.optout.test.")],
    "optout.test": [Record("mx", "A", "192.0.2.9")],
    "mx.timeout.test": "timeout",
    "nomx.test": [Record("@", "A", "192.0.2.10")],  # NOERROR, no MX: the implicit MX (control)
    **{f"{rcode}.test": rcode for rcode in BAD_RCODES},
    **{f"_mta-sts.txt-{rcode}.test": rcode for rcode in BAD_RCODES},
    **{f"_smtp._tls.txt-{rcode}.test": rcode for rcode in BAD_RCODES},
    "_mta-sts.txt-nodata.test": "nodata",
    "_smtp._tls.txt-nodata.test": "nodata",
}


@pytest.fixture(scope="module")
def server() -> Iterator[FaultyDnsServer]:
    address = f"{pick_loopback_block()}.1"
    with FaultyDnsServer(ZONE_BEHAVIOURS, address, free_port(address)) as srv:
        yield srv


async def _resolve(server: FaultyDnsServer, domain: str, exclude: ExcludeList | None = None) -> DomainDns:
    resolver = DnsResolver(DnsConfig(servers=(server.resolver,), timeout=0.3, tries=1))
    try:
        return await DomainResolver(resolver, exclude or ExcludeList()).resolve(domain)
    finally:
        await resolver.close()


@pytest.mark.parametrize(
    ("domain", "status"),
    [
        ("timeout.test", DomainStatus.DNS_TIMEOUT),
        ("servfail.test", DomainStatus.DNS_SERVFAIL),
        ("refused.test", DomainStatus.DNS_REFUSED),
        ("unknown.test", DomainStatus.DNS_NXDOMAIN),
    ],
)
async def test_mx_failures_have_their_own_status(server: FaultyDnsServer, domain: str, status: DomainStatus) -> None:
    dns = await _resolve(server, domain)
    assert dns.status is status
    assert dns.mx_source is MxSource.NONE  # no implicit-MX fallback on failure
    assert dns.detail


async def test_cname_to_other_zone_is_chased(server: FaultyDnsServer) -> None:
    dns = await _resolve(server, "cname.test")
    (host,) = dns.hosts
    assert host.resolution.addresses == ("192.0.2.7",)
    assert host.resolution.cnames == ("real.other.test",)


async def test_mx_host_timeout_is_a_host_status(server: FaultyDnsServer) -> None:
    dns = await _resolve(server, "slowhost.test")
    assert dns.status is DomainStatus.MX_NO_ADDRESS
    assert dns.hosts[0].resolution.status is HostStatus.TIMEOUT


async def test_excluded_mx_host_is_not_resolved(server: FaultyDnsServer) -> None:
    before = len(server.queries)
    dns = await _resolve(server, "mixed.test", ExcludeList.from_lines(["optout.test"]))
    statuses = [(h.name, h.resolution.status) for h in dns.hosts]
    assert statuses == [("mx.mixed.test", HostStatus.OK), ("mx.optout.test", HostStatus.EXCLUDED)]
    asked = {q.name for q in server.queries[before:]}
    assert "mx.optout.test." not in asked


@pytest.mark.parametrize(("rcode", "number"), BAD_RCODES.items())
async def test_mx_rcodes_other_than_noerror_are_no_implicit_mx(
    server: FaultyDnsServer, rcode: str, number: int
) -> None:
    # RFC 5321 §5.1: only an MX lookup that succeeded with no MX records falls back to the domain's own
    # address. c-ares reported these rcodes as NODATA, and the domain was probed as its own mail host.
    before = len(server.queries)
    dns = await _resolve(server, f"{rcode}.test")
    assert dns.status is DomainStatus.DNS_ERROR
    assert dns.mx_source is MxSource.NONE and dns.hosts == ()
    assert f"({number})" in dns.detail and rcode.upper() in dns.detail
    asked = {(q.name, q.rtype) for q in server.queries[before:]}
    assert asked == {(f"{rcode}.test.", "MX")}  # no A/AAAA for an implicit MX


async def test_mx_nodata_is_still_the_implicit_mx(server: FaultyDnsServer) -> None:
    dns = await _resolve(server, "nomx.test")
    assert (dns.status, dns.mx_source) == (DomainStatus.OK, MxSource.IMPLICIT)
    assert dns.hosts[0].resolution.addresses == ("192.0.2.10",)


@pytest.mark.parametrize("rcode", [*BAD_RCODES, "nodata"])
async def test_policy_txt_rcodes_are_dns_errors_not_missing(server: FaultyDnsServer, rcode: str) -> None:
    # The same defect for the policy records: an empty TXT answer means "no MTA-STS / TLS-RPT" only
    # under NOERROR; rcodes 6-11 and 16 are a DNS failure, as SERVFAIL is.
    resolver = DnsResolver(DnsConfig(servers=(server.resolver,), timeout=0.3, tries=1))
    try:
        sts = await lookup_sts_txt(f"txt-{rcode}.test", resolver)
        rpt = await check_tlsrpt(f"txt-{rcode}.test", resolver)
    finally:
        await resolver.close()
    if rcode == "nodata":
        assert (sts.error, rpt.status) == (StsError.TXT_MISSING, TlsRptStatus.MISSING)
    else:
        assert (sts.error, rpt.status) == (StsError.DNS_ERROR, TlsRptStatus.DNS_ERROR)
        assert rcode.upper() in sts.detail and rcode.upper() in rpt.detail
