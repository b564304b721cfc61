"""PURE planner for protocol and cipher-suite enumeration: which ClientHello to send next.

A plan is a generator: it yields a ``HelloRequest`` (one request = one STARTTLS session) and is sent
back the ``HelloAnswer`` the server gave; when it has seen enough it returns an
``EnumerationResult``. No sockets and no clock here, so plans can be replayed against scripted
answers in tests (``scanner.tls.probe`` drives them over the network).

Economics (peers need 40 to 400 sessions per server, see shared/reference/peer-tools.md §9):
- posture mode: one hello per protocol version (5), weak suites by elimination over classes (the server
  names one accepted weak suite per session; we drop every suite that would teach no new class),
  NIST SP 800-52 r1/r2 membership only when the preferred suite does not already answer it, and one
  reversed offer to see whether the server imposes its own order: 7 to 12 sessions;
- full mode: the version hellos, then per accepted version "offer a bundle, remove what the server
  picked, repeat" (sessions = accepted suites + bundles), then one swapped pair for server order.
Only a real refusal (alert, close, or a lower version) counts as "not supported"; a timeout or a
throttle leaves that question unanswered.
"""

from __future__ import annotations

import functools
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from enum import Enum

from scanner.tls.ciphers import CipherSuite, WeakClass, suites_for
from scanner.tls.ciphers import suite as lookup_suite
from scanner.tls.codec import TlsVersion

__all__ = [
    "MAX_SUITES_PER_HELLO",
    "POSTURE_VERSIONS",
    "AnswerKind",
    "EnumMode",
    "EnumerationResult",
    "HelloAnswer",
    "HelloRequest",
    "Plan",
    "Purpose",
    "VersionVerdict",
    "full_plan",
    "offer_order",
    "posture_plan",
]

# Old server stacks are known to choke on very long ClientHellos (standards.md §3.5); 128 suites keeps
# a TLS 1.2 hello near 300 bytes plus extensions, which every stack we know accepts.
MAX_SUITES_PER_HELLO = 128
_MAINSTREAM_KX = frozenset({"ECDHE", "DHE", "RSA", "ANY"})
_MAINSTREAM_AU = frozenset({"RSA", "ECDSA", "DSS", "ANY"})
# Posture mode spends at most this many sessions on weak-class elimination.
MAX_WEAK_SESSIONS = 4
POSTURE_VERSIONS = (TlsVersion.TLS13, TlsVersion.TLS12, TlsVersion.TLS11, TlsVersion.TLS10, TlsVersion.SSL3)
VERSION_NAMES = {
    TlsVersion.SSL3: "SSLv3",
    TlsVersion.TLS10: "TLSv1.0",
    TlsVersion.TLS11: "TLSv1.1",
    TlsVersion.TLS12: "TLSv1.2",
    TlsVersion.TLS13: "TLSv1.3",
}


class EnumMode(str, Enum):
    OFF = "off"
    POSTURE = "posture"
    FULL = "full"


class Purpose(str, Enum):
    VERSION = "version"
    WEAK = "weak"
    NIST_R1 = "nist_r1"
    NIST_R2 = "nist_r2"
    PREFERENCE = "preference"
    SUITES = "suites"


class AnswerKind(str, Enum):
    """What one hello session taught us."""

    ACCEPTED = "accepted"  # a ServerHello (or HelloRetryRequest) naming a suite we offered
    REJECTED_ALERT = "rejected_alert"
    REJECTED_CLOSE = "rejected_close"  # FIN instead of a ServerHello
    UNTESTABLE = "untestable"  # timeout, reset, throttled, unreachable, STARTTLS gone: no answer at all
    PROTOCOL_ERROR = "protocol_error"  # garbage, or a suite/version we did not offer


class VersionVerdict(str, Enum):
    """How support for one protocol version was decided."""

    ACCEPTED = "accepted"
    REJECTED_ALERT = "rejected_alert"
    REJECTED_CLOSE = "rejected_close"
    REJECTED_DOWNGRADE = "rejected_downgrade"  # the server answered with a lower version
    UNTESTED = "untested"
    PROTOCOL_ERROR = "protocol_error"

    @property
    def supported(self) -> bool | None:
        if self is VersionVerdict.ACCEPTED:
            return True
        if self in (VersionVerdict.UNTESTED, VersionVerdict.PROTOCOL_ERROR):
            return None
        return False


@dataclass(frozen=True, slots=True)
class HelloRequest:
    version: TlsVersion
    suites: tuple[int, ...]
    purpose: Purpose


@dataclass(frozen=True, slots=True)
class HelloAnswer:
    kind: AnswerKind
    version: int | None = None  # negotiated version (for ACCEPTED)
    suite: int | None = None  # chosen suite (for ACCEPTED)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EnumerationResult:
    mode: EnumMode
    sessions: int
    versions: dict[TlsVersion, VersionVerdict]
    weak_classes: frozenset[WeakClass]
    weak_complete: bool  # False when the weak search stopped early (cap or untestable answer)
    nist_r1: bool | None
    nist_r2: bool | None
    preferred_suite: int | None  # the server's pick from our modern-first offer at its best version
    preferred_version: TlsVersion | None
    server_order: bool | None  # the server imposes its own suite order
    accepted: dict[TlsVersion, tuple[int, ...]] = field(default_factory=dict)  # full mode only
    server_order_suites: tuple[int, ...] = ()  # full mode: the server's order at its best version
    complete: bool = True  # every question was answered (no untestable session)


Plan = Generator[HelloRequest, HelloAnswer, EnumerationResult]


def _offer_key(suite: CipherSuite) -> tuple[int, int, int, int, int]:
    """Modern first: no weakness, forward secrecy, AEAD, more bits; 3DES then RC4 before other weak."""
    if not suite.weak:
        weak_rank = 0
    elif suite.weak <= {WeakClass.TRIPLE_DES}:
        weak_rank = 1
    elif WeakClass.RC4 in suite.weak and not suite.weak & {WeakClass.EXPORT, WeakClass.ANON, WeakClass.NULL}:
        weak_rank = 2
    else:
        weak_rank = 3
    return (weak_rank, 0 if suite.forward_secret else 1, 0 if suite.is_aead else 1, -suite.bits, suite.code)


def offer_order(suites: Sequence[CipherSuite]) -> list[CipherSuite]:
    return sorted(suites, key=_offer_key)


@functools.cache
def _usable(version: TlsVersion) -> tuple[CipherSuite, ...]:
    """Suites a server could pick at ``version``, modern first: TLS 1.3 suites only in 1.3, others below.

    Memoized: a pure function of the static registry, called for every hello.
    """
    wanted = version is TlsVersion.TLS13
    # SSLv3 hellos also offer the suites defined from TLS 1.0 on (ECDHE, ...): some stacks accept them
    # in SSLv3 anyway, and a survey records what a server accepts, not what the RFCs allow.
    registry_version = TlsVersion.TLS10 if version is TlsVersion.SSL3 else version
    return tuple(offer_order([s for s in suites_for(registry_version) if s.is_tls13 == wanted]))


@functools.cache
def _version_bundles(version: TlsVersion, exhaustive: bool) -> tuple[tuple[int, ...], ...]:
    """Offers that test a version: first the suites real stacks implement, modern first (one bundle).

    Posture mode stops there (a server whose only suites at a version are outside the 128 most common
    would be missed: a documented trade-off for the session budget). Full mode goes on with bundles of
    every other registered suite before it calls the version refused.
    """
    usable = _usable(version)
    # What deployed servers pick from: ephemeral or RSA key exchange with RSA/ECDSA/DSS certificates
    # (115 suites at TLS 1.2, so all of them fit), then the other suites real stacks implement
    # (anonymous, static DH/ECDH), then the exotic rest (PSK, SRP, KRB5, GOST) in later bundles.
    mainstream = [s.code for s in usable if s.kx.value in _MAINSTREAM_KX and s.au.value in _MAINSTREAM_AU]
    implemented = [s.code for s in usable if s.openssl_name and s.code not in set(mainstream)]
    first = (mainstream + implemented)[:MAX_SUITES_PER_HELLO] or [s.code for s in usable[:1]]
    if not exhaustive:
        return (tuple(first),)
    taken = set(first)
    rest = [s.code for s in usable if s.code not in taken]
    return (tuple(first), *(tuple(rest[i:i + MAX_SUITES_PER_HELLO]) for i in range(0, len(rest), MAX_SUITES_PER_HELLO)))


def _version_offer(version: TlsVersion) -> tuple[int, ...]:
    return _version_bundles(version, exhaustive=False)[0]


def _version_verdict(request: HelloRequest, answer: HelloAnswer) -> VersionVerdict:
    if answer.kind is AnswerKind.ACCEPTED:
        if answer.version is not None and answer.version < request.version:
            return VersionVerdict.REJECTED_DOWNGRADE
        return VersionVerdict.ACCEPTED
    return {
        AnswerKind.REJECTED_ALERT: VersionVerdict.REJECTED_ALERT,
        AnswerKind.REJECTED_CLOSE: VersionVerdict.REJECTED_CLOSE,
        AnswerKind.PROTOCOL_ERROR: VersionVerdict.PROTOCOL_ERROR,
    }.get(answer.kind, VersionVerdict.UNTESTED)


@dataclass(slots=True)
class _State:
    sessions: int = 0
    complete: bool = True
    versions: dict[TlsVersion, VersionVerdict] = field(default_factory=dict)
    picks: dict[TlsVersion, int] = field(default_factory=dict)  # suite chosen in each version probe

    def note(self, answer: HelloAnswer) -> None:
        self.sessions += 1
        if answer.kind is AnswerKind.UNTESTABLE:
            self.complete = False

    @property
    def best_legacy_version(self) -> TlsVersion | None:
        """Highest accepted version below TLS 1.3 (where weak and NIST r1 suites live)."""
        for version in POSTURE_VERSIONS[1:]:
            if self.versions.get(version) is VersionVerdict.ACCEPTED:
                return version
        return None

    @property
    def best_version(self) -> TlsVersion | None:
        for version in POSTURE_VERSIONS:
            if self.versions.get(version) is VersionVerdict.ACCEPTED:
                return version
        return None


def _probe_versions(state: _State, exhaustive: bool = False) -> Generator[HelloRequest, HelloAnswer, None]:
    for version in POSTURE_VERSIONS:
        verdicts: list[VersionVerdict] = []
        for bundle in _version_bundles(version, exhaustive):
            request = HelloRequest(version, bundle, Purpose.VERSION)
            answer = yield request
            state.note(answer)
            verdict = _version_verdict(request, answer)
            verdicts.append(verdict)
            if verdict is VersionVerdict.ACCEPTED:
                if answer.suite is not None:
                    state.picks[version] = answer.suite
                break
            if verdict is VersionVerdict.REJECTED_DOWNGRADE:
                break  # the server told us its highest version: other bundles cannot change that
        state.versions[version] = _combine(verdicts)


def _combine(verdicts: list[VersionVerdict]) -> VersionVerdict:
    """Accepted if any bundle was; else untested if any bundle went unanswered; else the first refusal."""
    if VersionVerdict.ACCEPTED in verdicts:
        return VersionVerdict.ACCEPTED
    for doubtful in (VersionVerdict.UNTESTED, VersionVerdict.PROTOCOL_ERROR):
        if doubtful in verdicts:
            return doubtful
    return verdicts[0]


def _probe_weak(
    state: _State, version: TlsVersion
) -> Generator[HelloRequest, HelloAnswer, tuple[frozenset[WeakClass], bool]]:
    """Elimination over weak classes: each session either reveals a new class or ends the search."""
    known: set[WeakClass] = set()
    candidates = [s for s in _usable(version) if s.weak]
    for _ in range(MAX_WEAK_SESSIONS):
        teaching = [s for s in candidates if s.weak - known]
        if not teaching:
            return frozenset(known), True
        answer = yield HelloRequest(version, tuple(s.code for s in teaching[:MAX_SUITES_PER_HELLO]), Purpose.WEAK)
        state.note(answer)
        if answer.kind is not AnswerKind.ACCEPTED or answer.suite is None:
            finished = answer.kind in (AnswerKind.REJECTED_ALERT, AnswerKind.REJECTED_CLOSE)
            return frozenset(known), finished and len(teaching) <= MAX_SUITES_PER_HELLO
        picked = lookup_suite(answer.suite)
        if picked is None or not picked.weak - known:
            return frozenset(known), False  # a suite outside the offer or teaching nothing: stop honestly
        known |= picked.weak
    return frozenset(known), not [s for s in candidates if s.weak - known]


def _probe_nist(
    state: _State, version: TlsVersion | None, purpose: Purpose
) -> Generator[HelloRequest, HelloAnswer, bool | None]:
    """Is any suite of the r1 (or r2) list accepted? Answered for free when a known pick is a member."""
    def member(candidate: CipherSuite) -> bool:
        return candidate.nist_r1 if purpose is Purpose.NIST_R1 else candidate.nist_r2

    for pick in state.picks.values():
        known = lookup_suite(pick)
        if known is not None and member(known):
            return True
    if version is None:
        return False if state.best_version is not None else None
    offer = tuple(s.code for s in _usable(version) if member(s))
    if not offer:
        return False
    answer = yield HelloRequest(version, offer[:MAX_SUITES_PER_HELLO], purpose)
    state.note(answer)
    if answer.kind is AnswerKind.ACCEPTED:
        return True
    if answer.kind in (AnswerKind.REJECTED_ALERT, AnswerKind.REJECTED_CLOSE):
        return False
    return None


def _probe_preference(state: _State) -> Generator[HelloRequest, HelloAnswer, bool | None]:
    """Offer the version probe's suites reversed: the same pick means the server decides."""
    version = state.best_version
    if version is None or version not in state.picks:
        return None
    offer = _version_offer(version)
    if len(offer) < 2:
        return None
    answer = yield HelloRequest(version, tuple(reversed(offer)), Purpose.PREFERENCE)
    state.note(answer)
    if answer.kind is not AnswerKind.ACCEPTED or answer.suite is None:
        return None
    return answer.suite == state.picks[version]


def posture_plan() -> Plan:
    """The cheap picture used by default in scans (7 to 12 sessions)."""
    state = _State()
    yield from _probe_versions(state)
    legacy = state.best_legacy_version
    weak: frozenset[WeakClass] = frozenset()
    weak_complete = True
    if legacy is not None:
        weak, weak_complete = yield from _probe_weak(state, legacy)
    # NIST r1 predates TLS 1.3: only legacy versions can answer it; r2 also counts 1.3 suites.
    nist_r1 = yield from _probe_nist(state, legacy, Purpose.NIST_R1)
    nist_r2 = yield from _probe_nist(state, legacy or state.best_version, Purpose.NIST_R2)
    server_order = yield from _probe_preference(state)
    best = state.best_version
    return EnumerationResult(
        mode=EnumMode.POSTURE, sessions=state.sessions, versions=dict(state.versions), weak_classes=weak,
        weak_complete=weak_complete, nist_r1=nist_r1, nist_r2=nist_r2,
        preferred_suite=state.picks.get(best) if best else None, preferred_version=best,
        server_order=server_order, complete=state.complete and weak_complete,
    )


def _eliminate(state: _State, version: TlsVersion) -> Generator[HelloRequest, HelloAnswer, tuple[list[int], bool]]:
    """Every accepted suite at ``version``: offer a bundle, drop the pick, repeat until refused."""
    remaining = [s.code for s in _usable(version)]
    accepted: list[int] = []
    complete = True
    while remaining:
        bundle = remaining[:MAX_SUITES_PER_HELLO]
        answer = yield HelloRequest(version, tuple(bundle), Purpose.SUITES)
        state.note(answer)
        if answer.kind is AnswerKind.ACCEPTED and answer.suite in bundle and (
            answer.version is None or answer.version >= version
        ):
            accepted.append(answer.suite)
            remaining.remove(answer.suite)
            continue
        if answer.kind not in (AnswerKind.REJECTED_ALERT, AnswerKind.REJECTED_CLOSE):
            complete = False  # untestable or odd answer: this bundle's remainder stays unknown
        remaining = remaining[len(bundle):]
    return accepted, complete


def full_plan() -> Plan:
    """Every accepted suite per version and the server's order (sessions ≈ accepted + bundles)."""
    state = _State()
    yield from _probe_versions(state, exhaustive=True)
    accepted: dict[TlsVersion, tuple[int, ...]] = {}
    complete = True
    for version in POSTURE_VERSIONS:
        if state.versions.get(version) is VersionVerdict.ACCEPTED:
            picks, done = yield from _eliminate(state, version)
            accepted[version] = tuple(picks)
            complete &= done
    best = state.best_version
    server_order: bool | None = None
    order: tuple[int, ...] = ()
    if best is not None and len(accepted.get(best, ())) >= 2:
        first, second = accepted[best][0], accepted[best][1]
        # The server picked ``first`` over ``second`` while both were offered (first ahead). Offer them
        # swapped: a server that keeps ``first`` imposes its order, and then the elimination sequence
        # is that order (each pick was its favourite among what remained).
        answer = yield HelloRequest(best, (second, first), Purpose.PREFERENCE)
        state.note(answer)
        if answer.kind is AnswerKind.ACCEPTED:
            server_order = answer.suite == first
            order = accepted[best] if server_order else ()
    all_accepted = [lookup_suite(code) for codes in accepted.values() for code in codes]
    known = [s for s in all_accepted if s is not None]
    weak = frozenset(c for s in known for c in s.weak)
    legacy_versions_done = complete
    return EnumerationResult(
        mode=EnumMode.FULL, sessions=state.sessions, versions=dict(state.versions), weak_classes=weak,
        weak_complete=legacy_versions_done,
        nist_r1=any(s.nist_r1 for s in known) if known or best else None,
        nist_r2=any(s.nist_r2 for s in known) if known or best else None,
        preferred_suite=state.picks.get(best) if best else None, preferred_version=best,
        server_order=server_order, accepted=accepted, server_order_suites=order,
        complete=state.complete and complete,
    )
