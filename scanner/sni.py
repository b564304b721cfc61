"""Certificates chosen by SNI, and answers that agree with themselves, at the cost of a few handshakes.

One address often serves many MX names and picks the certificate by the ClientHello's SNI (Postfix
``tls_server_sni_maps``, Exim ``tls_certificate`` on ``$tls_in_sni``, shared hosting). A validating
sender sends SNI = the MX host name (RFC 7672 §8.1 requires it of DANE clients; MTA-STS senders
validate the certificate per MX name, RFC 8461 §4), so each (MX host, address) link is judged on the
certificate presented for its own name. The full probe (dialogue + enumeration) stays one per
(address, port); what this module adds are handshake-only STARTTLS sessions:

- per TLS address, one session without SNI: the certificate that senders sending none receive, and
  the cheap test of whether the server selects by SNI at all. When that certificate differs from the
  probe's, both questions are asked once more right away: a load balancer alternating between two
  configurations gives different answers to the same question, an SNI-selecting server never does;
- per further MX name, at most one session with that name as SNI, only when it can change the
  verdict: not when the server presented the same certificate without SNI and it is already valid
  for the name, nor once ``sni_same_run`` names in a row got that same certificate (a server that
  ignores SNI), nor beyond ``sni_sessions_per_address`` (those links say ``not_checked``). A tenth of
  that cap is kept for names that a second domain asks for (``decide_name``), so that a shared host's
  busy name is checked wherever it comes in the arrival order, and which domains go unchecked does not
  swing with that order;
- when two sessions contradict each other (``scanner.consistency``), the contradicted question is
  re-asked ``recheck_limit`` times and the address is recorded as inconsistent, with the facts.

Sessions are run by a caller-supplied coroutine (``ProbeService`` runs them under the politeness
limits and writes a ``sessions`` row for each), so the decisions here are testable without sockets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from scanner.certs import ChainVerdict, NameMatch, match_hostname
from scanner.consistency import Answer, contradictions, worst_verdict
from scanner.records import SmtpProbeResult
from scanner.status import CertSource, ProbeStatus, SessionFact, SessionKind

__all__ = ["ASKED_ONCE_LIMIT", "AddressCheck", "SessionOutcome", "SniDecision", "SniState", "check_address",
           "decide_name", "first_come_share"]


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """One handshake-only session: the dialogue's result and our judgement of the chain."""

    address: str
    kind: SessionKind
    sni: str | None
    result: SmtpProbeResult
    verdict: ChainVerdict | None
    started_at: datetime

    @property
    def answer(self) -> Answer:
        leaf = self.verdict.leaf if self.verdict else None
        return Answer(self.sni, self.result.starttls_advertised, leaf.sha256 if leaf else None)


# run(kind, sni) opens one session (under the politeness limits); record(outcome, contradicted) writes it.
SessionRunner = Callable[[SessionKind, str | None], Awaitable[SessionOutcome]]
SessionRecorder = Callable[[SessionOutcome, frozenset[SessionFact]], Awaitable[None]]


@dataclass(slots=True)
class AddressCheck:
    """The no-SNI session and consistency checks of one address, right after its full probe."""

    probe_sni: str | None
    probe: Answer
    probe_verdict: ChainVerdict | None
    answers: list[Answer] = field(default_factory=list)
    facts: set[SessionFact] = field(default_factory=set)
    verdicts: dict[str | None, list[ChainVerdict]] = field(default_factory=dict)
    chains: dict[str, tuple[bytes, ...]] = field(default_factory=dict)  # leaf SHA-256 → chain as presented
    no_sni_sha256: str | None = None
    selects: bool | None = None
    rechecks: int = 0
    sessions: int = 0

    def __post_init__(self) -> None:
        self.answers.append(self.probe)
        if self.probe_verdict is not None and self.probe_verdict.leaf is not None:
            self.verdicts[self.probe_sni] = [self.probe_verdict]

    def worst_probe_verdict(self) -> ChainVerdict | None:
        """The certificate the probe's SNI is judged on: the worst one received for it."""
        return worst_verdict(self.verdicts.get(self.probe_sni, []), self.probe_sni) or self.probe_verdict


async def _ask(check: AddressCheck, run: SessionRunner, record: SessionRecorder, kind: SessionKind,
               sni: str | None) -> SessionOutcome:
    outcome = await run(kind, sni)
    check.sessions += 1
    if kind is SessionKind.RECHECK:
        check.rechecks += 1
    answer = outcome.answer
    new = contradictions(check.answers, answer)
    check.answers.append(answer)
    check.facts |= new
    if outcome.verdict is not None and outcome.verdict.leaf is not None and outcome.result.tls is not None:
        check.verdicts.setdefault(sni, []).append(outcome.verdict)
        check.chains[outcome.verdict.leaf.sha256] = outcome.result.tls.chain
    await record(outcome, new)
    return outcome


async def check_address(check: AddressCheck, run: SessionRunner, record: SessionRecorder, recheck_limit: int) -> None:
    """No-SNI certificate, SNI selection, contradictions: at most 3 + ``recheck_limit`` sessions."""
    no_sni = await _ask(check, run, record, SessionKind.NO_SNI, None)
    check.no_sni_sha256 = no_sni.answer.cert_sha256
    differs = check.no_sni_sha256 is not None and check.probe.cert_sha256 is not None \
        and check.no_sni_sha256 != check.probe.cert_sha256
    if differs:
        # Another certificate without SNI: SNI selection, or two backends? Ask both questions again
        # at once; only alternating backends answer the same question differently.
        await _ask(check, run, record, SessionKind.RECHECK, None)
        await _ask(check, run, record, SessionKind.RECHECK, check.probe_sni)
    if check.facts:
        # A contradiction: re-ask, a bounded number of times, to collect the answers (the worst one is
        # graded) and to make a one-off glitch visible as such in the sessions table.
        for turn in range(recheck_limit):
            await _ask(check, run, record, SessionKind.RECHECK, check.probe_sni if turn % 2 else None)
        return
    if check.no_sni_sha256 is not None and check.probe.cert_sha256 is not None:
        check.selects = differs


@dataclass(slots=True)
class SniState:
    """Per address, what later MX names need: kept for the whole scan, so it stays small."""

    probe_sni: str | None
    probe_sha256: str | None
    no_sni_sha256: str | None
    selects: bool | None
    extra: int = 0  # SNI sessions opened for further names
    same_run: int = 0  # names in a row that got the probe's (= the no-SNI) certificate
    ignores: bool = False  # sni_same_run names in a row got it: the server does not look at SNI
    # Names asked once after the first-come share of the cap was used, oldest first (bounded): a second
    # ask takes one of the kept sessions.
    asked_once: dict[str, None] = field(default_factory=dict)


# How many names asked once (beyond the first-come share) an address remembers for their second ask.
# A busy name's second ask follows its first closely; a name asked once in a thousand is no busy name.
ASKED_ONCE_LIMIT: Final = 1024


@dataclass(frozen=True, slots=True)
class SniDecision:
    source: CertSource
    ask: bool  # open a session with this name as SNI
    # False: ``not_checked`` for now, and a later ask of the same name may get a session (not to be
    # cached as the name's answer).
    settled: bool = True


def first_come_share(cap: int) -> int:
    """Of ``cap`` SNI sessions per address, how many go to the names that ask first. The rest, a tenth
    (at least one of two or more), is kept for names a second domain asks for: enough for a shared
    host's few busy names, while names that nobody asks twice (a customer's own ``mail.`` name) lose
    no more than a tenth of the cap."""
    return cap - (max(cap // 10, 1) if cap >= 2 else 0)


def decide_name(state: SniState, host: str, probe_verdict: ChainVerdict | None, cap: int) -> SniDecision:
    """Does a further MX name on this address need its own SNI session (only if it can change the verdict)?

    Within the cap, the first ``first_come_share`` names that need one get a session at once. After
    them, a name gets one only when it is asked again (by another domain), while sessions are left:
    arrival order alone could spend the whole cap on the first names to come, one-off names, while a
    name that thousands of domains share came later (a matter of timing, so two scans of one input
    then differed in every one of those domains). Its first asker's link says ``not_checked``
    (unsettled: not cached, ``SniDecision.settled``).
    """
    if state.ignores:
        return SniDecision(CertSource.SAME_CERTIFICATE, False)
    leaf = probe_verdict.leaf if probe_verdict else None
    valid_already = leaf is not None and match_hostname(leaf, host) in (NameMatch.SAN, NameMatch.COMMON_NAME)
    if state.selects is False and valid_already:
        # One certificate with and without SNI, and it already names this host: a session could only
        # find the very same certificate.
        return SniDecision(CertSource.SAME_CERTIFICATE, False)
    if state.extra >= cap:
        state.asked_once.clear()  # nothing is kept any more: every later answer is settled
        return SniDecision(CertSource.NOT_CHECKED, False)
    if state.extra >= first_come_share(cap) and host not in state.asked_once:
        state.asked_once[host] = None
        if len(state.asked_once) > ASKED_ONCE_LIMIT:
            del state.asked_once[next(iter(state.asked_once))]
        return SniDecision(CertSource.NOT_CHECKED, False, settled=False)
    state.asked_once.pop(host, None)
    state.extra += 1  # taken now: names decided while this session runs see the cap
    return SniDecision(CertSource.OWN_SNI, True)


def note_name(state: SniState, outcome: SessionOutcome, same_run: int) -> None:
    """Learn from a name's session: a different certificate proves selection; a run of identical ones
    (the certificate also presented without SNI) shows a server that ignores SNI."""
    sha = outcome.answer.cert_sha256
    if sha is None:
        return
    if sha != state.probe_sha256:
        state.selects = True
        state.same_run = 0
        return
    state.same_run += 1
    if state.selects is not True and state.no_sni_sha256 == state.probe_sha256 and state.same_run >= same_run:
        state.ignores = True


def name_source(outcome: SessionOutcome) -> CertSource:
    return CertSource.OWN_SNI if outcome.result.status is ProbeStatus.STARTTLS_OK else CertSource.SESSION_FAILED
