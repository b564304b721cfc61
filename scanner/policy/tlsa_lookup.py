"""The TLSA lookup for DANE (RFC 7672 §2.2): one query with the EDNS DO bit, reading the AD bit.

:func:`lookup_tlsa` returns a :class:`~scanner.policy.dane.TlsaLookup` fact and judges nothing;
:func:`check_dane` is the lookup followed by the one pure decision, :func:`~scanner.policy.dane.judge_dane`.

Why dnspython for the lookup: aiodns 4's ``query_dns`` has no TLSA type, and pycares 5's
``DNSResult`` exposes only the answer/authority/additional sections, not the header flags, so the AD
bit cannot be read through the scanner's c-ares resolver. dnspython's ``asyncquery`` talks to the
configured resolver address directly (never to resolv.conf) and returns the whole message.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from scanner.config import ConfigError, DnsConfig, parse_host_port
from scanner.dns.dnssec import Budget, ede_text, validation_failure
from scanner.policy.dane import DaneResult, DnssecStatus, TlsaLookup, TlsaRecord, dnssec_status, judge_dane, tlsa_name
from scanner.status import DnsOutcome

__all__ = ["check_dane", "lookup_tlsa"]

# A TLSA answer of a few records fits comfortably; 1232 is the DNS Flag Day 2020 EDNS buffer size.
_EDNS_PAYLOAD: Final = 1232

_RCODE_OUTCOMES: Final = {
    dns.rcode.NXDOMAIN: DnsOutcome.NXDOMAIN,
    dns.rcode.SERVFAIL: DnsOutcome.SERVFAIL,
    dns.rcode.REFUSED: DnsOutcome.REFUSED,
}


def _from_message(name: str, server: str, reply: dns.message.Message, started: float) -> TlsaLookup:
    rcode = reply.rcode()
    elapsed = (time.perf_counter() - started) * 1000
    answered = rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    status = dnssec_status(
        answered=answered,
        ad=bool(reply.flags & dns.flags.AD),
        ra=bool(reply.flags & dns.flags.RA),
        do_echoed=reply.edns >= 0 and bool(reply.ednsflags & dns.flags.DO),
    )
    if rcode != dns.rcode.NOERROR:
        outcome = _RCODE_OUTCOMES.get(rcode, DnsOutcome.ERROR)
        ede = ede_text(reply)
        detail = f"TLSA {name}: {dns.rcode.to_text(rcode)}" + (f" ({ede})" if ede else "")
        return TlsaLookup(name, outcome, (), status, detail, server, elapsed)
    # CNAME-expanded answers carry the TLSA RRset under the target's name; take TLSA RRsets only.
    records = tuple(
        TlsaRecord(int(rd.usage), int(rd.selector), int(rd.mtype), bytes(rd.cert))
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.TLSA
        for rd in rrset
    )
    outcome = DnsOutcome.ANSWER if records else DnsOutcome.NODATA
    return TlsaLookup(name, outcome, records, status, "", server, elapsed)


async def lookup_tlsa(
    mx_host: str, dns_config: DnsConfig, *, port: int = 25,
    budget: Budget | None = None,
) -> TlsaLookup:
    """Query the TLSA RRset of an MX host at the configured resolvers, with EDNS DO and AD set.

    Each server in ``dns_config.servers`` is tried in turn, ``dns_config.tries`` rounds, each query
    waiting ``dns_config.timeout`` seconds (UDP, retried over TCP when truncated). There is no
    fallback to the system resolver: an empty server list is a configuration error. ``budget``, when
    given, is entered around every query sent (the scan's DNS rate and in-flight limits).
    """
    if not dns_config.servers:
        raise ConfigError("TLSA lookups need explicit resolver addresses (the system resolver is never used)")
    name = tlsa_name(mx_host, port)
    try:
        query = dns.message.make_query(name + ".", dns.rdatatype.TLSA, want_dnssec=True, payload=_EDNS_PAYLOAD)
    except dns.exception.DNSException as exc:  # NameTooLong for a valid host of 247+ characters
        return TlsaLookup(name[:300], DnsOutcome.ERROR, detail=f"TLSA name cannot be queried: {exc}",
                          name_too_long=isinstance(exc, dns.name.NameTooLong))
    # RFC 6840 §5.7: setting AD in a query asks for the AD bit in the answer without needing DO's RRSIGs.
    query.flags |= dns.flags.AD
    started = time.perf_counter()
    problems: list[str] = []
    timeouts = 0
    for _ in range(dns_config.tries):
        for server in dns_config.servers:
            host, server_port = parse_host_port(server, 53)
            try:
                async with budget() if budget is not None else contextlib.nullcontext():
                    # A malformed or unsolicited datagram is dropped and the query keeps waiting (RFC
                    # 5452 §9.1), as in scanner.dns.transport; it used to fail the lookup.
                    reply, _tcp = await dns.asyncquery.udp_with_fallback(
                        query, host, timeout=dns_config.timeout, port=server_port, ignore_unexpected=True,
                        ignore_errors=True,
                    )
            except dns.exception.Timeout:
                timeouts += 1
                problems.append(f"{server}: timeout")
                continue
            except (OSError, dns.exception.DNSException) as exc:
                problems.append(f"{server}: {type(exc).__name__}: {exc}")
                continue
            found = _from_message(name, server, reply, started)
            if found.outcome is DnsOutcome.SERVFAIL:
                return await _bogus_or(found, reply, dns_config, budget)
            return found
    outcome = DnsOutcome.TIMEOUT if timeouts == len(problems) else DnsOutcome.ERROR
    detail = f"TLSA {name}: " + "; ".join(dict.fromkeys(problems))
    return TlsaLookup(name, outcome, (), DnssecStatus.UNKNOWN, detail, None, (time.perf_counter() - started) * 1000)


async def _bogus_or(
    lookup: TlsaLookup, reply: dns.message.Message, dns_config: DnsConfig, budget: Budget | None
) -> TlsaLookup:
    """A SERVFAIL TLSA answer: bogus (DNSSEC validation failed) or an ordinary failure (RFC 4035 §3.2.2)."""
    bogus = await validation_failure(lookup.name, "TLSA", dns_config, budget=budget, ede=ede_text(reply))
    if bogus is None:
        return lookup
    return TlsaLookup(lookup.name, lookup.outcome, (), DnssecStatus.BOGUS, bogus, lookup.server, lookup.elapsed_ms)


async def check_dane(
    mx_host: str,
    chain_der: Sequence[bytes] | None,
    dns_config: DnsConfig,
    *,
    reference_names: Sequence[str] | None = None,
    now: datetime | None = None,
) -> DaneResult:
    """Look up the MX host's TLSA records and judge them against the chain it presented (:func:`judge_dane`).

    ``chain_der`` is the STARTTLS certificate chain (leaf first), or None/empty if no TLS session
    was made. ``reference_names`` defaults to the MX host name (RFC 7672 §3.2.3).
    """
    lookup = await lookup_tlsa(mx_host, dns_config)
    return judge_dane(mx_host, lookup, chain_der, reference_names=reference_names, now=now)
