"""The scan's DNS client: questions to the configured resolvers, answers as typed ``QueryResult``s.

Every resolver error is translated here, once, into a ``DnsOutcome``; nothing above sees rcodes or
socket errors. A global token bucket caps queries per second and a semaphore caps queries in flight.
The wire format is ``scanner.dns.wire``, the sockets, timeouts and retries ``scanner.dns.transport``
(which says why this is not c-ares: its adaptive timeouts ignored ``--dns-timeout``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import dns.rcode

from scanner.config import DnsConfig, parse_host_port
from scanner.dns.records import MxRecord
from scanner.dns.transport import DnsTimeout, Server, StubTransport, system_nameservers
from scanner.dns.wire import RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_SERVFAIL, TYPES, Reply, WireError
from scanner.net.limits import Slots, TokenBucket
from scanner.status import DnsOutcome

__all__ = ["DnsResolver", "QueryResult", "QueryType", "rcode_outcome", "rcode_text"]

QueryType = Literal["MX", "A", "AAAA", "TXT", "CNAME", "NS", "TLSA"]

# RFC 1034 §3.6.2 allows CNAME chains; resolvers cap them around 8–16 hops. Ours only matters when the
# server answered with a CNAME but not the target's records (an authoritative server for another zone).
MAX_CNAME_HOPS = 8

_TYPE_CNAME = TYPES["CNAME"]
_RCODE_OUTCOMES = {
    RCODE_NXDOMAIN: DnsOutcome.NXDOMAIN,
    RCODE_SERVFAIL: DnsOutcome.SERVFAIL,
    RCODE_REFUSED: DnsOutcome.REFUSED,
}


@dataclass(frozen=True, slots=True)
class QueryResult:
    outcome: DnsOutcome
    detail: str = ""
    mx: tuple[MxRecord, ...] = ()
    addresses: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    cnames: tuple[str, ...] = ()  # CNAME targets followed, in order
    elapsed_ms: float = 0.0


@dataclass(slots=True)
class _Collected:
    mx: list[MxRecord]
    addresses: list[str]
    texts: list[str]
    cnames: list[str]


def _collect(reply: Reply, rtype: QueryType) -> _Collected:
    out = _Collected([], [], [], [])
    wanted = TYPES[rtype]
    # Names from the codec are already in normal form (lower case, no trailing dot, no blank: anything
    # outside printable ASCII is escaped as \DDD), so they are taken as they are.
    for record in reply.answers:
        if record.rtype == _TYPE_CNAME:
            out.cnames.append(record.data)
        elif record.rtype != wanted:
            continue
        elif rtype == "MX":
            preference, _, exchange = record.data.partition(" ")
            out.mx.append(MxRecord(int(preference), exchange))
        elif rtype in ("A", "AAAA"):
            out.addresses.append(record.data)
        elif rtype == "TXT":
            out.texts.append(record.data)
    return out


def _servers(config: DnsConfig) -> list[Server]:
    if not config.servers:
        return system_nameservers()
    return [Server(*parse_host_port(server, 53)) for server in config.servers]


class DnsResolver:
    """Rate-limited asynchronous resolver. Create inside a running event loop; ``close()`` when done."""

    def __init__(self, config: DnsConfig, observe: Callable[[DnsOutcome, str], None] | None = None) -> None:
        self._config = config
        # Told every query's outcome (scanner.health watches the share of failures); None: nobody.
        self._observe = observe
        self._transport = StubTransport(_servers(config), config.timeout, config.tries)
        self._bucket = TokenBucket(config.qps)
        self._query_slots = Slots(config.concurrency)
        self.queries_sent = 0
        self.in_flight = 0
        self._budget = _QueryBudget(self)

    @property
    def config(self) -> DnsConfig:
        """The DNS settings (servers, timeout, tries) other DNS clients of the scan must use too."""
        return self._config

    @property
    def dropped_datagrams(self) -> int:
        """Datagrams dropped as malformed or answering no query in flight (see ``scanner.dns.transport``)."""
        return self._transport.dropped_datagrams

    async def close(self) -> None:
        await self._transport.close()

    def budget(self) -> _QueryBudget:
        """One query's share of the scan's DNS limits (rate and in-flight cap), counted as sent.

        Every query through this resolver takes it; so do the queries another library sends (dnspython's
        CD=1 query that tells a bogus answer from a SERVFAIL, ``scanner.dns.dnssec``), so that
        ``--dns-qps`` and ``--dns-concurrency`` bound everything the scan asks of the resolver.
        """
        return self._budget

    async def answers(self) -> QueryResult:
        """Whether the resolver answers at all: one ``. NS`` query (RFC 8109 priming query).

        Any DNS reply (an answer, NODATA, NXDOMAIN, REFUSED, SERVFAIL) proves something listens and
        speaks DNS; only a timeout or a network error (nothing listening) means it does not.
        """
        reply = await self._reply(".", "NS")  # any rcode (NOTIMP, FORMERR, REFUSED, ...) is an answer
        return reply if isinstance(reply, QueryResult) else QueryResult(DnsOutcome.ANSWER)

    async def message(self, name: str, rtype: QueryType, *, dnssec: bool = False) -> tuple[Reply, Server] | QueryResult:
        """The whole reply, whatever its rcode, and the server asked; or why none came (a failure).

        For callers that read more than records: the TLSA lookup asks with ``dnssec`` (DO and AD set)
        and reads the AD, RA and DO bits and the Extended DNS Errors (``scanner.policy.tlsa_lookup``).
        Under the scan's DNS limits like every query; the health watch is not told (its failures are
        the MX and address lookups')."""
        return await self._reply(name, rtype, dnssec=dnssec)

    async def query(self, name: str, rtype: QueryType) -> QueryResult:
        """Query ``name``/``rtype``, following CNAMEs the server left unresolved.

        NODATA means the server said NOERROR with no records of the type (the rcode is read from the
        reply itself), so an empty MX answer can decide "implicit MX" (RFC 5321 §5.1) and an empty
        ``_mta-sts`` TXT answer "no policy"; any other rcode is a failure naming it.
        """
        started = time.perf_counter()
        cnames: list[str] = []
        current = name
        for _ in range(MAX_CNAME_HOPS):
            result = self._noerror_reply(await self._reply(current, rtype), current, rtype)
            if isinstance(result, QueryResult):  # a failure
                return _with(result, cnames, started)
            collected = _collect(result, rtype)
            cnames.extend(collected.cnames)
            if collected.mx or collected.addresses or collected.texts or not collected.cnames:
                outcome = DnsOutcome.ANSWER if (collected.mx or collected.addresses or collected.texts) \
                    else DnsOutcome.NODATA
                return QueryResult(
                    outcome,
                    mx=tuple(collected.mx),
                    addresses=tuple(dict.fromkeys(collected.addresses)),
                    texts=tuple(collected.texts),
                    cnames=tuple(cnames),
                    elapsed_ms=(time.perf_counter() - started) * 1000,
                )
            current = collected.cnames[-1]  # only CNAMEs came back: chase the last target ourselves
        return QueryResult(DnsOutcome.ERROR, f"CNAME chain longer than {MAX_CNAME_HOPS}", cnames=tuple(cnames))

    def _noerror_reply(self, answer: tuple[Reply, Server] | QueryResult, name: str,
                       rtype: QueryType) -> Reply | QueryResult:
        """The reply when its rcode is NOERROR, else the failure (network, or the rcode named); the
        health watch is told either way."""
        if isinstance(answer, QueryResult):
            result = answer
        else:
            reply = answer[0]
            if reply.rcode == RCODE_NOERROR:
                if self._observe is not None:
                    self._observe(DnsOutcome.ANSWER, "")
                return reply
            outcome = rcode_outcome(reply.rcode)
            result = QueryResult(outcome, f"{rtype} {name}: rcode {rcode_text(reply.rcode)} ({reply.rcode})")
        if self._observe is not None:
            self._observe(result.outcome, result.detail)
        return result

    async def _reply(self, name: str, rtype: QueryType, *, dnssec: bool = False) -> tuple[Reply, Server] | QueryResult:
        """Whatever the resolver replied, or why nothing came (timeout, a name we cannot ask, a socket error)."""
        # The budget (``_QueryBudget``) taken inline, without a coroutine when nothing has to wait: this
        # runs for every query.
        if not self._bucket.try_acquire():
            await self._bucket.acquire()
        if not self._query_slots.try_acquire():
            await self._query_slots.acquire()
        self.queries_sent += 1
        self.in_flight += 1
        try:
            try:
                # No timer of its own here: every path of the transport ends within its timeouts (each UDP
                # try on the transport's deadline queue, socket set-up and TCP under ``timeout`` each).
                reply = await self._transport.exchange(name, TYPES[rtype], dnssec=dnssec)
            except (DnsTimeout, TimeoutError):
                timeout, tries = self._config.timeout, self._config.tries
                return QueryResult(DnsOutcome.TIMEOUT, f"{rtype} {name}: no answer within {timeout:g}s x {tries} tries")
            except WireError as exc:  # a name we cannot ask for (too long), or a malformed TCP reply
                return QueryResult(DnsOutcome.ERROR, f"{rtype} {name}: {exc}")
            except OSError as exc:
                return QueryResult(DnsOutcome.ERROR, f"{rtype} {name}: {exc.strerror or exc}")
        finally:
            self.in_flight -= 1
            self._query_slots.release()
        return reply


def rcode_outcome(rcode: int) -> DnsOutcome:
    """The failure an rcode other than NOERROR stands for (any rcode without its own is an ERROR)."""
    return _RCODE_OUTCOMES.get(rcode, DnsOutcome.ERROR)


def _registered_rcode_text(rcode: int) -> str:
    try:
        return dns.rcode.to_text(dns.rcode.Rcode.make(rcode))
    except ValueError:
        return str(rcode)


# The names of the registered rcodes up to BADCOOKIE (23, RFC 7873), read once: every NXDOMAIN answer
# names its rcode in the failure's detail.
_RCODE_TEXT: Final = tuple(_registered_rcode_text(rcode) for rcode in range(24))


def rcode_text(rcode: int) -> str:
    """RFC 6895 §2.3 names (YXDOMAIN, NOTAUTH, BADVERS, ...); a number nobody registered stays a number."""
    return _RCODE_TEXT[rcode] if 0 <= rcode < len(_RCODE_TEXT) else _registered_rcode_text(rcode)


class _QueryBudget:
    """``async with``: a token from the rate bucket and an in-flight slot, for one query.

    A plain class rather than an ``asynccontextmanager`` generator: it is entered for every query.
    Holds no per-use state, so one instance serves all concurrent queries.
    """

    __slots__ = ("_resolver",)

    def __init__(self, resolver: DnsResolver) -> None:
        self._resolver = resolver

    async def __aenter__(self) -> None:
        resolver = self._resolver
        await resolver._bucket.acquire()
        await resolver._query_slots.acquire()
        resolver.queries_sent += 1
        resolver.in_flight += 1

    async def __aexit__(self, *exc_info: object) -> None:
        self._resolver.in_flight -= 1
        self._resolver._query_slots.release()


def _with(result: QueryResult, cnames: list[str], started: float) -> QueryResult:
    return QueryResult(
        result.outcome,
        result.detail,
        cnames=tuple(cnames),
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )
