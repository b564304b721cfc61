"""The only module that talks to the DNS library (aiodns/c-ares).

Every resolver error is translated here, once, into a ``DnsOutcome``; nothing above sees pycares
error numbers. A global token bucket caps queries per second and a semaphore caps queries in flight.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiodns
import aiodns.error
import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import pycares

from scanner.config import DnsConfig, parse_host_port
from scanner.dns.records import MxRecord, normalize_exchange
from scanner.net.limits import TokenBucket
from scanner.status import DnsOutcome

__all__ = ["DnsResolver", "QueryResult", "QueryType"]

QueryType = Literal["MX", "A", "AAAA", "TXT", "CNAME", "NS"]

# RFC 1034 §3.6.2 allows CNAME chains; resolvers cap them around 8–16 hops. Ours only matters when the
# server answered with a CNAME but not the target's records (an authoritative server for another zone).
MAX_CNAME_HOPS = 8

_OUTCOMES = {
    pycares.errno.ARES_ENOTFOUND: DnsOutcome.NXDOMAIN,
    pycares.errno.ARES_ENODATA: DnsOutcome.NODATA,
    pycares.errno.ARES_ESERVFAIL: DnsOutcome.SERVFAIL,
    pycares.errno.ARES_ETIMEOUT: DnsOutcome.TIMEOUT,
    pycares.errno.ARES_EREFUSED: DnsOutcome.REFUSED,
}


# c-ares turns only the rcodes it knows (FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED) into errors; any
# other rcode with no records (6-11 from RFC 2136/8490, 16 BADVERS from RFC 6891) reaches us as an empty
# answer, indistinguishable from NODATA. Where NODATA decides something (an empty MX answer means
# "implicit MX", RFC 5321 §5.1), the rcode is read with dnspython (``DnsResolver.confirm_nodata``).
_RCODE_OUTCOMES: dict[int, DnsOutcome] = {
    dns.rcode.NXDOMAIN: DnsOutcome.NXDOMAIN,
    dns.rcode.SERVFAIL: DnsOutcome.SERVFAIL,
    dns.rcode.REFUSED: DnsOutcome.REFUSED,
}
_EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size, as c-ares sends


def _rcode_text(rcode: int) -> str:
    try:
        return dns.rcode.to_text(dns.rcode.Rcode(rcode))
    except ValueError:
        return "unassigned"


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


def _collect(result: pycares.DNSResult, rtype: QueryType) -> _Collected:
    out = _Collected([], [], [], [])
    for record in result.answer:
        data = record.data
        if isinstance(data, pycares.CNAMERecordData):
            out.cnames.append(normalize_exchange(data.cname))
        elif rtype == "MX" and isinstance(data, pycares.MXRecordData):
            out.mx.append(MxRecord(int(data.priority), normalize_exchange(data.exchange)))
        elif rtype in ("A", "AAAA") and isinstance(data, pycares.ARecordData | pycares.AAAARecordData):
            out.addresses.append(str(data.addr))
        elif rtype == "TXT" and isinstance(data, pycares.TXTRecordData):
            raw = data.data
            out.texts.append(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
    return out


# Answers wait in the UDP socket while the event loop is busy with other work (hundreds of ms at full
# speed), and with a thousand queries in flight the kernel's default buffer (208 KiB, ~250 datagrams)
# overflows: answers are dropped and come back as c-ares timeouts. The kernel caps the request at
# net.core.rmem_max (4 MiB on this machine, 208 KiB on a stock kernel: see the README's tuning notes).
UDP_RECEIVE_BUFFER = 4 << 20


class _LoopDrivenResolver(aiodns.DNSResolver):
    """aiodns driven by the event loop's own readiness callbacks instead of pycares' event thread.

    With pycares 5, aiodns runs c-ares on a helper thread that hands every answer back through
    ``call_soon_threadsafe``. In a scan the event loop thread is busy all the time, so each answer
    costs a GIL hand-over between the two threads, and each query call (which releases the GIL) lets
    that thread cut in. Profiled at ~1,000 domains/s, ``Channel.query`` alone took a fifth of the loop
    thread. aiodns still supports c-ares' socket-state callbacks (its fallback when the event thread
    cannot be created); this subclass always takes that path. ``_make_channel`` is aiodns' own
    hook, stable across aiodns 4.x (pinned in pyproject.toml); ``tests/unit/test_dns_resolver_mode.py``
    fails if a new aiodns stops honouring it.
    """

    def _make_channel(self, **kwargs: Any) -> tuple[bool, pycares.Channel]:
        weak_self = weakref.ref(self)

        def on_socket_state(fd: int, readable: bool, writable: bool) -> None:
            this = weak_self()
            if this is not None:
                this._sock_state_cb(fd, readable, writable)

        return False, pycares.Channel(sock_state_cb=on_socket_state, timeout=self._timeout, **kwargs)


class DnsResolver:
    """Rate-limited asynchronous resolver. Create inside a running event loop; ``close()`` when done.

    c-ares (since 1.23) keeps every answer in a per-channel cache for its TTL (up to an hour), and
    pycares offers no option to turn it off. At thousands of domains per second that cache becomes the
    scanner's largest memory user, growing with the input. We already cache what we reuse (MX host
    addresses, in ``DomainResolver``), so the channel is replaced every ``channel_queries`` queries and
    the old one is closed once its last query returns: c-ares' cache stays bounded.
    """

    def __init__(self, config: DnsConfig, channel_queries: int = 20_000,
                 observe: Callable[[DnsOutcome, str], None] | None = None) -> None:
        self._config = config
        # Told every query's outcome (scanner.health watches the share of failures); None: nobody.
        self._observe = observe
        self._channel_queries = channel_queries
        self._channel = self._new_channel()
        self._channel_used = 0
        self._pending: dict[aiodns.DNSResolver, int] = {self._channel: 0}
        self._retiring: set[asyncio.Task[None]] = set()
        self._bucket = TokenBucket(config.qps)
        self._query_slots = asyncio.Semaphore(config.concurrency)
        self.queries_sent = 0
        self.in_flight = 0
        self._budget = _QueryBudget(self)
        # Safety net above c-ares' own timeout*tries, so a lost callback can never hang a domain.
        self._deadline = config.timeout * config.tries + 2.0

    def _new_channel(self) -> aiodns.DNSResolver:
        servers = self._config.resolver_addresses()
        return _LoopDrivenResolver(nameservers=servers or None, timeout=self._config.timeout, tries=self._config.tries,
                                   socket_receive_buffer_size=UDP_RECEIVE_BUFFER)

    def _take_channel(self) -> aiodns.DNSResolver:
        if self._channel_used >= self._channel_queries:
            old = self._channel
            self._channel = self._new_channel()
            self._channel_used = 0
            self._pending[self._channel] = 0
            if self._pending[old] == 0:
                self._retire(old)
        self._channel_used += 1
        self._pending[self._channel] += 1
        return self._channel

    def _release_channel(self, channel: aiodns.DNSResolver) -> None:
        self._pending[channel] -= 1
        if channel is not self._channel and self._pending[channel] == 0:
            self._retire(channel)

    def _retire(self, channel: aiodns.DNSResolver) -> None:
        del self._pending[channel]
        task = asyncio.get_running_loop().create_task(channel.close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        for channel in list(self._pending):
            await channel.close()
        self._pending.clear()
        await asyncio.gather(*self._retiring)

    @property
    def config(self) -> DnsConfig:
        return self._config

    def budget(self) -> _QueryBudget:
        """One query's share of the scan's DNS limits (rate and in-flight cap), counted as sent.

        Every query of ours takes it; so do the queries another library sends (TLSA through dnspython,
        which reads the AD bit), so that ``--dns-qps`` and ``--dns-concurrency`` bound everything the
        scan asks of the resolver.
        """
        return self._budget

    async def answers(self) -> QueryResult:
        """Whether the resolver answers at all: one ``. NS`` query (RFC 8109 priming query).

        Any DNS reply (an answer, NODATA, NXDOMAIN, REFUSED, SERVFAIL) proves something listens and
        speaks DNS; only a timeout or a network error (nothing listening) means it does not.
        """
        result = await self._query_once(".", "NS")
        return result if isinstance(result, QueryResult) else QueryResult(DnsOutcome.ANSWER)

    async def query(self, name: str, rtype: QueryType) -> QueryResult:
        """Query ``name``/``rtype``, following CNAMEs the server left unresolved."""
        started = time.perf_counter()
        cnames: list[str] = []
        current = name
        for _ in range(MAX_CNAME_HOPS):
            result = await self._query_once(current, rtype)
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

    async def query_strict(self, name: str, rtype: QueryType) -> QueryResult:
        """``query``, with an empty answer confirmed to be NOERROR (``confirm_nodata``).

        For the lookups whose NODATA decides what the scan does or concludes: an empty MX answer means
        "implicit MX" (RFC 5321 §5.1), an empty ``_mta-sts``/``_smtp._tls`` TXT answer "no policy".
        NXDOMAIN, the usual "nothing here", needs no second query.
        """
        answer = await self.query(name, rtype)
        if answer.outcome is DnsOutcome.NODATA:
            answer = await self.confirm_nodata(name, rtype, answer)
        return answer

    async def confirm_nodata(self, name: str, rtype: QueryType, result: QueryResult) -> QueryResult:
        """``result`` (a NODATA) if the server's rcode really was NOERROR, else the failure it was.

        Asks again with dnspython, which shows the rcode (see ``_RCODE_OUTCOMES``); the query spends the
        scan's DNS budget like any other. No answer to it at all: ``TIMEOUT``, since an empty answer we
        could not confirm must not lead to contacting the domain's own address.
        """
        rcode, problem = await self._rcode(name, rtype)
        if rcode == dns.rcode.NOERROR:
            return result
        if rcode is None:
            return QueryResult(DnsOutcome.TIMEOUT, f"{rtype} {name}: empty answer not confirmed ({problem})",
                               cnames=result.cnames, elapsed_ms=result.elapsed_ms)
        return QueryResult(_RCODE_OUTCOMES.get(rcode, DnsOutcome.ERROR),
                           f"{rtype} {name}: rcode {_rcode_text(rcode)} ({rcode}) with no records, "
                           "not an empty answer", cnames=result.cnames, elapsed_ms=result.elapsed_ms)

    def _servers(self) -> list[tuple[str, int]]:
        if self._config.servers:
            return [parse_host_port(server, 53) for server in self._config.servers]
        try:  # the system's resolvers, as c-ares reads them
            return [(str(server), 53) for server in dns.resolver.Resolver().nameservers]
        except dns.exception.DNSException:
            return []

    async def _rcode(self, name: str, rtype: QueryType) -> tuple[int | None, str]:
        """The rcode of ``name``/``rtype`` at the configured servers, or (None, why not)."""
        problems: list[str] = []
        for _ in range(self._config.tries):
            for host, port in self._servers():
                for edns in (0, -1):  # FORMERR to EDNS: ask again without it, as c-ares does
                    query = dns.message.make_query(name, dns.rdatatype.from_text(rtype), use_edns=edns,
                                                   payload=_EDNS_PAYLOAD)
                    try:
                        async with self._budget:
                            reply, _ = await dns.asyncquery.udp_with_fallback(
                                query, host, timeout=self._config.timeout, port=port)
                    except (OSError, dns.exception.DNSException) as exc:
                        problems.append(f"{host}:{port}: {type(exc).__name__}")
                        break
                    if reply.rcode() != dns.rcode.FORMERR or edns < 0:
                        return int(reply.rcode()), ""
        return None, "; ".join(dict.fromkeys(problems)) or "no resolver"

    async def _query_once(self, name: str, rtype: QueryType) -> pycares.DNSResult | QueryResult:
        result = await self._query_wire(name, rtype)
        if self._observe is not None:
            if isinstance(result, QueryResult):
                self._observe(result.outcome, result.detail)
            else:
                self._observe(DnsOutcome.ANSWER, "")
        return result

    async def _query_wire(self, name: str, rtype: QueryType) -> pycares.DNSResult | QueryResult:
        async with self._budget:
            channel = self._take_channel()
            try:
                # asyncio.timeout, not wait_for: wait_for wraps the awaitable in a task of its own.
                async with asyncio.timeout(self._deadline):
                    return await channel.query_dns(name, rtype)
            except aiodns.error.DNSError as exc:
                code = exc.args[0] if exc.args else None
                message = exc.args[1] if len(exc.args) > 1 else str(exc)
                outcome = _OUTCOMES.get(code, DnsOutcome.ERROR) if isinstance(code, int) else DnsOutcome.ERROR
                return QueryResult(outcome, f"{rtype} {name}: {message}")
            except TimeoutError:
                return QueryResult(DnsOutcome.TIMEOUT, f"{rtype} {name}: no answer within {self._deadline:.0f}s")
            finally:
                self._release_channel(channel)


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
