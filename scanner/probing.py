"""Probe scheduling: one probe per unique (address, port) per scan, under politeness limits.

Domains ask for an address with ``ProbeService.request``; the first request creates the probe and
queues it, later ones (other domains hosted at the same provider) share its future. Workers take
queued probes, wait for a global connection slot and the address's own slot (concurrency and
minimum interval), run the SMTP/TLS dialogue, judge the certificate chain, hand the full row to the
writer and resolve the future with a compact ``ProbeSummary`` (the only thing domains need).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from scanner.certs import CertificateInfo, ChainVerdict, TrustStatus, TrustStore, check_chain
from scanner.config import ScanConfig
from scanner.consistency import Answer
from scanner.errors import describe_bug
from scanner.net.addresses import AddressPolicy
from scanner.net.families import Reachability
from scanner.net.limits import KeyedLimiter
from scanner.output.rows import ProbeRow, SessionRow
from scanner.probe_cache import SummaryCache
from scanner.smtp.session import SmtpProbeResult, make_probe_context, probe_smtp, skipped_result
from scanner.sni import AddressCheck, SessionOutcome, SniState, check_address, decide_name, name_source, note_name
from scanner.status import CertSource, FailureClass, Phase, ProbeStatus, SessionFact, SessionKind
from scanner.tls.ciphers import WeakClass, suite_by_name
from scanner.tls.ciphers import suite as lookup_suite
from scanner.tls.codec import TlsVersion
from scanner.tls.enumeration import (
    VERSION_NAMES,
    AnswerKind,
    EnumerationResult,
    EnumMode,
    HelloAnswer,
    HelloRequest,
    KeyExchangeResult,
    VersionVerdict,
    full_plan,
    posture_plan,
    reconcile_plan,
    version_hello,
)
from scanner.tls.groups import group_code, group_name
from scanner.tls.probe import drive_plan, probe_hello

__all__ = [
    "ProbeService",
    "ProbeSummary",
    "build_probe_row",
    "enumeration_mode",
    "prefix_of",
    "probe_id",
    "probe_summary_from_row",
    "session_summary",
]

_log = logging.getLogger(__name__)


def probe_id(address: str, port: int) -> str:
    return f"{address}|{port}"


def prefix_of(address: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) an address belongs to: the unit of the per-network politeness cap."""
    ip = ipaddress.ip_address(address)
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False))


def enumeration_mode(configured: str, full_sample: float, address: str) -> str:
    """Posture for most addresses, full for a stable sample of them (``full_sample`` of the addresses)."""
    if configured != "posture" or full_sample <= 0:
        return configured
    digest = hashlib.sha256(address.encode("ascii")).digest()
    return "full" if int.from_bytes(digest[:8], "big") < full_sample * 2**64 else "posture"


# MX host names remembered per address while its probe runs (the first is the SNI; all go in the probe
# row). A provider's address can be the MX of thousands of vanity host names: keep the row readable.
_MAX_NAMES = 32

# Outcomes that mean "not now" rather than an answer: retried after a back-off.
_RETRYABLE = frozenset({ProbeStatus.THROTTLED, ProbeStatus.TIMEOUT})


@dataclass(frozen=True, slots=True)
class ProbeSummary:
    """What a domain's verdicts need from a probe (the full row has already gone to the writer).

    Kept for every distinct address of the scan, so it holds only what grading and DANE read.
    """

    probe_id: str
    status: ProbeStatus
    leaf: CertificateInfo | None
    chain: tuple[bytes, ...]  # DER as presented, for DANE matching
    cert_trust: TrustStatus | None
    cert_expired: bool | None
    cert_self_signed: bool | None
    plaintext_after_starttls: bool
    enumeration: EnumerationResult | None
    sni: str | None = None  # server name the certificate fields were obtained with
    no_sni_sha256: str | None = None  # leaf presented without SNI (scanner.sni)
    sni_selects: bool | None = None
    inconsistent: tuple[str, ...] = ()  # SessionFact values two sessions disagreed on (worst answer kept)
    # For a link's view of the address (ProbeService.link): which certificate the fields hold.
    cert_source: CertSource | None = None

    @property
    def chain_trusted_and_current(self) -> bool:
        """Trusted and within its validity period (the certificate part of RFC 8461 §5 compliance)."""
        return self.cert_trust is TrustStatus.TRUSTED and not self.cert_expired


@dataclass(slots=True)
class _Pending:
    address: str
    port: int
    names: list[str]  # MX host names asking for this address, in request order (first = SNI)
    future: asyncio.Future[ProbeSummary]


class ProbeService:
    """Owns the probe queue, the per-address cache and the limits. One per scan."""

    def __init__(
        self,
        config: ScanConfig,
        policy: AddressPolicy,
        trust: TrustStore,
        emit_rows: Callable[[Sequence[ProbeRow | SessionRow]], Awaitable[None]],
        scan_id: str,
        attempt: int,
        done: SummaryCache,
        families: Reachability | None = None,
    ) -> None:
        self._config = config
        self._families = families if families is not None else Reachability(True, True, "not checked")
        self._policy = policy
        self._trust = trust
        self._emit_rows = emit_rows
        self._scan_id = scan_id
        self._attempt = attempt
        self._context: ssl.SSLContext = make_probe_context()
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=config.probe.workers * 4)
        self._pending: dict[str, _Pending] = {}  # queued or running
        self._done = done  # finished summaries, bounded memory (scanner.probe_cache)
        self._requested = 0
        self._connections = asyncio.Semaphore(config.probe.max_connections)
        self._per_address = KeyedLimiter(config.probe.per_ip_concurrency, config.probe.per_ip_interval)
        # Many MX addresses of one provider often share a /24 (a /48 in IPv6): a cap per prefix keeps the
        # scan polite to the network as a whole, not only to each address.
        self._per_prefix = KeyedLimiter(config.probe.per_prefix_concurrency, 0.0)
        self._sni_states: dict[str, SniState] = {}  # per address with further names (small entries)
        self._links: dict[str, asyncio.Future[ProbeSummary]] = {}  # SNI sessions running, by link key
        self._views = 0  # entries of self._done that are further names' views, not probes
        self.sni_sessions = 0  # handshake-only sessions for further names
        self.address_sessions = 0  # no-SNI sessions and re-asks
        self.retries = 0
        self.in_flight = 0
        self.connections_open = 0  # connections holding a global slot now (probes, hello sessions, policy fetches)
        self.completed = 0

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def queue_capacity(self) -> int:
        return self._queue.maxsize

    @property
    def requested(self) -> int:
        """Distinct probes of the scan: running, queued, finished, and reused from an earlier attempt."""
        return len(self._done) - self._views + len(self._pending)

    def seed(self, summaries: Iterable[tuple[str, ProbeSummary]]) -> None:
        """Results of probes (and of SNI sessions, keyed by ``link_key``) committed by an earlier attempt
        of this scan: reused, never repeated. A stream (``scanner.resume.CommittedProbes``), put one by one
        into the bounded cache."""
        for key, summary in summaries:
            self._done.put(key, summary)
            if summary.cert_source is CertSource.OWN_SNI or summary.cert_source is CertSource.SESSION_FAILED:
                self._views += 1
                address_key = key.rsplit("|sni=", 1)[0]
                base = self._done.get(address_key)
                if base is not None:
                    self._sni_state(address_key, base).extra += 1

    async def link(self, address: str, host: str, summary: ProbeSummary) -> ProbeSummary:
        """The address as seen by a sender that sends SNI = ``host``: the probe's summary with the
        certificate fields of the certificate presented for that name (scanner.sni)."""
        if not self._config.probe.sni_checks or summary.status is not ProbeStatus.STARTTLS_OK \
                or summary.sni is None or host == summary.sni:
            return summary
        key = link_key(summary.probe_id, host)
        running = self._links.get(key)
        if running is not None:
            return await running
        done = self._done.get(key)
        if done is not None:
            return done
        future: asyncio.Future[ProbeSummary] = asyncio.get_running_loop().create_future()
        self._links[key] = future
        try:
            result = await self._link(address, host, summary)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:  # a bug: every domain waiting on this link records it (internal_error)
            future.set_exception(exc)
            future.exception()  # marked retrieved: the domains that await it re-raise it themselves
            raise
        finally:
            del self._links[key]
        self._done.put(key, result)
        self._views += 1
        future.set_result(result)
        return result

    def _sni_state(self, key: str, summary: ProbeSummary) -> SniState:
        state = self._sni_states.get(key)
        if state is None:
            sha = summary.leaf.sha256 if summary.leaf else None
            state = SniState(summary.sni, sha, summary.no_sni_sha256, summary.sni_selects)
            self._sni_states[key] = state
        return state

    async def _link(self, address: str, host: str, summary: ProbeSummary) -> ProbeSummary:
        probe = self._config.probe
        state = self._sni_state(summary.probe_id, summary)
        if summary.inconsistent:
            state.ignores = False  # answers that disagree say nothing about SNI: ask
        verdict = _summary_verdict(summary)
        decision = decide_name(state, host, verdict, probe.sni_sessions_per_address)
        if not decision.ask:
            return dataclasses.replace(summary, cert_source=decision.source)
        outcome = await self._session(address, probe.port, SessionKind.SNI, host)
        self.sni_sessions += 1
        note_name(state, outcome, probe.sni_same_run)
        sha = summary.leaf.sha256 if summary.leaf else None
        new = _link_contradictions(summary, outcome)
        await self._record_session(outcome, sha, new)
        return session_summary(summary, outcome, new)

    async def request(self, address: str, mx_host: str) -> asyncio.Future[ProbeSummary]:
        """The probe of ``address`` on the configured port, shared by every caller."""
        port = self._config.probe.port
        key = probe_id(address, port)
        pending = self._pending.get(key)
        if pending is not None:
            if mx_host not in pending.names and len(pending.names) < _MAX_NAMES:
                pending.names.append(mx_host)
            return pending.future
        future: asyncio.Future[ProbeSummary] = asyncio.get_running_loop().create_future()
        summary = self._done.get(key)
        if summary is not None:
            future.set_result(summary)
            return future
        pending = _Pending(address, port, [mx_host], future)
        self._pending[key] = pending
        self._requested += 1
        await self._queue.put(pending)
        return future

    def _finish(self, key: str, pending: _Pending, summary: ProbeSummary) -> None:
        self._done.put(key, summary)
        del self._pending[key]
        pending.future.set_result(summary)

    @asynccontextmanager
    async def connection_slot(self, address: str) -> AsyncIterator[None]:
        """The politeness limits for one connection to ``address`` (probes, hello sessions, policy fetches).

        The address's own slot comes first: waiting out its interval must not hold a global slot.
        """
        async with self._per_address.slot(address), self._per_prefix.slot(prefix_of(address)), self._connections:
            self.connections_open += 1
            try:
                yield
            finally:
                self.connections_open -= 1

    async def worker(self) -> None:
        while (pending := await self._queue.get()) is not None:
            try:
                summary = await self._run(pending)
            except asyncio.CancelledError:
                pending.future.cancel()
                raise
            except Exception as exc:  # a bug in our code: recorded as such, never lost
                try:
                    summary = await self._record(pending, _bug_result(exc), None, datetime.now(UTC))
                except Exception as again:
                    # Even the row could not be built: the waiting domains record the bug themselves.
                    pending.future.set_exception(again)
                    continue
            self._finish(probe_id(pending.address, pending.port), pending, summary)

    async def stop_workers(self, count: int) -> None:
        for _ in range(count):
            await self._queue.put(None)

    async def _run(self, pending: _Pending) -> ProbeSummary:
        started_at = datetime.now(UTC)
        ip = ipaddress.ip_address(pending.address)
        refusal = self._policy.refusal(ip)
        if refusal is not None:
            return await self._record(pending, skipped_result(refusal), None, started_at)
        if not self._families.covers(pending.address):  # no route for its family: nothing to learn
            return await self._record(pending, skipped_result(FailureClass.FAMILY_UNREACHABLE), None, started_at)
        sni = pending.names[0]
        delays = self._config.probe.throttle_retry_delays
        loop = asyncio.get_running_loop()
        deadline = 0.0  # event-loop time; the probe's deadline counts from its last attempt's start
        for attempt in range(len(delays) + 1):
            async with self.connection_slot(pending.address):
                started_at = datetime.now(UTC)
                deadline = loop.time() + self._config.probe.probe_deadline
                self.in_flight += 1
                try:
                    result = await probe_smtp(pending.address, pending.port, sni, self._config.probe, self._context)
                finally:
                    self.in_flight -= 1
            if result.status not in _RETRYABLE or attempt == len(delays):
                if result.status in _RETRYABLE:
                    _log.warning("%s (%s) still %s after %d attempts: recorded as such", pending.address, sni,
                                 result.status.value, attempt + 1)
                break
            _log.info("%s (%s) %s: retrying in %g s", pending.address, sni, result.status.value, delays[attempt])
            # 421, a greeting that never came, a drop before STARTTLS: the MTA asks us to slow down.
            # Wait (holding no connection slot) and try again, within a bounded budget; if it never gets
            # through, the row says so ("throttled"/"timeout"), never "no STARTTLS".
            self.retries += 1
            await asyncio.sleep(delays[attempt])
        verdict = check_chain(result.tls.chain, self._trust, started_at) if result.tls else None
        session_rows: list[SessionRow] = []
        check = await self._check_address(pending, sni, result, verdict, session_rows)
        enumeration = await self._enumerate(pending, sni, result, deadline, check)
        if check is not None and enumeration is not None:
            enumeration = await self._recheck_version(pending, sni, result, enumeration, check, deadline)
        if enumeration is not None:
            enumeration = await self._reconcile(pending, sni, result, enumeration, deadline)
        return await self._record(pending, result, verdict, started_at, enumeration, attempts=attempt + 1,
                                  check=check, session_rows=session_rows)

    async def _check_address(self, pending: _Pending, sni: str, result: SmtpProbeResult,
                             verdict: ChainVerdict | None, rows: list[SessionRow]) -> AddressCheck | None:
        """The no-SNI certificate, SNI selection and consistency of the address (scanner.sni).

        Its sessions' rows are collected in ``rows`` and written with the probe row, in one batch: a
        resumed scan that repeats the probe must not find them already committed.
        """
        probe = self._config.probe
        if not probe.sni_checks or result.status not in (ProbeStatus.STARTTLS_OK, ProbeStatus.NO_STARTTLS):
            return None
        leaf = verdict.leaf if verdict else None
        check = AddressCheck(sni, Answer(sni, result.starttls_advertised, leaf.sha256 if leaf else None), verdict)

        async def run(kind: SessionKind, name: str | None) -> SessionOutcome:
            return await self._session(pending.address, pending.port, kind, name)

        async def record(outcome: SessionOutcome, new: frozenset[SessionFact]) -> None:
            self.address_sessions += 1
            rows.append(build_session_row(self._scan_id, self._attempt, pending.port, outcome,
                                          check.probe.cert_sha256, new))

        await check_address(check, run, record, probe.recheck_limit)
        return check

    async def _session(self, address: str, port: int, kind: SessionKind, sni: str | None) -> SessionOutcome:
        """One handshake-only STARTTLS session, under the same limits as every connection."""
        async with self.connection_slot(address):
            started_at = datetime.now(UTC)
            self.in_flight += 1
            try:
                result = await probe_smtp(address, port, sni, self._config.probe, self._context)
            finally:
                self.in_flight -= 1
        verdict = check_chain(result.tls.chain, self._trust, started_at) if result.tls else None
        return SessionOutcome(address, kind, sni, result, verdict, started_at)

    async def _record_session(self, outcome: SessionOutcome, probe_sha256: str | None,
                              new: frozenset[SessionFact]) -> None:
        row = build_session_row(self._scan_id, self._attempt, self._config.probe.port, outcome, probe_sha256, new)
        await self._emit_rows([row])

    async def _recheck_version(self, pending: _Pending, sni: str, result: SmtpProbeResult,
                               enumeration: EnumerationResult, check: AddressCheck,
                               deadline: float) -> EnumerationResult:
        """The observation handshake negotiated a version the enumeration saw refused: ask the version's
        hello again. An acceptance now means two sessions disagreed: the address is recorded inconsistent
        on the version (rule inconsistent_answers) and the version counts as accepted, as every version a
        session negotiated does (never a published contradiction, issue "answers that agree"). A refusal
        again leaves the contradiction to ``_reconcile``, which asks in the other hello shape."""
        version = _negotiated(result)
        verdict_ = enumeration.versions.get(version) if version is not None else None
        if version is None or verdict_ is None or verdict_.supported is not False:
            return enumeration
        offer = version_hello(version)
        unopened = [0]
        session = self._hello_session(pending, sni, deadline, None, unopened)
        for _ in range(self._config.probe.recheck_limit):
            answer = await session(offer)
            if unopened[0]:
                break  # past the probe's deadline: nothing more is asked
            check.rechecks += 1
            if answer.kind is AnswerKind.ACCEPTED and answer.version == version:
                check.facts.add(SessionFact.VERSION)
                versions = {**enumeration.versions, version: VersionVerdict.ACCEPTED}
                return dataclasses.replace(enumeration, versions=versions)
        return enumeration

    async def _enumerate(self, pending: _Pending, sni: str, result: SmtpProbeResult, deadline: float,
                         check: AddressCheck | None = None) -> EnumerationResult | None:
        """Versions and suites, when the server accepted STARTTLS (even if our own handshake failed:
        a server that only speaks SSLv3 fails Python's handshake and is exactly what we must find).

        ``--probe-deadline`` bounds the probe as a whole: its STARTTLS session and these sessions
        together, from the start of that session (``deadline``, event-loop time). Past it, every
        question left is answered "untestable" without a connection, so the plan ends at once and the
        row says ``enum_complete`` false: a slow server costs at most the deadline, never 7-12 (posture)
        or hundreds (full) of its slow sessions.
        """
        mode = enumeration_mode(self._config.probe.enumeration, self._config.probe.full_sample, pending.address)
        if mode == "off" or result.status not in (ProbeStatus.STARTTLS_OK, ProbeStatus.TLS_HANDSHAKE_FAILED):
            return None
        unopened = [0]
        plan = full_plan() if mode == "full" else posture_plan()
        found = await drive_plan(plan, self._hello_session(pending, sni, deadline, check, unopened),
                                 _sleep_until(deadline))
        return dataclasses.replace(found, sessions=found.sessions - unopened[0])

    def _hello_session(self, pending: _Pending, sni: str, deadline: float, check: AddressCheck | None = None,
                       unopened: list[int] | None = None) -> Callable[[HelloRequest], Awaitable[HelloAnswer]]:
        """One crafted-hello session per request, under the address's limits and the probe's deadline.

        Past ``deadline`` (event-loop time) a request is answered "untestable" without a connection and
        counted in ``unopened`` (not a session the server saw). A session that finds STARTTLS missing
        after the probe saw it advertised is a contradiction between sessions (``check``).
        """
        loop = asyncio.get_running_loop()
        late = HelloAnswer(AnswerKind.UNTESTABLE,
                           detail=f"probe deadline ({self._config.probe.probe_deadline:g}s) reached")

        async def session(request: HelloRequest) -> HelloAnswer:
            # One unit of work = one connection, under the same per-address and global limits.
            if loop.time() >= deadline:
                if unopened is not None:
                    unopened[0] += 1
                return late
            try:
                async with asyncio.timeout_at(deadline), self.connection_slot(pending.address):
                    self.in_flight += 1
                    try:
                        answer = await probe_hello(pending.address, pending.port, sni, self._config.probe, request)
                    finally:
                        self.in_flight -= 1
            except TimeoutError:  # probe_hello never raises one itself: this is our deadline
                return late
            if check is not None and answer.detail.startswith(f"{ProbeStatus.NO_STARTTLS.value}:"):
                check.facts.add(SessionFact.STARTTLS)  # advertised to the probe, missing now
            return answer

        return session

    async def _reconcile(self, pending: _Pending, sni: str, result: SmtpProbeResult,
                         enumeration: EnumerationResult, deadline: float) -> EnumerationResult:
        """Re-ask what the observation handshake contradicts, so the row never publishes a contradiction."""
        if result.tls is None:
            return enumeration
        known = suite_by_name(result.tls.cipher)
        plan = reconcile_plan(enumeration, OBSERVED_VERSIONS.get(result.tls.version), known.code if known else None)
        unopened = [0]
        reconciled = await drive_plan(plan, self._hello_session(pending, sni, deadline, None, unopened),
                                      _sleep_until(deadline))
        return dataclasses.replace(reconciled,
                                   sessions=enumeration.sessions + reconciled.sessions - unopened[0])

    async def _record(
        self,
        pending: _Pending,
        result: SmtpProbeResult,
        verdict: ChainVerdict | None,
        started_at: datetime,
        enumeration: EnumerationResult | None = None,
        attempts: int = 1,
        check: AddressCheck | None = None,
        session_rows: Sequence[SessionRow] = (),
    ) -> ProbeSummary:
        row = build_probe_row(self._scan_id, self._attempt, pending.address, pending.port, tuple(pending.names),
                              result, verdict, started_at, enumeration, attempts, check)
        await self._emit_rows([row, *session_rows])
        self.completed += 1
        chain = result.tls.chain if result.tls else ()
        if check is not None and check.facts:  # judged on the worst certificate received for the SNI
            worst = check.worst_probe_verdict()
            if worst is not None and worst.leaf is not None:
                verdict, chain = worst, check.chains.get(worst.leaf.sha256, chain)
        return ProbeSummary(
            probe_id=row.probe_id,
            status=result.status,
            leaf=verdict.leaf if verdict else None,
            chain=chain,
            cert_trust=verdict.trust if verdict else None,
            cert_expired=(verdict.expired or verdict.not_yet_valid) if verdict else None,
            cert_self_signed=verdict.self_signed if verdict else None,
            plaintext_after_starttls=result.plaintext_after_starttls,
            enumeration=enumeration,
            sni=row.sni,
            no_sni_sha256=row.cert_no_sni_sha256,
            sni_selects=row.sni_selects_certificate,
            inconsistent=tuple(row.inconsistent_facts),
            cert_source=CertSource.PROBE if self._config.probe.sni_checks and verdict is not None else None,
        )


# Python's ssl names versions the OpenSSL way ("TLSv1" is TLS 1.0).
OBSERVED_VERSIONS: Mapping[str, TlsVersion] = MappingProxyType({
    "SSLv3": TlsVersion.SSL3, "TLSv1": TlsVersion.TLS10, "TLSv1.1": TlsVersion.TLS11, "TLSv1.2": TlsVersion.TLS12,
    "TLSv1.3": TlsVersion.TLS13,
})


def _bug_result(exc: Exception) -> SmtpProbeResult:
    return skipped_result(FailureClass.INTERNAL, describe_bug(exc))


def build_probe_row(
    scan_id: str,
    attempt: int,
    address: str,
    port: int,
    names: tuple[str, ...],
    result: SmtpProbeResult,
    verdict: ChainVerdict | None,
    started_at: datetime,
    enumeration: EnumerationResult | None = None,
    attempts: int = 1,
    check: AddressCheck | None = None,
) -> ProbeRow:
    leaf = verdict.leaf if verdict else None
    enum = enumeration
    tls = result.tls
    timing = result.timings_ms.get
    return ProbeRow(
        scan_id=scan_id,
        attempt=attempt,
        probe_id=probe_id(address, port),
        address=address,
        ip_version=ipaddress.ip_address(address).version,
        port=port,
        mx_hosts=list(names),
        sni=names[0] if names and result.phase is not Phase.ADDRESS else None,
        status=result.status,
        failure_phase=result.phase if result.failure_class else None,
        failure_class=result.failure_class,
        failure_detail=result.detail,
        banner_code=result.banner_code,
        banner=result.banner,
        ehlo_code=result.ehlo_code,
        ehlo_greeting=result.ehlo_greeting,
        ehlo_extensions=list(result.ehlo_extensions),
        used_helo=result.used_helo,
        starttls_advertised=result.starttls_advertised,
        starttls_code=result.starttls_code,
        starttls_text=result.starttls_text,
        plaintext_after_starttls=result.plaintext_after_starttls,
        tls_ok=result.status is ProbeStatus.STARTTLS_OK,
        tls_version=tls.version if tls else None,
        tls_cipher=tls.cipher if tls else None,
        tls_cipher_bits=tls.cipher_bits if tls else None,
        cert_chain=list(tls.chain) if tls else [],
        cert_chain_complete=tls.chain_complete if tls else None,
        cert_trust=verdict.trust.value if verdict else None,
        cert_trust_detail=verdict.trust_detail if verdict else None,
        cert_expired=verdict.expired if verdict else None,
        cert_not_yet_valid=verdict.not_yet_valid if verdict else None,
        cert_self_signed=verdict.self_signed if verdict else None,
        cert_days_to_expiry=verdict.days_to_expiry if verdict else None,
        cert_subject_cn=leaf.subject_cn if leaf else None,
        cert_san_dns=list(leaf.san_dns) if leaf else [],
        cert_issuer=leaf.issuer if leaf else None,
        cert_issuer_cn=leaf.issuer_cn if leaf else None,
        cert_serial=leaf.serial if leaf else None,
        cert_not_before=leaf.not_before if leaf else None,
        cert_not_after=leaf.not_after if leaf else None,
        cert_key_type=leaf.key_type.value if leaf else None,
        cert_key_bits=leaf.key_bits if leaf else None,
        cert_signature_algorithm=leaf.signature_algorithm if leaf else None,
        cert_sha256=leaf.sha256 if leaf else None,
        enum_mode=enum.mode.value if enum else None,
        enum_sessions=enum.sessions if enum else None,
        enum_complete=enum.complete if enum else None,
        hello_quirks=list(enum.quirks) if enum else None,
        ver_ssl3=_version(enum, TlsVersion.SSL3),
        ver_tls1_0=_version(enum, TlsVersion.TLS10),
        ver_tls1_1=_version(enum, TlsVersion.TLS11),
        ver_tls1_2=_version(enum, TlsVersion.TLS12),
        ver_tls1_3=_version(enum, TlsVersion.TLS13),
        versions_accepted=[VERSION_NAMES[v] for v, verdict_ in enum.versions.items()
                           if verdict_ is VersionVerdict.ACCEPTED] if enum else None,
        weak_classes=sorted(c.value for c in enum.weak_classes) if enum else None,
        weak_complete=enum.weak_complete if enum else None,
        nist_r1=enum.nist_r1 if enum else None,
        nist_r2=enum.nist_r2 if enum else None,
        preferred_suite=suite_name(enum.preferred_suite) if enum and enum.preferred_suite is not None else None,
        preferred_version=VERSION_NAMES[enum.preferred_version] if enum and enum.preferred_version else None,
        server_order=enum.server_order if enum else None,
        suites_ssl3=_suites(enum, TlsVersion.SSL3),
        suites_tls1_0=_suites(enum, TlsVersion.TLS10),
        suites_tls1_1=_suites(enum, TlsVersion.TLS11),
        suites_tls1_2=_suites(enum, TlsVersion.TLS12),
        suites_tls1_3=_suites(enum, TlsVersion.TLS13),
        server_order_suites=[suite_name(c) for c in enum.server_order_suites]
        if enum and enum.mode.value == "full" and enum.server_order else None,
        **_kx_columns(enum.kx if enum else None),
        connect_ms=timing(Phase.CONNECT),
        banner_ms=timing(Phase.BANNER),
        ehlo_ms=_sum_present(timing(Phase.EHLO), timing(Phase.HELO)),
        starttls_ms=timing(Phase.STARTTLS),
        tls_ms=timing(Phase.TLS_HANDSHAKE),
        total_ms=result.total_ms,
        attempts=attempts,
        cert_no_sni_sha256=check.no_sni_sha256 if check else None,
        sni_selects_certificate=check.selects if check else None,
        inconsistent_facts=sorted(f.value for f in check.facts) if check else [],
        consistency_sessions=check.rechecks if check else 0,
        started_at=started_at,
    )


# Probe-row columns per protocol version: (verdict column, full-mode suites column), read back by
# probe_summary_from_row; a round-trip test keeps it in step with build_probe_row.
VERSION_COLUMNS: dict[TlsVersion, tuple[str, str]] = {
    TlsVersion.SSL3: ("ver_ssl3", "suites_ssl3"),
    TlsVersion.TLS10: ("ver_tls1_0", "suites_tls1_0"),
    TlsVersion.TLS11: ("ver_tls1_1", "suites_tls1_1"),
    TlsVersion.TLS12: ("ver_tls1_2", "suites_tls1_2"),
    TlsVersion.TLS13: ("ver_tls1_3", "suites_tls1_3"),
}


def _kx_columns(kx: KeyExchangeResult | None) -> dict[str, Any]:
    """The key-exchange and hygiene columns (read back by ``_kx_from_row``); all null without enumeration."""
    known = kx or KeyExchangeResult()
    return {column: getattr(known, attribute) for attribute, column in _KX_FLAGS.items()} | {
        "kx_groups": [group_name(g) for g in known.groups] if kx else None,
        "kx_groups_complete": known.groups_complete,
        "kx_preferred_group": group_name(known.preferred_group) if known.preferred_group is not None else None,
        "dh_bits": known.dh_bits, "dh_group": known.dh_group,
    }


# KeyExchangeResult flag -> probe-row column.
_KX_FLAGS: dict[str, str] = {
    "dhe": "dhe_accepted", "secure_renegotiation": "secure_renegotiation", "compression": "tls_compression",
    "extended_master_secret": "extended_master_secret", "encrypt_then_mac": "encrypt_then_mac",
    "heartbeat": "heartbeat", "ocsp_stapling": "ocsp_stapling", "fallback_scsv": "fallback_scsv",
}


def _kx_from_row(row: Mapping[str, Any]) -> KeyExchangeResult:
    preferred = row.get("kx_preferred_group")
    return KeyExchangeResult(
        groups=tuple(group_code(n) for n in row.get("kx_groups") or ()),
        groups_complete=row.get("kx_groups_complete"),
        preferred_group=group_code(preferred) if preferred else None,
        dh_bits=row.get("dh_bits"), dh_group=row.get("dh_group"),
        **{attribute: row.get(column) for attribute, column in _KX_FLAGS.items()},
    )


def suite_code(name: str) -> int:
    """Inverse of ``suite_name``."""
    known = suite_by_name(name)
    if known is not None:
        return known.code
    return int(name, 16)


def _enumeration_from_row(row: Mapping[str, Any]) -> EnumerationResult | None:
    if row["enum_mode"] is None:
        return None
    versions = {v: VersionVerdict(row[col]) for v, (col, _) in VERSION_COLUMNS.items() if row[col] is not None}
    accepted = {v: tuple(suite_code(n) for n in row[col]) for v, (_, col) in VERSION_COLUMNS.items()
                if row[col] is not None and versions.get(v) is VersionVerdict.ACCEPTED}
    preferred_version = next((v for v in versions if VERSION_NAMES[v] == row["preferred_version"]), None)
    return EnumerationResult(
        mode=EnumMode(row["enum_mode"]), sessions=row["enum_sessions"] or 0, versions=versions,
        weak_classes=frozenset(WeakClass(w) for w in row["weak_classes"] or ()),
        weak_complete=bool(row["weak_complete"]), nist_r1=row["nist_r1"], nist_r2=row["nist_r2"],
        preferred_suite=suite_code(row["preferred_suite"]) if row["preferred_suite"] else None,
        preferred_version=preferred_version, server_order=row["server_order"], accepted=accepted,
        server_order_suites=tuple(suite_code(n) for n in row["server_order_suites"] or ()),
        complete=bool(row["enum_complete"]), quirks=tuple(row["hello_quirks"] or ()), kx=_kx_from_row(row),
    )


def probe_summary_from_row(row: Mapping[str, Any], trust: TrustStore, sni_checks: bool = True) -> ProbeSummary:
    """Rebuild the summary of a committed probe row (to resume a scan without probing again).

    Trust, expiry and flags are taken from the row as they were judged at probe time; the chain is
    parsed again only for the leaf's names and key, which grading and name matching read.
    """
    chain = tuple(row["cert_chain"] or ())
    leaf = check_chain(chain, trust, row["started_at"]).leaf if chain else None
    expired = row["cert_expired"]
    return ProbeSummary(
        probe_id=row["probe_id"], status=ProbeStatus(row["status"]), leaf=leaf, chain=chain,
        cert_trust=TrustStatus(row["cert_trust"]) if row["cert_trust"] else None,
        cert_expired=(expired or bool(row["cert_not_yet_valid"])) if expired is not None else None,
        cert_self_signed=row["cert_self_signed"], plaintext_after_starttls=row["plaintext_after_starttls"],
        enumeration=_enumeration_from_row(row), sni=row["sni"], no_sni_sha256=row["cert_no_sni_sha256"],
        sni_selects=row["sni_selects_certificate"], inconsistent=tuple(row["inconsistent_facts"] or ()),
        cert_source=CertSource.PROBE if sni_checks and chain and row["sni"] is not None else None,
    )


def link_key(probe_key: str, host: str) -> str:
    """Key of a further MX name's SNI session result in the summary cache."""
    return f"{probe_key}|sni={host}"


def session_summary(base: ProbeSummary, outcome: SessionOutcome, new: frozenset[SessionFact]) -> ProbeSummary:
    """The address seen through one SNI session: its certificate, the probe's other facts."""
    chain = outcome.result.tls.chain if outcome.result.tls else ()
    return _seen_with(base, outcome.sni, chain, outcome.verdict, name_source(outcome), (f.value for f in new))


def session_summary_from_row(row: Mapping[str, Any], base: ProbeSummary, trust: TrustStore) -> ProbeSummary:
    """Rebuild a further name's view of an address from its committed ``sessions`` row (resume)."""
    chain = tuple(row["cert_chain"] or ())
    verdict = check_chain(chain, trust, row["started_at"]) if chain else None
    ok = ProbeStatus(row["status"]) is ProbeStatus.STARTTLS_OK
    return _seen_with(base, row["sni"], chain, verdict, CertSource.OWN_SNI if ok else CertSource.SESSION_FAILED,
                      row["contradicts"] or ())


def _seen_with(base: ProbeSummary, sni: str | None, chain: tuple[bytes, ...], verdict: ChainVerdict | None,
               source: CertSource, contradicted: Iterable[str]) -> ProbeSummary:
    inconsistent = tuple(sorted({*base.inconsistent, *contradicted}))
    if verdict is None or not chain:
        return dataclasses.replace(base, leaf=None, chain=(), cert_trust=None, cert_expired=None,
                                   cert_self_signed=None, sni=sni, inconsistent=inconsistent, cert_source=source)
    return dataclasses.replace(
        base, leaf=verdict.leaf, chain=chain, cert_trust=verdict.trust,
        cert_expired=verdict.expired or verdict.not_yet_valid, cert_self_signed=verdict.self_signed,
        sni=sni, inconsistent=inconsistent, cert_source=source,
    )


def _sleep_until(deadline: float) -> Callable[[float], Awaitable[None]]:
    """A back-off sleep that never runs past the probe's deadline (event-loop time): past it, the
    plan's remaining questions are answered "untestable" at once (``_hello_session``)."""

    async def sleep(delay: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))

    return sleep


def build_session_row(scan_id: str, attempt: int, port: int, outcome: SessionOutcome, probe_sha256: str | None,
                      new: frozenset[SessionFact]) -> SessionRow:
    result, verdict = outcome.result, outcome.verdict
    leaf = verdict.leaf if verdict else None
    return SessionRow(
        scan_id=scan_id, attempt=attempt, probe_id=probe_id(outcome.address, port), address=outcome.address,
        port=port, kind=outcome.kind, sni=outcome.sni,
        status=result.status, failure_class=result.failure_class, failure_detail=result.detail,
        starttls_advertised=result.starttls_advertised, tls_version=result.tls.version if result.tls else None,
        cert_chain=list(result.tls.chain) if result.tls else [], cert_sha256=leaf.sha256 if leaf else None,
        cert_trust=verdict.trust.value if verdict else None,
        same_as_probe=(leaf.sha256 == probe_sha256) if leaf and probe_sha256 else None,
        contradicts=sorted(f.value for f in new), started_at=outcome.started_at, total_ms=result.total_ms,
    )


def _summary_verdict(summary: ProbeSummary) -> ChainVerdict | None:
    """Enough of a ChainVerdict for SNI decisions (only the leaf is read)."""
    if summary.leaf is None:
        return None
    return ChainVerdict((summary.leaf,), (), summary.cert_trust or TrustStatus.NO_CERTIFICATE, "",
                        bool(summary.cert_expired), False, bool(summary.cert_self_signed), None)


def _link_contradictions(summary: ProbeSummary, outcome: SessionOutcome) -> frozenset[SessionFact]:
    """A further name's session against the probe: STARTTLS is one fact per address whatever the SNI."""
    advertised = outcome.result.starttls_advertised
    if advertised is False and summary.status is ProbeStatus.STARTTLS_OK:
        return frozenset({SessionFact.STARTTLS})
    return frozenset()


def _negotiated(result: SmtpProbeResult) -> TlsVersion | None:
    name = result.tls.version if result.tls else None
    return next((v for v, n in VERSION_NAMES.items() if n == name), None)


def suite_name(code: int) -> str:
    """IANA name of a suite; unknown code points stay visible as hex."""
    known = lookup_suite(code)
    return known.iana_name if known else f"0x{code:04X}"


def _version(enum: EnumerationResult | None, version: TlsVersion) -> VersionVerdict | None:
    return enum.versions.get(version) if enum else None


def _suites(enum: EnumerationResult | None, version: TlsVersion) -> list[str] | None:
    if enum is None or enum.mode.value != "full":
        return None
    return [suite_name(c) for c in enum.accepted.get(version, ())]


def _sum_present(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None
