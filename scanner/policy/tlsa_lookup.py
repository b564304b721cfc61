"""The TLSA lookup for DANE (RFC 7672 §2.2): one query with the EDNS DO bit, reading the AD bit.

:func:`lookup_tlsa` returns a :class:`~scanner.policy.dane.TlsaLookup` fact and judges nothing;
:func:`check_dane` is the lookup followed by the one pure decision, :func:`~scanner.policy.dane.judge_dane`.

The query goes through the scan's own resolver (``scanner.dns``): its wire codec sets DO and AD in
the query and reads the AD and RA bits, the echoed DO bit and the Extended DNS Errors of the reply, and
its transport gives TLSA the same timeouts, retries, answer checks (RFC 5452) and DNS limits as every
other query. Only telling a bogus answer from another SERVFAIL asks again, with CD set
(``scanner.dns.dnssec``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from scanner.config import ConfigError, DnsConfig
from scanner.dns.dnssec import ede_text, validation_failure
from scanner.dns.resolver import DnsResolver, QueryResult, rcode_outcome, rcode_text
from scanner.dns.transport import Server
from scanner.dns.wire import RCODE_NOERROR, RCODE_NXDOMAIN, TYPES, NameTooLong, Reply, WireError, build_query
from scanner.policy.dane import DaneResult, DnssecStatus, TlsaLookup, TlsaRecord, dnssec_status, judge_dane, tlsa_name
from scanner.status import DnsOutcome

__all__ = ["check_dane", "lookup_tlsa"]

_TYPE_TLSA = TYPES["TLSA"]


def _server_text(server: Server) -> str:
    return f"[{server.host}]:{server.port}" if ":" in server.host else f"{server.host}:{server.port}"


def _records(reply: Reply) -> tuple[TlsaRecord, ...]:
    # CNAME-expanded answers carry the TLSA RRset under the target's name; take TLSA records only. The
    # codec gives each as "usage selector matching-type hex-data" (RFC 6698 §2.2).
    out = []
    for record in reply.answers:
        if record.rtype == _TYPE_TLSA:
            usage, selector, mtype, data = record.data.split(" ")
            out.append(TlsaRecord(int(usage), int(selector), int(mtype), bytes.fromhex(data)))
    return tuple(out)


def _from_reply(name: str, server: Server, reply: Reply, started: float) -> TlsaLookup:
    elapsed = (time.perf_counter() - started) * 1000
    status = dnssec_status(answered=reply.rcode in (RCODE_NOERROR, RCODE_NXDOMAIN), ad=reply.authenticated,
                           ra=reply.recursion_available, do_echoed=reply.dnssec_ok)
    if reply.rcode != RCODE_NOERROR:
        outcome = rcode_outcome(reply.rcode)
        ede = ede_text(reply.extended_errors)
        detail = f"TLSA {name}: {rcode_text(reply.rcode)}" + (f" ({ede})" if ede else "")
        return TlsaLookup(name, outcome, (), status, detail, _server_text(server), elapsed)
    records = _records(reply)
    outcome = DnsOutcome.ANSWER if records else DnsOutcome.NODATA
    return TlsaLookup(name, outcome, records, status, "", _server_text(server), elapsed)


async def lookup_tlsa(mx_host: str, dns: DnsResolver | DnsConfig, *, port: int = 25) -> TlsaLookup:
    """Query the TLSA RRset of an MX host with EDNS DO and AD set, through ``dns``.

    A ``DnsResolver`` is the scan's: the query takes its rate and in-flight limits, timeouts and tries.
    A ``DnsConfig`` gets a resolver of its own for this one lookup. There is no fallback to the system
    resolver: a configuration without servers is an error.
    """
    if not (dns.config if isinstance(dns, DnsResolver) else dns).servers:
        raise ConfigError("TLSA lookups need explicit resolver addresses (the system resolver is never used)")
    if isinstance(dns, DnsResolver):
        return await _lookup(mx_host, dns, port)
    resolver = DnsResolver(dns)
    try:
        return await _lookup(mx_host, resolver, port)
    finally:
        await resolver.close()


async def _lookup(mx_host: str, resolver: DnsResolver, port: int) -> TlsaLookup:
    name = tlsa_name(mx_host, port)
    try:
        build_query(0, name, _TYPE_TLSA)  # a name that cannot be asked is a fact about the host, not a failure
    except WireError as exc:  # NameTooLong for a valid host of 247+ characters
        return TlsaLookup(name[:300], DnsOutcome.ERROR, detail=f"TLSA name cannot be queried: {exc}",
                          name_too_long=isinstance(exc, NameTooLong))
    started = time.perf_counter()
    answer = await resolver.message(name, "TLSA", dnssec=True)
    if isinstance(answer, QueryResult):  # no reply: timeout or a network error
        return TlsaLookup(name, answer.outcome, (), DnssecStatus.UNKNOWN, answer.detail, None,
                          (time.perf_counter() - started) * 1000)
    reply, server = answer
    found = _from_reply(name, server, reply, started)
    if found.outcome is DnsOutcome.SERVFAIL:
        return await _bogus_or(found, reply, resolver)
    return found


async def _bogus_or(lookup: TlsaLookup, reply: Reply, resolver: DnsResolver) -> TlsaLookup:
    """A SERVFAIL TLSA answer: bogus (DNSSEC validation failed) or an ordinary failure (RFC 4035 §3.2.2)."""
    bogus = await validation_failure(lookup.name, "TLSA", resolver.config, budget=resolver.budget,
                                     ede=ede_text(reply.extended_errors))
    if bogus is None:
        return lookup
    return TlsaLookup(lookup.name, lookup.outcome, (), DnssecStatus.BOGUS, bogus, lookup.server, lookup.elapsed_ms)


async def check_dane(
    mx_host: str,
    chain_der: Sequence[bytes] | None,
    dns: DnsResolver | DnsConfig,
    *,
    reference_names: Sequence[str] | None = None,
    now: datetime | None = None,
) -> DaneResult:
    """Look up the MX host's TLSA records and judge them against the chain it presented (:func:`judge_dane`).

    ``chain_der`` is the STARTTLS certificate chain (leaf first), or None/empty if no TLS session
    was made. ``reference_names`` defaults to the MX host name (RFC 7672 §3.2.3).
    """
    lookup = await lookup_tlsa(mx_host, dns)
    return judge_dane(mx_host, lookup, chain_der, reference_names=reference_names, now=now)
