"""Policy checks against real servers on loopback: nsd for DNS, nginx for MTA-STS policy hosts.

Every domain in the world is built to show one behaviour (valid enforce/testing/none policies, MX
patterns that do or do not match, bad or duplicated TXT records, redirect, 404, oversized body, slow
server, wrong media type, untrusted/misnamed/expired certificate, TLS-RPT and TLSA records), and each
test compares the scanner's typed result with what the world was built to produce. A guard makes
any call to the system resolver (getaddrinfo on a name) fail the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dnslib import EDNS0, RR, DNSError, DNSRecord

from scanner.certs import NameMatch
from scanner.config import ConfigError, DnsConfig
from scanner.dns.resolver import DnsResolver
from scanner.net.addresses import AddressPolicy, ExcludeList
from scanner.policy.dane import DaneDelivery, DaneResult, DaneVerdict, DnssecStatus, dane_link, dane_sender_verdict
from scanner.policy.domain import check_mta_sts, check_tlsrpt, fetch_mta_sts, lookup_txt
from scanner.policy.facts import DomainPolicyFacts
from scanner.policy.judge import judge_policies
from scanner.policy.mta_sts import StsError, StsMode
from scanner.policy.sts_fetch import StsFetch, fetch_policy
from scanner.policy.tlsa_lookup import check_dane, lookup_tlsa
from scanner.policy.tlsrpt import TlsRptStatus
from scanner.status import DnsOutcome
from worlds.ca import CertFiles, TestCA, self_signed
from worlds.dns import Behaviour, FaultyDnsServer, NsdServer, Zone
from worlds.nginx import NginxServer, Site
from worlds.ports import free_port, loopback_host, pick_loopback_block

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ZONE = "policy.test"
ALLOW = AddressPolicy(allow_private=True)
SLOW_DELAY = 30.0  # seconds the slow site takes; every fetch in the tests gives up long before
FETCH_TIMEOUT = 1.5
LONG_ID = "20240101T000000"
LONG_STS_TXT = f"v=STSv1; id={LONG_ID}; note=" + "n" * 300  # > 255 octets: several character-strings
LONG_RPT_TXT = "v=TLSRPTv1; rua=mailto:" + "r" * 300 + "@reports.policy.test"


def _policy(mode: str, *mx: str, max_age: int = 86400) -> str:
    return "".join([f"version: STSv1\r\nmode: {mode}\r\n", *(f"mx: {m}\r\n" for m in mx), f"max_age: {max_age}\r\n"])


def d(label: str) -> str:
    return f"{label}.{ZONE}"


ENFORCE = _policy("enforce", d("mx1.enforce"), d("mx2.enforce"))
# label -> (policy body served, extra Site arguments)
SITES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "enforce": (ENFORCE, {}),
    "testing": (_policy("testing", f"*.{d('testing')}", max_age=604800), {}),
    "none": (_policy("none", max_age=0), {}),
    "unmatched": (_policy("enforce", "mx.elsewhere.test"), {}),
    "badtxt": (ENFORCE, {}),
    "twotxt": (ENFORCE, {}),
    "longtxt": (ENFORCE, {}),
    "notxt": (ENFORCE, {}),
    "redirect": (None, {"redirect_to": f"https://{d('mta-sts.target')}/.well-known/mta-sts.txt"}),
    "target": (ENFORCE, {}),
    "notfound": (None, {}),
    "servererror": (ENFORCE, {"status": 503}),
    "big": (ENFORCE + "padding: " + "p" * (70 * 1024) + "\r\n", {}),
    "slow": (ENFORCE, {"delay": SLOW_DELAY}),
    "html": (ENFORCE, {"content_type": "text/html"}),
    "charset": (ENFORCE, {"content_type": "text/plain; charset=utf-8"}),
    "badsyntax": (_policy("reject", d("mx1.badsyntax")), {}),
    "beside": (_policy("enforce", d("mx.beside")), {}),  # its MX holds its banner (test_policy_fetch_beside_probe)
}
# Sites whose certificate is not the CA-issued, correctly named, valid one.
CERT_PROBLEMS = ("untrusted", "wrongname", "expired")


@dataclass(frozen=True)
class PolicyWorld:
    nsd: NsdServer
    nginx: NginxServer
    ca: TestCA
    web: str  # address of the nginx policy host
    gate: str  # address of the MX of "beside" (port 25 is free for a test's own server)
    mx_certs: dict[str, CertFiles]  # MX host label -> its certificate files
    other_cert: CertFiles

    def dns(self, **overrides: Any) -> DnsConfig:
        return DnsConfig(servers=(self.nsd.resolver,), **{"timeout": 1.0, "tries": 1, **overrides})

    def requested_hosts(self) -> list[str]:
        return [r.server_name for r in self.nginx.requests()]


def _der_chain(files: CertFiles) -> list[bytes]:
    return [
        c.public_bytes(serialization.Encoding.DER)
        for c in x509.load_pem_x509_certificates(files.cert_file.read_bytes())
    ]


def _spki_sha256(der: bytes) -> bytes:
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def _build_zone(web: str, mx_certs: dict[str, CertFiles], other: CertFiles, gate: str) -> Zone:
    zone = Zone(ZONE)
    zone.mx("beside", 10, "mx.beside").a("mx.beside", gate)
    for label in (*SITES, *CERT_PROBLEMS):
        zone.a(f"mta-sts.{label}", web)
    for label in (*SITES, *CERT_PROBLEMS, "nohost"):
        if label in ("notxt", "badtxt", "twotxt", "longtxt"):
            continue
        zone.txt(f"_mta-sts.{label}", f"v=STSv1; id={label}1")
        zone.txt(f"_mta-sts.{label}", "v=spf1 -all")  # an unrelated TXT at the same name is ignored
    zone.txt("_mta-sts.badtxt", "v=STSv1; id=not-valid!")
    zone.txt("_mta-sts.twotxt", "v=STSv1; id=one").txt("_mta-sts.twotxt", "v=STSv1; id=two")
    zone.txt("_mta-sts.longtxt", LONG_STS_TXT)
    # TLS-RPT (RFC 8460): valid, long (split strings), unsupported scheme, duplicated; "none" has none.
    zone.txt("_smtp._tls.enforce", f"v=TLSRPTv1; rua=mailto:tlsrpt@{ZONE},https://reports.{ZONE}/v1/tlsrpt")
    zone.txt("_smtp._tls.testing", LONG_RPT_TXT)
    zone.txt("_smtp._tls.badtxt", f"v=TLSRPTv1; rua=ftp://reports.{ZONE}/")
    zone.txt("_smtp._tls.twotxt", f"v=TLSRPTv1; rua=mailto:a@{ZONE}").txt(
        "_smtp._tls.twotxt", f"v=TLSRPTv1; rua=mailto:b@{ZONE}"
    )
    # DANE (RFC 7672): DANE-EE on mx1, a stale DANE-EE on mx2, DANE-TA on mxta, PKIX-only on mxpkix,
    # nothing for mx3, and a CNAME'd TLSA name for mxcname.
    mx1_leaf = _der_chain(mx_certs["mx1"])[0]
    intermediate = _der_chain(mx_certs["mxta"])[1]
    zone.tlsa("_25._tcp.mx1.enforce", 3, 1, 1, _spki_sha256(mx1_leaf))
    zone.tlsa("_25._tcp.mx2.enforce", 3, 1, 1, _spki_sha256(_der_chain(other)[0]))
    zone.tlsa("_25._tcp.mx2.enforce", 3, 0, 2, hashlib.sha512(_der_chain(other)[0]).digest())
    zone.tlsa("_25._tcp.mxta.enforce", 2, 0, 1, hashlib.sha256(intermediate).digest())
    zone.tlsa("_25._tcp.mxpkix.enforce", 1, 1, 1, _spki_sha256(_der_chain(mx_certs["mxpkix"])[0]))
    zone.cname("_25._tcp.mxcname.enforce", f"_25._tcp.mx1.enforce.{ZONE}.")
    return zone


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyWorld]:
    block = pick_loopback_block()
    root = tmp_path_factory.mktemp("policy-world")
    ca = TestCA(root / "ca")
    web = loopback_host(block, 80)
    sites = []
    for label, (text, extra) in SITES.items():
        cert = ca.issue([d(f"mta-sts.{label}")])
        sites.append(Site(d(f"mta-sts.{label}"), cert.cert_file, cert.key_file, text, **extra))
    untrusted = self_signed(root / "selfsigned", [d("mta-sts.untrusted")])
    wrongname = ca.issue(["mta-sts.other.test"])
    expired = ca.issue([d("mta-sts.expired")], not_after=datetime.now(UTC) - timedelta(days=1))
    for label, cert in zip(CERT_PROBLEMS, (untrusted, wrongname, expired), strict=True):
        sites.append(Site(d(f"mta-sts.{label}"), cert.cert_file, cert.key_file, ENFORCE))
    mx_certs = {label: ca.issue([d(f"{label}.enforce")]) for label in ("mx1", "mx2", "mxta", "mxpkix")}
    other = ca.issue([d("mx2.enforce")])
    gate = loopback_host(block, 25)
    zone = _build_zone(web, mx_certs, other, gate)
    with (
        NsdServer(root / "nsd", [zone], address=loopback_host(block, 1)) as nsd,
        NginxServer(root / "nginx", web, sites) as nginx,
    ):
        yield PolicyWorld(nsd, nginx, ca, web, gate, mx_certs, other)


@pytest.fixture
async def resolver(world: PolicyWorld) -> AsyncIterator[DnsResolver]:
    res = DnsResolver(world.dns())
    try:
        yield res
    finally:
        await res.close()


def _is_ip(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


@pytest.fixture(autouse=True)
def no_system_resolver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail on any getaddrinfo for a name: only our DNS servers may resolve anything."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_ip(host):
            asked.append(str(host))
            raise AssertionError(f"system resolver asked for {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return asked


async def _check(world: PolicyWorld, resolver: DnsResolver, label: str, mx: Sequence[str] = (), **kwargs: Any) -> Any:
    fetch = StsFetch(resolver=resolver, policy=kwargs.pop("policy", ALLOW), trust=world.ca.ca_file,
                     timeout=kwargs.pop("timeout", FETCH_TIMEOUT), slot=kwargs.pop("slot", None))
    return await check_mta_sts(d(label), mx, fetch, **kwargs)


async def _judged(world: PolicyWorld, resolver: DnsResolver, label: str) -> Any:
    """The scan's judgement of a domain's fetched facts (no MX, so nothing but the policies to judge)."""
    sts_txt, document = await fetch_mta_sts(d(label), StsFetch(resolver=resolver, policy=ALLOW, trust=world.ca.ca_file,
                                                               timeout=FETCH_TIMEOUT))
    rpt = await lookup_txt(f"_smtp._tls.{d(label)}", resolver)
    return judge_policies(d(label), [], [], DomainPolicyFacts(d(label), sts_txt, document, rpt, {}))


# --------------------------------------------------------------------------
# MTA-STS: valid policies
# --------------------------------------------------------------------------


async def test_enforce_policy_all_mx_matched(world: PolicyWorld, resolver: DnsResolver) -> None:
    mx = [d("mx1.enforce"), d("MX2.enforce") + "."]
    result = await _check(
        world, resolver, "enforce", mx, per_mx_tls_ok={d("mx1.enforce"): True, d("mx2.enforce"): False}
    )
    assert (result.txt_present, result.txt_valid, result.txt_id) == (True, True, "enforce1")
    assert (result.policy_fetched, result.policy_valid, result.active) == (True, True, True)
    assert (result.mode, result.max_age) == (StsMode.ENFORCE, 86400)
    assert result.mx_patterns == (d("mx1.enforce"), d("mx2.enforce"))
    assert result.unmatched_mx == () and result.errors == ()
    assert (result.http_status, result.content_type) == (200, "text/plain")
    assert [(v.mx_host, v.compliant, v.would_reject) for v in result.mx_verdicts] == [
        (d("mx1.enforce"), True, False),
        (d("mx2.enforce"), False, True),  # matched, but its TLS failed: an enforcing sender refuses it
    ]


async def test_fetch_takes_the_scans_connection_slot(world: PolicyWorld, resolver: DnsResolver) -> None:
    taken: list[str] = []
    active = 0

    @contextlib.asynccontextmanager
    async def slot(address: str) -> AsyncIterator[None]:
        nonlocal active
        taken.append(address)
        active += 1
        try:
            yield
        finally:
            active -= 1

    result = await _check(world, resolver, "enforce", [d("mx1.enforce")], slot=slot)
    assert result.policy_valid and len(taken) == 1 and active == 0
    assert ipaddress.ip_address(taken[0]).is_loopback  # the policy host's address, as resolved by us


async def test_testing_policy_wildcard(world: PolicyWorld, resolver: DnsResolver) -> None:
    mx = [d("mx.testing"), d("a.b.testing"), d("testing")]
    result = await _check(world, resolver, "testing", mx)
    assert (result.mode, result.max_age, result.mx_patterns) == (StsMode.TESTING, 604800, (f"*.{d('testing')}",))
    # *.testing.policy.test covers exactly one extra label.
    assert result.unmatched_mx == (d("a.b.testing"), d("testing"))
    assert all(v.would_reject is False for v in result.mx_verdicts)  # testing mode never blocks


async def test_none_policy(world: PolicyWorld, resolver: DnsResolver) -> None:
    result = await _check(world, resolver, "none", [d("mx.none")])
    assert (result.active, result.mode, result.max_age, result.mx_patterns) == (True, StsMode.NONE, 0, ())
    assert result.unmatched_mx == (d("mx.none"),)


async def test_pattern_not_matching_the_mx(world: PolicyWorld, resolver: DnsResolver) -> None:
    result = await _check(world, resolver, "unmatched", [d("mx1.unmatched")], per_mx_tls_ok={d("mx1.unmatched"): True})
    assert result.active and result.unmatched_mx == (d("mx1.unmatched"),)
    assert result.mx_verdicts[0].would_reject is True


async def test_text_plain_with_charset_is_accepted(world: PolicyWorld, resolver: DnsResolver) -> None:
    result = await _check(world, resolver, "charset")
    assert result.active and result.content_type == "text/plain; charset=utf-8"


async def test_long_txt_record_split_into_strings(world: PolicyWorld, resolver: DnsResolver) -> None:
    result = await _check(world, resolver, "longtxt")
    assert (result.txt_valid, result.txt_id, result.active) == (True, LONG_ID, True)


# --------------------------------------------------------------------------
# MTA-STS: TXT problems
# --------------------------------------------------------------------------


async def test_bad_txt_syntax(world: PolicyWorld, resolver: DnsResolver) -> None:
    result = await _check(world, resolver, "badtxt")
    assert (result.txt_present, result.txt_valid, result.txt_id) == (True, False, None)
    assert result.error_classes == (StsError.TXT_INVALID,)
    # The policy host is still examined (and is fine), but no sender would apply it.
    assert result.policy_valid and not result.active


async def test_two_txt_records(world: PolicyWorld, resolver: DnsResolver) -> None:
    result = await _check(world, resolver, "twotxt")
    assert result.error_classes == (StsError.TXT_MULTIPLE,) and not result.active
    # RFC 8461 §3.1: with two v=STSv1 records no policy applies, so the domain row has no mode; the
    # fetched file's enforce is kept apart, under its own name.
    columns = (await _judged(world, resolver, "twotxt")).columns()
    assert (columns["mta_sts_mode"], columns["mta_sts_fetched_mode"]) == (None, "enforce")
    enforced = (await _judged(world, resolver, "enforce")).columns()
    assert (enforced["mta_sts_mode"], enforced["mta_sts_fetched_mode"]) == ("enforce", "enforce")


async def test_no_txt_means_no_fetch(world: PolicyWorld, resolver: DnsResolver) -> None:
    result = await _check(world, resolver, "notxt")
    assert (result.txt_present, result.policy_fetched, result.error_classes) == (False, False, (StsError.TXT_MISSING,))
    assert d("mta-sts.notxt") not in world.requested_hosts()


async def test_txt_lookup_failure_is_a_dns_error(world: PolicyWorld) -> None:
    block_host = world.nsd.address.rsplit(".", 1)[0]
    with FaultyDnsServer({f"_mta-sts.{d('enforce')}": Behaviour.SERVFAIL}, loopback_host(block_host, 53)) as faulty:
        res = DnsResolver(DnsConfig(servers=(faulty.resolver,), timeout=1.0, tries=1))
        try:
            result = await check_mta_sts(d("enforce"), [], StsFetch(resolver=res, policy=ALLOW, trust=world.ca.ca_file))
        finally:
            await res.close()
    assert result.error_classes == (StsError.DNS_ERROR,) and not result.txt_present


# --------------------------------------------------------------------------
# MTA-STS: fetch problems
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "error", "status"),
    [
        ("redirect", StsError.HTTP_REDIRECT, 301),
        ("notfound", StsError.HTTP_STATUS, 404),
        ("servererror", StsError.HTTP_STATUS, 503),
        ("big", StsError.TOO_LARGE, 200),
        ("html", StsError.MEDIA_TYPE, 200),
        ("badsyntax", StsError.POLICY_SYNTAX, 200),
        ("untrusted", StsError.TLS_UNTRUSTED, None),
        ("wrongname", StsError.TLS_NAME_MISMATCH, None),
        ("expired", StsError.TLS_EXPIRED, None),
        ("nohost", StsError.POLICY_HOST_DNS, None),
    ],
)
async def test_fetch_failures(
    world: PolicyWorld, resolver: DnsResolver, label: str, error: StsError, status: int | None
) -> None:
    result = await _check(world, resolver, label, [d(f"mx1.{label}")])
    assert result.txt_valid and not result.policy_valid and not result.active
    assert result.error_classes == (error,), result.errors
    assert result.http_status == status
    assert result.mx_verdicts == () and result.mode is None


async def test_redirect_is_not_followed(world: PolicyWorld, resolver: DnsResolver) -> None:
    result = await fetch_policy(d("redirect"), StsFetch(resolver=resolver, policy=ALLOW, trust=world.ca.ca_file,
                                                        timeout=5))
    assert result.error is StsError.HTTP_REDIRECT and d("mta-sts.target") in result.detail
    assert d("mta-sts.target") not in world.requested_hosts()


async def test_oversized_body_read_is_capped(world: PolicyWorld, resolver: DnsResolver) -> None:
    result = await fetch_policy(d("big"), StsFetch(resolver=resolver, policy=ALLOW, trust=world.ca.ca_file,
                                                   max_bytes=4096))
    assert (result.error, result.body_bytes) == (StsError.TOO_LARGE, 4097)
    small = await fetch_policy(d("enforce"), StsFetch(resolver=resolver, policy=ALLOW, trust=world.ca.ca_file,
                                                      max_bytes=len(ENFORCE)))
    assert small.error is None and small.body_bytes == len(ENFORCE)


async def test_slow_server_times_out(world: PolicyWorld, resolver: DnsResolver) -> None:
    started = time.monotonic()
    result = await _check(world, resolver, "slow", timeout=1.0)
    elapsed = time.monotonic() - started
    assert result.error_classes == (StsError.FETCH_TIMEOUT,)
    assert 0.9 <= elapsed < 5, elapsed


async def test_certifi_default_does_not_trust_the_test_ca(world: PolicyWorld, resolver: DnsResolver) -> None:
    result = await fetch_policy(d("enforce"), StsFetch(resolver=resolver, policy=ALLOW, timeout=5))
    assert result.error is StsError.TLS_UNTRUSTED


async def test_connection_refused(world: PolicyWorld, tmp_path: Path) -> None:
    # A zone whose policy host points at a loopback address where nothing listens on 443.
    block = world.nsd.address.rsplit(".", 1)[0]
    zone = Zone("refused.test").a("mta-sts", loopback_host(block, 81)).txt("_mta-sts", "v=STSv1; id=1")
    with NsdServer(tmp_path / "nsd", [zone], address=loopback_host(block, 2)) as nsd:
        res = DnsResolver(DnsConfig(servers=(nsd.resolver,), timeout=1.0, tries=1))
        try:
            result = await check_mta_sts("refused.test", [], StsFetch(resolver=res, policy=ALLOW,
                                                                      trust=world.ca.ca_file, timeout=5))
        finally:
            await res.close()
    assert result.error_classes == (StsError.FETCH_CONNECT,)


async def test_reserved_and_excluded_addresses_are_never_contacted(world: PolicyWorld, resolver: DnsResolver) -> None:
    before = world.requested_hosts().count(d("mta-sts.enforce"))
    default = await fetch_policy(d("enforce"), StsFetch(resolver=resolver, policy=AddressPolicy(),
                                                        trust=world.ca.ca_file))
    assert default.error is StsError.ADDRESS_REFUSED and "reserved_address" in default.detail
    excluded = AddressPolicy(allow_private=True, exclude=ExcludeList.from_lines([f"{world.web}/32"]))
    by_cidr = await fetch_policy(d("enforce"), StsFetch(resolver=resolver, policy=excluded, trust=world.ca.ca_file))
    assert by_cidr.error is StsError.ADDRESS_REFUSED and "excluded" in by_cidr.detail
    by_name = AddressPolicy(allow_private=True, exclude=ExcludeList.from_lines([ZONE]))
    named = await fetch_policy(d("enforce"), StsFetch(resolver=resolver, policy=by_name, trust=world.ca.ca_file))
    assert named.error is StsError.ADDRESS_REFUSED
    assert world.requested_hosts().count(d("mta-sts.enforce")) == before


async def test_fetches_never_use_the_system_resolver(
    world: PolicyWorld, resolver: DnsResolver, no_system_resolver: list[str]
) -> None:
    # The guard raises inside aiohttp if it is ever consulted; also prove the guard is live.
    result = await fetch_policy(d("testing"), StsFetch(resolver=resolver, policy=ALLOW, trust=world.ca.ca_file))
    assert result.error is None and result.addresses == (world.web,)
    with pytest.raises(AssertionError):
        socket.getaddrinfo("example.invalid", 443)
    assert no_system_resolver == ["example.invalid"]


# --------------------------------------------------------------------------
# TLS-RPT
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "status", "schemes"),
    [
        ("enforce", TlsRptStatus.VALID, ("mailto", "https")),
        ("testing", TlsRptStatus.VALID, ("mailto",)),  # >255 octets, several character-strings
        ("badtxt", TlsRptStatus.INVALID, ()),
        ("twotxt", TlsRptStatus.MULTIPLE, ()),
        ("none", TlsRptStatus.MISSING, ()),
        ("nosuchdomain", TlsRptStatus.MISSING, ()),
    ],
)
async def test_tlsrpt(resolver: DnsResolver, label: str, status: TlsRptStatus, schemes: tuple[str, ...]) -> None:
    result = await check_tlsrpt(d(label), resolver)
    assert result.status is status, result.detail
    assert result.schemes == schemes


async def test_tlsrpt_dns_failure(world: PolicyWorld) -> None:
    block = world.nsd.address.rsplit(".", 1)[0]
    with FaultyDnsServer({}, loopback_host(block, 53), default=Behaviour.REFUSED) as faulty:
        res = DnsResolver(DnsConfig(servers=(faulty.resolver,), timeout=1.0, tries=1))
        try:
            result = await check_tlsrpt(d("enforce"), res)
        finally:
            await res.close()
    assert result.status is TlsRptStatus.DNS_ERROR


# --------------------------------------------------------------------------
# DANE / TLSA
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mx", "chain_of", "verdict", "outcome"),
    [
        ("mx1", "mx1", DaneVerdict.MATCH, DnsOutcome.ANSWER),
        ("mx2", "mx2", DaneVerdict.NO_MATCH, DnsOutcome.ANSWER),  # TLSA still names an older certificate
        ("mxta", "mxta", DaneVerdict.MATCH, DnsOutcome.ANSWER),
        ("mxpkix", "mxpkix", DaneVerdict.NO_USABLE_RECORDS, DnsOutcome.ANSWER),
        ("mx3", "mx1", DaneVerdict.NO_RECORDS, DnsOutcome.NXDOMAIN),
        ("mxcname", "mx1", DaneVerdict.MATCH, DnsOutcome.ANSWER),  # TLSA name is a CNAME to mx1's
    ],
)
async def test_tlsa_against_nsd(
    world: PolicyWorld, mx: str, chain_of: str, verdict: DaneVerdict, outcome: DnsOutcome
) -> None:
    chain = _der_chain(world.mx_certs[chain_of])
    result = await check_dane(d(f"{mx}.enforce"), chain, world.dns())
    assert (result.verdict, result.lookup.outcome) == (verdict, outcome), result.match.detail
    # nsd is authoritative-only (RA=0): its answers carry no validation result.
    assert result.dnssec is DnssecStatus.UNKNOWN
    # So a DANE sender's fate there is unknown, unless the name has no TLSA records at all.
    assert _sender(result) is (DaneDelivery.NOT_DANE if verdict is DaneVerdict.NO_RECORDS else DaneDelivery.UNKNOWN)


def _sender(result: DaneResult) -> DaneDelivery:
    """What a DANE sender does at one MX address with this TLSA result and a working STARTTLS."""
    return dane_sender_verdict([dane_link("mx.test", "192.0.2.1", result, tested=True, tls_ok=True)]).delivery


async def test_tlsa_records_as_published(world: PolicyWorld) -> None:
    lookup = await lookup_tlsa(d("mx2.enforce"), world.dns())
    assert sorted((r.usage, r.selector, r.mtype, len(r.data)) for r in lookup.records) == [(3, 0, 2, 64), (3, 1, 1, 32)]
    assert lookup.server == world.nsd.resolver
    ta = await check_dane(d("mxta.enforce"), _der_chain(world.mx_certs["mxta"]), world.dns())
    assert (ta.match.matched_depth, ta.match.name_match) == (1, NameMatch.SAN)
    # mx1 presents a valid chain through the same intermediate, but its leaf names mx1, not mxta:
    # the DANE-TA record matches and the chain verifies, the RFC 7672 §3.2.3 name check fails.
    wrong = await check_dane(d("mxta.enforce"), _der_chain(world.mx_certs["mx1"]), world.dns())
    assert (wrong.verdict, wrong.match.name_match) == (DaneVerdict.NAME_MISMATCH, NameMatch.MISMATCH)


async def test_tlsa_lookups_spend_the_scans_dns_budget(world: PolicyWorld, resolver: DnsResolver) -> None:
    before = resolver.queries_sent
    lookup = await lookup_tlsa(d("mx2.enforce"), resolver)
    assert lookup.records and resolver.queries_sent == before + 1 and resolver.in_flight == 0


async def test_tlsa_lookup_needs_explicit_servers() -> None:
    with pytest.raises(ConfigError):
        await lookup_tlsa("mx.example.test", DnsConfig())


async def test_tlsa_lookup_timeout(world: PolicyWorld) -> None:
    block = world.nsd.address.rsplit(".", 1)[0]
    with FaultyDnsServer({}, loopback_host(block, 53), default=Behaviour.TIMEOUT) as faulty:
        started = time.monotonic()
        result = await check_dane(d("mx1.enforce"), [], DnsConfig(servers=(faulty.resolver,), timeout=0.3, tries=2))
    assert (result.verdict, result.lookup.outcome, result.dnssec) == (
        DaneVerdict.LOOKUP_FAILED,
        DnsOutcome.TIMEOUT,
        DnssecStatus.UNKNOWN,
    )
    assert time.monotonic() - started < 3


# A recursive resolver stand-in that sets header bits as told, to read AD/RA/DO handling end to end.
@dataclass(frozen=True)
class _Answer:
    ad: bool
    ra: bool = True
    echo_do: bool = True


class _FlagResolver(asyncio.DatagramProtocol):
    def __init__(self, answers: dict[str, _Answer], tlsa_rdata: str) -> None:
        self.answers = answers
        self.tlsa_rdata = tlsa_rdata
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return
        qname = str(request.q.qname)
        spec = self.answers.get(qname)
        if spec is None or self.transport is None:
            return
        reply = request.reply(ra=int(spec.ra), aa=0)
        reply.header.ad = int(spec.ad)
        reply.add_answer(*RR.fromZone(f"{qname} 300 IN TLSA {self.tlsa_rdata}"))
        if spec.echo_do:
            reply.add_ar(EDNS0(udp_len=1232, flags="do"))
        self.transport.sendto(bytes(reply.pack()), addr)


async def test_ad_bit_is_read_from_a_recursive_resolver(world: PolicyWorld) -> None:
    chain = _der_chain(world.mx_certs["mx1"])
    rdata = f"3 1 1 {_spki_sha256(chain[0]).hex()}"
    answers = {
        "_25._tcp.secure.test.": _Answer(ad=True),
        "_25._tcp.insecure.test.": _Answer(ad=False),
        "_25._tcp.authoritative.test.": _Answer(ad=True, ra=False),
        "_25._tcp.olddns.test.": _Answer(ad=True, echo_do=False),
    }
    host = loopback_host(world.nsd.address.rsplit(".", 1)[0], 54)
    port = free_port(host)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _FlagResolver(answers, rdata), local_addr=(host, port)
    )
    try:
        config = DnsConfig(servers=(f"{host}:{port}",), timeout=1.0, tries=1)
        got = {
            name: await check_dane(name, chain, config)
            for name in ("secure.test", "insecure.test", "authoritative.test", "olddns.test")
        }
    finally:
        transport.close()
    assert {name: (r.verdict, r.dnssec, _sender(r)) for name, r in got.items()} == {
        "secure.test": (DaneVerdict.MATCH, DnssecStatus.AUTHENTICATED, DaneDelivery.YES),
        "insecure.test": (DaneVerdict.MATCH, DnssecStatus.NOT_AUTHENTICATED, DaneDelivery.NOT_DANE),
        "authoritative.test": (DaneVerdict.MATCH, DnssecStatus.UNKNOWN, DaneDelivery.UNKNOWN),
        "olddns.test": (DaneVerdict.MATCH, DnssecStatus.UNKNOWN, DaneDelivery.UNKNOWN),
    }


# --------------------------------------------------------------------------
# The scan fetches a domain's policies beside its probes
# --------------------------------------------------------------------------

GATE_WAIT = 10.0  # seconds the MX holds its banner waiting for the policy fetch; the scan waits longer


def _gate(listener: socket.socket, seen: list[bool], policy_fetched: Any) -> None:
    """An MX that, before its banner, waits (at most GATE_WAIT) for the domain's policy fetch to reach
    nginx, notes whether it did, then says 421 and closes."""
    with contextlib.suppress(OSError):
        while True:
            conn, _ = listener.accept()
            with conn:
                deadline = time.monotonic() + GATE_WAIT
                while not policy_fetched() and time.monotonic() < deadline:
                    time.sleep(0.05)
                seen.append(policy_fetched())
                conn.sendall(b"421 4.3.2 closing for the test\r\n")


def test_policy_fetch_beside_probe(world: PolicyWorld, tmp_path: Path) -> None:
    """The scan fetches the MTA-STS policy while the domain's MX is still to answer its probe (the
    fetch needs nothing from the probes); it used to wait for the probe first."""
    import threading

    from scanner.cli import main

    listener = socket.create_server((world.gate, 25))
    seen: list[bool] = []

    def fetched() -> bool:
        return d("mta-sts.beside") in world.requested_hosts()

    thread = threading.Thread(target=_gate, args=(listener, seen, fetched), daemon=True)
    thread.start()
    domains = tmp_path / "domains.txt"
    domains.write_text(d("beside") + "\n", encoding="utf-8")
    try:
        code = main(["scan", str(domains), "-o", str(tmp_path / "out"), "--resolver", world.nsd.resolver,
                     "--ca-file", str(world.ca.ca_file), "--ehlo-name", "scanner.test", "--per-ip-interval", "0",
                     "--no-progress", "--dns-timeout", "1", "--allow-private", "--banner-timeout",
                     str(GATE_WAIT * 2), "--throttle-retry", "0.1"])
    finally:
        listener.close()
        thread.join(GATE_WAIT + 5)
    assert code == 0
    assert seen and seen[0] is True, seen


# --------------------------------------------------------------------------
# The nginx world itself
# --------------------------------------------------------------------------


def test_nginx_stops_every_process(tmp_path: Path) -> None:
    block = pick_loopback_block()
    cert = self_signed(tmp_path / "cert", ["mta-sts.stop.test"])
    server = NginxServer(
        tmp_path / "nginx", loopback_host(block, 80), [Site("mta-sts.stop.test", cert.cert_file, cert.key_file, "x")]
    )
    server.start()
    pgid = server.pid
    assert pgid is not None
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    with socket.socket() as sock, pytest.raises(OSError):
        sock.settimeout(1)
        sock.connect((loopback_host(block, 80), 443))
