"""IPv6 forms that embed an IPv4 address, and ``--exclude`` by name through CNAMEs, in real scans.

A loopback DNS server gives MX hosts and ``mta-sts.`` hosts AAAA records in NAT64, 6to4, SIIT and
IPv4-compatible forms with loopback or private IPv4 inside, and CNAMEs into excluded names. Without
``--allow-private`` none may be connected to: the rows must say why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scanner.config import DnsConfig
from scanner.dns.resolver import DnsResolver
from scanner.net.addresses import AddressPolicy
from scanner.policy.mta_sts import StsError
from scanner.policy.sts_fetch import StsFetch, fetch_policy
from tests.integration.scanning import run_scan
from worlds.dns import FaultyDnsServer, Record
from worlds.ports import free_port, pick_loopback_block
from worlds.sniff import SynCounter

EMBEDDED = {
    "nat64": "64:ff9b::7f00:1",  # 127.0.0.1 through the well-known NAT64 prefix (RFC 6052)
    "localnat64": "64:ff9b:1::a00:1",  # the local-use NAT64 prefix (RFC 8215)
    "sixtofour": "2002:a00:1::1",  # 10.0.0.1 as a 6to4 prefix (RFC 3056)
    "compat": "::7f00:1",  # ::127.0.0.1, IPv4-compatible (RFC 4291 §2.5.5.1, deprecated)
    "siit": "::ffff:0:c0a8:101",  # 192.168.1.1, IPv4-translated (RFC 2765)
}


def zone() -> dict[str, list[Record]]:
    records: dict[str, list[Record]] = {}
    for label, address in EMBEDDED.items():
        records[f"{label}.test"] = [Record("@", "MX", f"10 mx.{label}.test."), Record("mx", "AAAA", address),
                                    Record("mta-sts", "AAAA", address)]
    return records


# The opted-out party's servers, on a loopback block of their own where nothing listens.
OPTOUT_BLOCK = pick_loopback_block()
OPTOUT_MX, OPTOUT_WEB = f"{OPTOUT_BLOCK}.25", f"{OPTOUT_BLOCK}.43"


def alias_zone() -> dict[str, list[Record]]:
    # mx2 (nothing listens there either) gives the domain an address, so that its policies are checked.
    return {
        "alias.test": [Record("@", "MX", "10 mx.alias.test."), Record("mx", "CNAME", "mx.optout.test."),
                       Record("@", "MX", "20 mx2.alias.test."), Record("mx2", "A", f"{pick_loopback_block()}.2"),
                       Record("mta-sts", "CNAME", "web.optout.test."), Record("_mta-sts", "TXT", '"v=STSv1; id=1"')],
        "optout.test": [Record("mx", "A", OPTOUT_MX), Record("web", "A", OPTOUT_WEB)],
    }


@pytest.fixture(scope="module")
def server() -> Iterator[FaultyDnsServer]:
    address = f"{pick_loopback_block()}.1"
    with FaultyDnsServer({**zone(), **alias_zone()}, address, free_port(address)) as srv:
        yield srv


def test_embedded_ipv4_forms_are_never_probed(server: FaultyDnsServer, tmp_path: Path) -> None:
    source = tmp_path / "domains.txt"
    source.write_text("".join(f"{label}.test\n" for label in EMBEDDED), encoding="utf-8")
    out = tmp_path / "out"
    done = run_scan(source, out, server.resolver, "--no-policy", "--enumerate", "off", "--connect-timeout", "1",
                    "--throttle-retry")
    assert done.returncode == 0, done.stderr[-3000:]
    probes = {row["address"]: row for row in pq.read_table(out / "probes").to_pylist()}
    assert set(probes) == set(EMBEDDED.values())
    # Before the fix only ::ffff:a.b.c.d was refused; the others were connected to.
    assert {a: p["status"] for a, p in probes.items()} == dict.fromkeys(EMBEDDED.values(), "skipped_reserved_address")


@pytest.mark.parametrize("label", sorted(EMBEDDED))
async def test_policy_fetches_refuse_embedded_ipv4_forms(server: FaultyDnsServer, label: str) -> None:
    resolver = DnsResolver(DnsConfig(servers=(server.resolver,), timeout=2, tries=1))
    try:
        result = await fetch_policy(f"{label}.test", StsFetch(resolver=resolver, policy=AddressPolicy(), timeout=2))
    finally:
        await resolver.close()
    assert result.error is StsError.ADDRESS_REFUSED, result


def test_exclude_by_name_applies_to_every_name_of_a_cname_chain(server: FaultyDnsServer, tmp_path: Path) -> None:
    source = tmp_path / "domains.txt"
    source.write_text("alias.test\n", encoding="utf-8")
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("optout.test\n", encoding="utf-8")
    out = tmp_path / "out"
    with SynCounter(OPTOUT_BLOCK, 25) as smtp, SynCounter(OPTOUT_BLOCK, 443) as https:
        done = run_scan(source, out, server.resolver, "--allow-private", "--exclude", str(exclude),
                        "--enumerate", "off", "--connect-timeout", "1", "--throttle-retry")
    assert done.returncode == 0, done.stderr[-3000:]
    # Before the fix the MX host and the policy host, aliases of excluded names, were both contacted.
    assert sum(smtp.counts.values()) == 0 and sum(https.counts.values()) == 0
    mx = pq.read_table(out / "mx").to_pylist()
    assert [row["host_status"] for row in mx] == ["excluded", "ok"], mx
    domain = pq.read_table(out / "domains").to_pylist()[0]
    assert "address_refused" in domain["mta_sts_errors"], domain
