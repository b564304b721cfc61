"""The MTA-STS policy fetch (RFC 8461 §3.3): HTTPS with aiohttp, returning the outcome as a fact.

:func:`fetch_document` is one self-contained call: the policy host, its vetted addresses, the trust
context and the injected connection slot in, a :class:`~scanner.policy.mta_sts.PolicyDocument` out.
Nothing is judged here: whether the answer is a usable policy is ``mta_sts.read_document``'s call.

Name resolution of the policy host never goes through the system resolver (``getaddrinfo``): the
host is resolved with the scanner's own :class:`~scanner.dns.resolver.DnsResolver`
(:func:`resolve_policy_host`), addresses the :class:`~scanner.net.addresses.AddressPolicy` refuses
are dropped, and aiohttp is handed a resolver that knows only those addresses and refuses every
other name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import itertools
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult

from scanner.dns.resolver import DnsResolver, QueryResult
from scanner.net.addresses import AddressPolicy
from scanner.policy.mta_sts import (
    MAX_POLICY_BYTES,
    POLICY_PATH,
    FetchResult,
    PolicyDocument,
    PolicyResponse,
    StsError,
    StsFailure,
    policy_host,
    read_document,
)
from scanner.status import DnsOutcome
from scanner.version import __version__

__all__ = [
    "DEFAULT_FETCH_TIMEOUT",
    "MAX_FETCH_ADDRESSES",
    "ConnectionSlot",
    "StsFetch",
    "fetch_document",
    "fetch_order",
    "fetch_policy",
    "fetch_policy_document",
    "policy_ssl_context",
    "resolve_policy_host",
]

# A connection slot for one address (the scan's politeness limiter): ``async with slot(address): ...``.
ConnectionSlot = Callable[[str], AbstractAsyncContextManager[None]]

# RFC 8461 §3.3 suggests senders limit the fetch to one minute.
DEFAULT_FETCH_TIMEOUT: Final = 60.0
# Addresses of the policy host tried per fetch, each at most once, the next only after the previous
# one refused or was unreachable (as a browser or an MTA moves on to the next address, RFC 8305 §3).
# A policy host has one to a few addresses; without a cap a host with 250 A records cost 31,375
# connection attempts in one fetch (aiohttp retries the whole remaining list after each failure).
MAX_FETCH_ADDRESSES: Final = 4


def policy_ssl_context(trust: ssl.SSLContext | str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """Client TLS context for policy fetches (RFC 8461 §3.3).

    ``trust`` is a ready context (used as is), a PEM CA file, or None for certifi's Mozilla roots.
    The certificate must chain to a trusted root, be unexpired and carry ``mta-sts.<domain>`` as a
    DNS-ID: hostname checking is on and the subject CN is never used (RFC 6125 §6.4.4 / RFC 9525).
    """
    if isinstance(trust, ssl.SSLContext):
        return trust
    context = ssl.create_default_context(cafile=os.fspath(trust) if trust is not None else certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.hostname_checks_common_name = False
    return context


# OpenSSL X509_V_ERR_* codes found in ssl.SSLCertVerificationError.verify_code.
_X509_NOT_YET_VALID: Final = 9
_X509_EXPIRED: Final = 10
_X509_HOSTNAME_MISMATCH: Final = 62


def _tls_failure(exc: aiohttp.ClientSSLError) -> StsFailure:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        code = getattr(cert_error, "verify_code", None)
        message = getattr(cert_error, "verify_message", None) or str(cert_error)
        if code == _X509_HOSTNAME_MISMATCH:
            return StsFailure(StsError.TLS_NAME_MISMATCH, message)
        if code in (_X509_EXPIRED, _X509_NOT_YET_VALID):
            return StsFailure(StsError.TLS_EXPIRED, message)
        return StsFailure(StsError.TLS_UNTRUSTED, message)
    return StsFailure(StsError.TLS_ERROR, str(exc))


class _PinnedResolver(AbstractResolver):
    """An aiohttp resolver that knows one host and its pre-vetted addresses, and nothing else.

    The addresses were resolved through the scanner's resolver and filtered by the address policy
    before this object exists, so aiohttp never reaches ``getaddrinfo`` and cannot connect anywhere
    else (a request for any other name fails).
    """

    def __init__(self, host: str, addresses: Sequence[str]) -> None:
        self._host = host
        self._addresses = tuple(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.lower().rstrip(".") != self._host:
            raise OSError(f"resolver for {self._host} refuses to resolve {host!r}")
        results: list[ResolveResult] = []
        for address in self._addresses:
            addr_family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, addr_family):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=addr_family,
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            raise OSError(f"no allowed address of family {family!r} for {host}")
        return results

    async def close(self) -> None:
        return None


async def resolve_policy_host(host: str, resolver: DnsResolver, policy: AddressPolicy) -> tuple[str, ...] | StsFailure:
    """A and AAAA of the policy host through our resolver, minus addresses the policy refuses."""
    if policy.exclude.excludes_name(host):
        return StsFailure(StsError.ADDRESS_REFUSED, f"{host} is on the exclude list")
    answers: list[QueryResult] = list(await asyncio.gather(resolver.query(host, "A"), resolver.query(host, "AAAA")))
    found = [address for answer in answers for address in answer.addresses]
    excluded = policy.exclude.first_excluded(cname for answer in answers for cname in answer.cnames)
    if excluded is not None:  # the opt-out covers every name of the CNAME chain
        return StsFailure(StsError.ADDRESS_REFUSED, f"{host}: CNAME target {excluded} is on the exclude list")
    if not found:
        failures = [a for a in answers if a.outcome not in (DnsOutcome.ANSWER, DnsOutcome.NODATA)]
        detail = "; ".join(a.detail or a.outcome.value for a in failures) or "no A or AAAA record"
        return StsFailure(StsError.POLICY_HOST_DNS, f"{host}: {detail}")
    allowed: list[str] = []
    refused: list[str] = []
    for address in dict.fromkeys(found):
        reason = policy.refusal(ipaddress.ip_address(address))
        if reason is None:
            allowed.append(address)
        else:
            refused.append(f"{address} ({reason.value})")
    if not allowed:
        return StsFailure(StsError.ADDRESS_REFUSED, f"{host}: every address refused: {', '.join(refused)}")
    return tuple(allowed)



async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """Read at most ``max_bytes + 1`` bytes, whatever Content-Length claims."""
    buffer = bytearray()
    while len(buffer) <= max_bytes:
        chunk = await response.content.read(max_bytes + 1 - len(buffer))
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer)


class _SocketLog:
    """Socket factory for aiohttp that remembers every socket it makes, so they can all be closed.

    aiohttp closes a connection it gives up on (timeout, cancellation, ``Connection: close``) with a
    graceful TLS shutdown that runs in the background, tracked by nobody: against a slow or silent
    server the socket outlives the fetch (and, in a short-lived event loop, the loop). Shutting the
    sockets down makes every such transport see EOF and finish at once.
    """

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def __call__(self, addr_info: tuple[int, int, int, str, tuple[object, ...]]) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=kind, proto=proto)
        self.sockets.append(sock)
        return sock

    async def close_all(self, grace: float = 1.0) -> None:
        for sock in self.sockets:
            if sock.fileno() != -1:
                with contextlib.suppress(OSError):  # not connected (any more): nothing to shut down
                    sock.shutdown(socket.SHUT_RDWR)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Nothing signals a socket being closed, so poll (briefly: it takes one or two loop turns).
        while any(sock.fileno() != -1 for sock in self.sockets) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # the transports notice EOF and close their sockets


async def _http_get(
    url: str,
    host: str,
    addresses: Sequence[str],
    context: ssl.SSLContext,
    timeout: float,
    max_bytes: int,
    sockets: _SocketLog,
) -> PolicyResponse:
    connector = aiohttp.TCPConnector(
        resolver=_PinnedResolver(host, addresses),
        ssl=context,
        use_dns_cache=False,
        force_close=True,
        limit=1,
        socket_factory=sockets,
    )
    headers = {
        "User-Agent": f"smtp-tls-survey/{__version__} (MTA-STS policy check)",
        # Compressed bodies would make the byte cap apply to the wrong thing; ask for none.
        "Accept-Encoding": "identity",
    }
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    # trust_env=False (the default) keeps proxy variables out: the fetch goes straight to the host.
    async with (
        aiohttp.ClientSession(connector=connector, timeout=client_timeout, headers=headers) as session,
        session.get(url, allow_redirects=False) as response,
    ):
        content_type = response.headers.get("Content-Type")
        if response.status != 200:
            return PolicyResponse(response.status, content_type, response.headers.get("Location"), None)
        return PolicyResponse(200, content_type, None, await _read_capped(response, max_bytes))


async def _http_exchange(
    url: str, host: str, addresses: Sequence[str], context: ssl.SSLContext, timeout: float, max_bytes: int
) -> PolicyResponse | StsFailure:
    """One GET under a total deadline, every client failure mapped to its StsError."""
    sockets = _SocketLog()
    try:
        async with asyncio.timeout(timeout):
            return await _http_get(url, host, addresses, context, timeout, max_bytes, sockets)
    except TimeoutError:
        return StsFailure(StsError.FETCH_TIMEOUT, f"no complete response within {timeout:g}s")
    except aiohttp.ClientSSLError as exc:
        return _tls_failure(exc)
    except aiohttp.ClientConnectorError as exc:
        return StsFailure(StsError.FETCH_CONNECT, f"{exc.host}:{exc.port}: {exc.os_error}")
    except aiohttp.ClientError as exc:  # malformed response, disconnect mid-body, ...
        return StsFailure(StsError.HTTP_ERROR, f"{type(exc).__name__}: {exc}")
    finally:
        await sockets.close_all()



async def fetch_document(
    host: str,
    addresses: Sequence[str],
    *,
    trust: ssl.SSLContext,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
    max_bytes: int = MAX_POLICY_BYTES,
    slot: ConnectionSlot | None = None,
) -> PolicyDocument:
    """GET ``https://<host>/.well-known/mta-sts.txt`` from the vetted ``addresses`` (RFC 8461 §3.3).

    The certificate must validate for ``host`` against ``trust`` (see :func:`policy_ssl_context`);
    redirects are not followed; at most ``max_bytes + 1`` body bytes are read; ``timeout`` bounds the
    HTTP exchange (connect, TLS, headers and body) summed over the addresses tried. Every failure to
    get an HTTP answer is a typed :class:`StsFailure` in the document.
    """
    started = time.perf_counter()
    url = f"https://{host}{POLICY_PATH}"

    async def exchange(address: str, remaining: float) -> PolicyResponse | StsFailure:
        return await _http_exchange(url, host, (address,), trust, remaining, max_bytes)

    response, tried = await _exchange_per_address(host, addresses, exchange, timeout, slot)
    return PolicyDocument(
        url=url, max_bytes=max_bytes,
        response=None if isinstance(response, StsFailure) else response,
        failure=response if isinstance(response, StsFailure) else None,
        addresses=tried, elapsed_ms=(time.perf_counter() - started) * 1000,
    )


@dataclass(frozen=True, slots=True)
class StsFetch:
    """How policy documents are fetched: the resolver for the policy host (never the system resolver),
    which addresses may be contacted, the trust anchors (a context, a PEM CA file, or None for certifi's
    roots: :func:`policy_ssl_context`), the limits, and the injected connection slot."""

    resolver: DnsResolver
    policy: AddressPolicy
    trust: ssl.SSLContext | str | os.PathLike[str] | None = None
    timeout: float = DEFAULT_FETCH_TIMEOUT
    max_bytes: int = MAX_POLICY_BYTES
    slot: ConnectionSlot | None = None


async def fetch_policy_document(domain: str, fetch: StsFetch) -> PolicyDocument:
    """Resolve ``mta-sts.<domain>``, keep the addresses the address policy allows, and fetch the policy
    document from them (:func:`fetch_document`)."""
    started = time.perf_counter()
    host = policy_host(domain)
    addresses = await resolve_policy_host(host, fetch.resolver, fetch.policy)
    if isinstance(addresses, StsFailure):
        return PolicyDocument(url=f"https://{host}{POLICY_PATH}", max_bytes=fetch.max_bytes, response=None,
                              failure=addresses, elapsed_ms=(time.perf_counter() - started) * 1000)
    document = await fetch_document(host, addresses, trust=policy_ssl_context(fetch.trust), timeout=fetch.timeout,
                                    max_bytes=fetch.max_bytes, slot=fetch.slot)
    return dataclasses.replace(document, elapsed_ms=(time.perf_counter() - started) * 1000)


async def fetch_policy(domain: str, fetch: StsFetch) -> FetchResult:
    """Fetch ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` and read it (RFC 8461 §3.3): the
    fetch of :func:`fetch_policy_document`, read by :func:`~scanner.policy.mta_sts.read_document`."""
    return read_document(await fetch_policy_document(domain, fetch))


def fetch_order(addresses: Sequence[str]) -> tuple[str, ...]:
    """The first ``MAX_FETCH_ADDRESSES`` addresses, alternating IPv6 and IPv4 (RFC 8305 §4), IPv6 first."""
    v6 = [a for a in addresses if ":" in a]
    v4 = [a for a in addresses if ":" not in a]
    mixed = [a for pair in itertools.zip_longest(v6, v4) for a in pair if a is not None]
    return tuple(mixed[:MAX_FETCH_ADDRESSES])


async def _exchange_per_address(
    host: str,
    addresses: Sequence[str],
    exchange: Callable[[str, float], Awaitable[PolicyResponse | StsFailure]],
    timeout: float,
    slot: ConnectionSlot | None,
) -> tuple[PolicyResponse | StsFailure, tuple[str, ...]]:
    """Try the policy host's addresses one at a time until one answers; return what came back and the tried.

    Each address gets one connection, under its own politeness slot (per-address concurrency and
    interval, global connection cap: a hosting provider's policy server sees one fetch at a time from
    us). ``timeout`` bounds the HTTP time of the whole fetch, summed over the addresses; waiting for a
    slot does not count. Only a failure to connect moves on to the next address: anything the server
    said (a TLS alert, an HTTP status, a timeout mid-exchange) is its answer.
    """
    tried: list[str] = []
    remaining = timeout
    response: PolicyResponse | StsFailure = StsFailure(StsError.FETCH_CONNECT, f"{host}: no address to try")
    for address in fetch_order(addresses):
        async with slot(address) if slot else contextlib.nullcontext():
            tried.append(address)
            began = time.monotonic()
            response = await exchange(address, remaining)
            remaining -= time.monotonic() - began
        if not (isinstance(response, StsFailure) and response.error is StsError.FETCH_CONNECT) or remaining <= 0:
            break
    return response, tuple(tried)

