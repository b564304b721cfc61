"""Probe scheduling: one probe per unique (address, port) per scan, under politeness limits.

Domains ask for an address with ``ProbeService.request``; the first request creates the probe and
queues it, later ones (other domains hosted at the same provider) share its future. Workers take
queued probes, wait for a slot of the scan's politeness limiter (scanner.net.limits: the address's
own, its prefix's and a global one), run the SMTP/TLS dialogue, judge the certificate chain, hand the
full row (built by scanner.output.probe_rows) to the writer and resolve the future with a compact
``ProbeSummary`` (scanner.records: the only thing domains need).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from scanner.certs import ChainVerdict, TrustStatus, TrustStore, check_chain
from scanner.config import ScanConfig
from scanner.consistency import Answer
from scanner.errors import describe_bug
from scanner.net.addresses import AddressPolicy
from scanner.net.families import Reachability
from scanner.net.limits import PolitenessLimiter
from scanner.output.probe_rows import build_probe_row, build_session_row, probe_summary, session_summary
from scanner.output.rows import ProbeRow, SessionRow
from scanner.probe_cache import SummaryCache
from scanner.records import ProbeSummary, SmtpProbeResult, link_key, probe_id
from scanner.smtp.session import make_probe_context, probe_smtp, skipped_result
from scanner.sni import AddressCheck, SessionOutcome, SniState, check_address, decide_name, note_name
from scanner.status import CertSource, FailureClass, ProbeStatus, SessionFact, SessionKind
from scanner.tls.ciphers import suite_by_name
from scanner.tls.enumeration import (
    AnswerKind,
    EnumerationResult,
    HelloAnswer,
    HelloRequest,
    VersionVerdict,
    full_plan,
    posture_plan,
    reconcile_plan,
    version_hello,
)
from scanner.tls.probe import drive_plan, probe_hello
from scanner.tls.versions import VERSION_NAMES, TlsVersion

__all__ = ["ProbeService", "enumeration_mode"]

_log = logging.getLogger(__name__)


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
        *,
        limits: PolitenessLimiter,
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
        self._limits = limits  # the scan's politeness limits, shared with its policy fetches
        self._sni_states: dict[str, SniState] = {}  # per address with further names (small entries)
        self._links: dict[str, asyncio.Future[ProbeSummary]] = {}  # SNI sessions running, by link key
        self._views = 0  # entries of self._done that are further names' views, not probes
        self.in_flight = 0
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
        if result.view_settled:  # an unsettled not_checked is decided again at the name's next ask
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
            return dataclasses.replace(summary, cert_source=decision.source, view_settled=decision.settled)
        outcome = await self._session(address, probe.port, SessionKind.SNI, host)
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
        await self._queue.put(pending)
        return future

    def _finish(self, key: str, pending: _Pending, summary: ProbeSummary) -> None:
        self._done.put(key, summary)
        del self._pending[key]
        pending.future.set_result(summary)

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
            async with self._limits.slot(pending.address):
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
            rows.append(build_session_row(self._scan_id, self._attempt, pending.port, outcome,
                                          check.probe.cert_sha256, new))

        await check_address(check, run, record, probe.recheck_limit)
        return check

    async def _session(self, address: str, port: int, kind: SessionKind, sni: str | None) -> SessionOutcome:
        """One handshake-only STARTTLS session, under the same limits as every connection."""
        async with self._limits.slot(address):
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
                                 _sleep_until(deadline), self._config.probe.enum_retry_delays)
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
                async with asyncio.timeout_at(deadline), self._limits.slot(pending.address):
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
                                      _sleep_until(deadline), self._config.probe.enum_retry_delays)
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
        return probe_summary(row, result, verdict, enumeration, check, self._config.probe.sni_checks)


# Python's ssl names versions the OpenSSL way ("TLSv1" is TLS 1.0).
OBSERVED_VERSIONS: Mapping[str, TlsVersion] = MappingProxyType({
    "SSLv3": TlsVersion.SSL3, "TLSv1": TlsVersion.TLS10, "TLSv1.1": TlsVersion.TLS11, "TLSv1.2": TlsVersion.TLS12,
    "TLSv1.3": TlsVersion.TLS13,
})


def _bug_result(exc: Exception) -> SmtpProbeResult:
    return skipped_result(FailureClass.INTERNAL, describe_bug(exc))


def _sleep_until(deadline: float) -> Callable[[float], Awaitable[None]]:
    """A back-off sleep that never runs past the probe's deadline (event-loop time): past it, the
    plan's remaining questions are answered "untestable" at once (``_hello_session``)."""

    async def sleep(delay: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))

    return sleep


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


