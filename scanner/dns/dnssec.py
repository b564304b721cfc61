"""Telling a DNSSEC validation failure ("bogus") apart from any other SERVFAIL.

A validating resolver answers SERVFAIL both when it could not reach the authority and when the
data it got failed validation (RFC 4035 §5.5; RFC 4033 §5 "bogus"). Asking again with the Checking
Disabled bit set (RFC 4035 §3.2.2) separates the two: the resolver then hands over the data it
refused to vouch for. An answer (NOERROR or NXDOMAIN) with CD=1 after a SERVFAIL without it means
the data exists and did not validate. Extended DNS Errors (RFC 8914) in the first reply, when the
resolver sends them, are kept as the detail.

dnspython talks to the configured resolver addresses only (never to resolv.conf); every query spends
the scan's DNS budget when one is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from scanner.config import DnsConfig, parse_host_port

__all__ = ["Budget", "ede_text", "validation_failure"]

Budget = Callable[[], AbstractAsyncContextManager[None]]
_EDNS_PAYLOAD = 1232  # DNS Flag Day 2020 buffer size


def ede_text(errors: Iterable[tuple[int, str]]) -> str:
    """Extended DNS Errors (INFO-CODE, EXTRA-TEXT) as ``EDE <code> (<text>)``, '; '-joined (RFC 8914 §2)."""
    return "; ".join(f"EDE {code}" + (f" ({text})" if text else "") for code, text in errors)


async def validation_failure(name: str, rdtype: str, dns_config: DnsConfig, *, budget: Budget | None = None,
                             ede: str = "") -> str | None:
    """After a SERVFAIL for ``name``/``rdtype``: the bogus detail if the data fails validation, else None.

    None also when the CD=1 query fails too (the resolver could not get the data at all: an ordinary
    failure) or when no explicit resolver is configured.
    """
    query = dns.message.make_query(name.rstrip(".") + ".", dns.rdatatype.from_text(rdtype), want_dnssec=True,
                                   payload=_EDNS_PAYLOAD)
    query.flags |= dns.flags.CD
    for server in dns_config.servers:
        host, port = parse_host_port(server, 53)
        try:
            async with budget() if budget is not None else contextlib.nullcontext():
                reply, _tcp = await dns.asyncquery.udp_with_fallback(query, host, timeout=dns_config.timeout,
                                                                     port=port)
        except (OSError, dns.exception.DNSException):
            continue
        if reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            why = f": {ede}" if ede else ""
            return f"{rdtype} {name}: DNSSEC validation failed (bogus){why}; answers with checking disabled"
        return None
    return None
