"""PURE planner for protocol and cipher-suite enumeration: which ClientHello to send next.

A plan is a generator: it yields a ``HelloRequest`` (one request = one STARTTLS session) and is sent
back the ``HelloAnswer`` the server gave; when it has seen enough it returns an
``EnumerationResult``. No sockets and no clock here, so plans can be replayed against scripted
answers in tests (``scanner.tls.probe`` drives them over the network).

Economics (peers need 40 to 400 sessions per server: benchmarks/bench_enum.py counts them):
- posture mode: one hello per protocol version (5), weak suites by elimination over classes (the server
  names one accepted weak suite per session; we drop every suite that would teach no new class),
  NIST SP 800-52 r1/r2 membership only when the preferred suite does not already answer it, and one
  reversed offer to see whether the server imposes its own order; then key exchange (below): at most
  MAX_POSTURE_SESSIONS (12) in all (7 to 8 on the test servers with TLS 1.3, 12 on exim with 3 weak classes);
- full mode: the version hellos, then per accepted version "offer a bundle, remove what the server
  picked, repeat" (sessions = accepted suites + bundles), then one swapped pair for server order.
Both modes end with key exchange and hygiene: curves and DH primes come free from the
ServerKeyExchange of every ephemeral pick and the hygiene facts from the ServerHello at the best legacy
version; new sessions only for a DHE-only offer (when no pick was DHE; posture mode asks it inside the
weak-class hellos instead), one TLS_FALLBACK_SCSV hello (RFC 7507; posture mode only where NIST
SP 800-52r2 requires the SCSV) and group elimination (posture mode only while it can change the grade
``only_deprecated_curves``, at most MAX_GROUP_SESSIONS and within the 12-session cap; the list is then
flagged partial).
Only a real refusal (alert, close, or a lower version) counts as "not supported"; a timeout or a
throttle leaves that question unanswered.
"""

from __future__ import annotations

import functools
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final

from scanner.tls.ciphers import Authentication, CipherSuite, KeyExchange, WeakClass, suites_for
from scanner.tls.ciphers import suite as lookup_suite
from scanner.tls.groups import ALL_EC_GROUPS, TLS13_GROUPS_ALL, GroupClass, group_class, well_known_prime
from scanner.tls.messages import AlertDescription, HelloFacts
from scanner.tls.versions import VERSION_NAMES, EnumMode, TlsVersion

__all__ = [
    "MAX_SUITES_PER_HELLO",
    "POSTURE_VERSIONS",
    "AnswerKind",
    "EnumerationResult",
    "HelloAnswer",
    "HelloRequest",
    "KeyExchangeResult",
    "Plan",
    "Purpose",
    "VersionVerdict",
    "full_plan",
    "offer_order",
    "posture_plan",
    "reconcile_plan",
    "version_hello",
]

# Old server stacks are known to choke on very long ClientHellos (RFC 7685 §4); 128 suites keeps
# a TLS 1.2 hello near 300 bytes plus extensions, which every stack we know accepts.
MAX_SUITES_PER_HELLO = 128
_MAINSTREAM_KX = frozenset({"ECDHE", "DHE", "RSA", "ANY"})
_MAINSTREAM_AU = frozenset({"RSA", "ECDSA", "DSS", "ANY"})
# Posture mode spends at most this many sessions on weak-class elimination.
MAX_WEAK_SESSIONS = 4
# Posture mode never opens more sessions than this per server (retries of untestable sessions aside);
# curve elimination gets what is left of it, at most MAX_GROUP_SESSIONS.
MAX_POSTURE_SESSIONS = 12
MAX_GROUP_SESSIONS = 3
POSTURE_VERSIONS = (TlsVersion.TLS13, TlsVersion.TLS12, TlsVersion.TLS11, TlsVersion.TLS10, TlsVersion.SSL3)
class Purpose(str, Enum):
    VERSION = "version"
    WEAK = "weak"
    NIST_R1 = "nist_r1"
    NIST_R2 = "nist_r2"
    PREFERENCE = "preference"
    SUITES = "suites"
    RECONCILE = "reconcile"  # re-asking what the observation handshake contradicted
    GROUPS = "groups"  # which elliptic curves (or TLS 1.3 groups) are accepted
    DHE = "dhe"  # a DHE-only offer, for the server's finite-field group
    FALLBACK = "fallback"  # RFC 7507 TLS_FALLBACK_SCSV below the highest version


class AnswerKind(str, Enum):
    """What one hello session taught us."""

    ACCEPTED = "accepted"  # a ServerHello (or HelloRetryRequest) naming a suite we offered
    REJECTED_ALERT = "rejected_alert"
    REJECTED_CLOSE = "rejected_close"  # FIN instead of a ServerHello
    UNTESTABLE = "untestable"  # timeout, reset, throttled, unreachable, STARTTLS gone: no answer at all
    PROTOCOL_ERROR = "protocol_error"  # garbage, or a suite/version we did not offer


class VersionVerdict(StrEnum):
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
    # The other hello shape for TLS <= 1.2: the version also listed in supported_versions (RFC 8446
    # §4.2.1), as every modern client's hello carries it. Some stacks negotiate differently with it.
    supported_versions: bool = False
    # supported_groups to offer: every curve we know below TLS 1.3 (ALL_EC_GROUPS) and every TLS 1.3
    # group in 1.3, unless a plan narrows it to eliminate groups.
    groups: tuple[int, ...] = ()
    fallback_scsv: bool = False

    def offered_groups(self) -> tuple[int, ...]:
        if self.groups:
            return self.groups
        return TLS13_GROUPS_ALL if self.version is TlsVersion.TLS13 else ALL_EC_GROUPS


@dataclass(frozen=True, slots=True)
class HelloAnswer:
    kind: AnswerKind
    version: int | None = None  # negotiated version (for ACCEPTED)
    suite: int | None = None  # chosen suite (for ACCEPTED)
    detail: str = ""
    alert: int | None = None  # the fatal alert's description (REJECTED_ALERT)
    group: int | None = None  # TLS 1.3 key_share/HelloRetryRequest group, or the ECDHE ServerKeyExchange curve
    dh_prime: int | None = None  # the DHE ServerKeyExchange prime
    facts: HelloFacts | None = None  # the ServerHello's hygiene facts (TLS <= 1.2 answers)


@dataclass(frozen=True, slots=True)
class KeyExchangeResult:
    """Key exchange and protocol hygiene (None: not observed). Groups are IANA code points."""

    groups: tuple[int, ...] = ()  # elliptic curves / TLS 1.3 groups accepted, in the order found
    groups_complete: bool | None = None  # the elimination ended with a refusal (False: stopped at its cap)
    preferred_group: int | None = None  # the group picked from a full-list offer at the highest version
    dhe: bool | None = None  # a server-authenticated DHE suite is accepted below TLS 1.3
    dh_bits: int | None = None  # the smallest prime seen with server-authenticated DHE, in bits
    dh_group: str | None = None  # that prime's name when it is a published one (scanner.tls.groups)
    secure_renegotiation: bool | None = None
    compression: bool | None = None
    extended_master_secret: bool | None = None
    encrypt_then_mac: bool | None = None
    heartbeat: bool | None = None
    ocsp_stapling: bool | None = None
    fallback_scsv: bool | None = None  # None also when only one version is accepted (nothing to fall back to)


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
    quirks: tuple[str, ...] = ()  # where a crafted hello and the observation disagreed, and how it was settled
    kx: KeyExchangeResult = field(default_factory=KeyExchangeResult)


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
    answers: dict[TlsVersion, HelloAnswer] = field(default_factory=dict)  # each version probe's answer
    groups: list[int] = field(default_factory=list)  # groups seen picked, in order
    dh_primes: list[int] = field(default_factory=list)
    ecdsa: bool = False  # the server picked an ECDSA-authenticated suite (its certificate is EC)

    def note(self, answer: HelloAnswer, request: HelloRequest | None = None) -> None:
        self.sessions += 1
        if answer.kind is AnswerKind.UNTESTABLE:
            self.complete = False
        if answer.kind is not AnswerKind.ACCEPTED or request is None:
            return
        # Every session teaches key exchange for free: the curve or prime of whatever the server picked.
        if answer.group is not None and answer.group in request.offered_groups() and answer.group not in self.groups:
            self.groups.append(answer.group)
        # Anonymous DH suites are the weak class "anon" already, and servers pick a different (OpenSSL:
        # smaller) prime for them: only server-authenticated DHE counts, as a sender sees it.
        picked = lookup_suite(answer.suite) if answer.suite is not None else None
        self.ecdsa |= picked is not None and picked.au is Authentication.ECDSA
        if answer.dh_prime is not None and picked is not None and picked.au is not Authentication.ANON:
            self.dh_primes.append(answer.dh_prime)

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
            state.note(answer, request)
            verdict = _version_verdict(request, answer)
            verdicts.append(verdict)
            if verdict is VersionVerdict.ACCEPTED:
                state.answers[version] = answer
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
    state: _State, version: TlsVersion, dhe_question: bool = False
) -> Generator[HelloRequest, HelloAnswer, tuple[frozenset[WeakClass], bool, bool | None]]:
    """Elimination over weak classes: each session either reveals a new class or ends the search.

    With ``dhe_question`` (posture mode, no DHE pick yet) the hellos also carry _posture_dhe_suites after
    the weak ones, so the final refusal also answers "no DHE suite", and a DHE pick shows the prime (it
    costs one session then, as a DHE-only offer would). Returns (classes, complete, DHE accepted).
    """
    known: set[WeakClass] = set()
    candidates = [s for s in _usable(version) if s.weak]
    dhe_extra = _posture_dhe_suites(version) if dhe_question and not state.dh_primes else ()
    dhe: bool | None = True if state.dh_primes else None
    weak_sessions = 0
    while weak_sessions < MAX_WEAK_SESSIONS:
        teaching = [s.code for s in candidates if s.weak - known]
        if not teaching and not dhe_extra:
            return frozenset(known), True, dhe
        weak_offer = teaching[:MAX_SUITES_PER_HELLO]
        extra = tuple(c for c in dhe_extra if c not in weak_offer)
        fits = len(weak_offer) + len(extra) <= MAX_SUITES_PER_HELLO
        offer = (*weak_offer, *extra) if fits else tuple(weak_offer)
        request = HelloRequest(version, offer, Purpose.WEAK)
        answer = yield request
        state.note(answer, request)
        accepted = answer.kind is AnswerKind.ACCEPTED
        picked = lookup_suite(answer.suite) if accepted and answer.suite is not None else None
        if picked is None or answer.suite not in offer:
            refused = answer.kind in _REFUSED
            if refused and fits and dhe_extra:
                dhe = False  # every DHE suite asked about was in the refused offer
            finished = refused and len(teaching) <= MAX_SUITES_PER_HELLO
            return frozenset(known), finished, dhe
        if picked.kx is KeyExchange.DHE and picked.au is not Authentication.ANON:
            dhe, dhe_extra = True, ()  # the prime came with the ServerKeyExchange (_State.note)
        if not picked.weak - known:
            if picked.code in extra:
                continue  # the DHE pick taught no class: not a weak session
            return frozenset(known), False, dhe  # a suite teaching nothing: stop honestly
        known |= picked.weak
        weak_sessions += 1
    return frozenset(known), not [s for s in candidates if s.weak - known], dhe


@functools.cache
def _posture_dhe_suites(version: TlsVersion) -> tuple[int, ...]:
    """The DHE suites posture mode asks about: server-authenticated, with AES (but CCM_8), ChaCha20 or
    Camellia, plus the weak ones. At TLS 1.2 that is 33 of 45 and, beside the 100 weak suites, still fits
    one 128-suite hello; a server whose only DHE suites are ARIA, SEED or CCM_8 ones is left to full mode."""
    chosen = [s for s in _usable(version) if s.kx is KeyExchange.DHE and s.au is not Authentication.ANON
              and (s.weak or (s.enc.startswith(("AES", "CHACHA20", "CAMELLIA")) and not s.enc.endswith("CCM_8")))]
    return tuple(s.code for s in chosen)


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
    request = HelloRequest(version, offer[:MAX_SUITES_PER_HELLO], purpose)
    answer = yield request
    state.note(answer, request)
    if answer.kind is AnswerKind.ACCEPTED:
        return True
    if answer.kind in (AnswerKind.REJECTED_ALERT, AnswerKind.REJECTED_CLOSE):
        return False
    return None


def _probe_preference(state: _State) -> Generator[HelloRequest, HelloAnswer, bool | None]:
    """Offer the version probe's suites reversed: the same pick means the server decides."""
    version = state.best_version
    if version is None or version not in state.picks or state.sessions >= MAX_POSTURE_SESSIONS:
        return None  # (the cap is only reached by a server needing every weak and NIST session)
    offer = _version_offer(version)
    if len(offer) < 2:
        return None
    request = HelloRequest(version, tuple(reversed(offer)), Purpose.PREFERENCE)
    answer = yield request
    state.note(answer, request)
    if answer.kind is not AnswerKind.ACCEPTED or answer.suite is None:
        return None
    return answer.suite == state.picks[version]


def posture_plan() -> Plan:
    """The cheap picture used by default in scans (6 to 12 sessions)."""
    state = _State()
    yield from _probe_versions(state)
    legacy = state.best_legacy_version
    weak: frozenset[WeakClass] = frozenset()
    weak_complete = True
    dhe: bool | None = None
    if legacy is not None:
        weak, weak_complete, dhe = yield from _probe_weak(state, legacy, dhe_question=True)
    # NIST r1 predates TLS 1.3: only legacy versions can answer it; r2 also counts 1.3 suites.
    nist_r1 = yield from _probe_nist(state, legacy, Purpose.NIST_R1)
    nist_r2 = yield from _probe_nist(state, legacy or state.best_version, Purpose.NIST_R2)
    server_order = yield from _probe_preference(state)
    kx = yield from _probe_key_exchange(state, MAX_POSTURE_SESSIONS, dhe)
    best = state.best_version
    return EnumerationResult(
        mode=EnumMode.POSTURE, sessions=state.sessions, versions=dict(state.versions), weak_classes=weak,
        weak_complete=weak_complete, nist_r1=nist_r1, nist_r2=nist_r2,
        preferred_suite=state.picks.get(best) if best else None, preferred_version=best,
        server_order=server_order, complete=state.complete and weak_complete, kx=kx,
    )


def _eliminate(state: _State, version: TlsVersion) -> Generator[HelloRequest, HelloAnswer, tuple[list[int], bool]]:
    """Every accepted suite at ``version``: offer a bundle, drop the pick, repeat until refused."""
    remaining = [s.code for s in _usable(version)]
    accepted: list[int] = []
    complete = True
    while remaining:
        bundle = remaining[:MAX_SUITES_PER_HELLO]
        request = HelloRequest(version, tuple(bundle), Purpose.SUITES)
        answer = yield request
        state.note(answer, request)
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
        request = HelloRequest(best, (second, first), Purpose.PREFERENCE)
        answer = yield request
        state.note(answer, request)
        if answer.kind is AnswerKind.ACCEPTED:
            server_order = answer.suite == first
            order = accepted[best] if server_order else ()
    kx = yield from _probe_key_exchange(state, None)
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
        complete=state.complete and complete, kx=kx,
    )


# --------------------------------------------------------------------------
# Key exchange and protocol hygiene
# --------------------------------------------------------------------------

_REFUSED = (AnswerKind.REJECTED_ALERT, AnswerKind.REJECTED_CLOSE)


def _suites_with_kx(version: TlsVersion, kx: KeyExchange) -> tuple[int, ...]:
    """Suites of one key exchange; for DHE only server-authenticated ones (see _State.note)."""
    wanted = [s.code for s in _usable(version)
              if s.kx is kx and (kx is not KeyExchange.DHE or s.au is not Authentication.ANON)]
    return tuple(wanted[:MAX_SUITES_PER_HELLO])


def _probe_dhe(state: _State) -> Generator[HelloRequest, HelloAnswer, bool | None]:
    """Does the server take a DHE suite (and with which prime)? Free when an earlier pick was DHE.

    The DHE-only offer lists no RFC 7919 group, so the server shows the prime it uses by default.
    """
    if state.dh_primes:
        return True
    version = state.best_legacy_version
    offer = _suites_with_kx(version, KeyExchange.DHE) if version is not None else ()
    if version is None or not offer:
        return None
    request = HelloRequest(version, offer, Purpose.DHE)
    answer = yield request
    state.note(answer, request)
    if answer.kind is AnswerKind.ACCEPTED:
        return True
    return False if answer.kind in _REFUSED else None


def _probe_fallback(state: _State) -> Generator[HelloRequest, HelloAnswer, bool | None]:
    """RFC 7507 §3: a hello below the server's highest version carrying TLS_FALLBACK_SCSV must be refused
    with inappropriate_fallback. Only asked when at least two versions are accepted, with the very offer
    the version probe had accepted at that version."""
    accepted = [v for v in POSTURE_VERSIONS if state.versions.get(v) is VersionVerdict.ACCEPTED]
    if len(accepted) < 2:
        return None
    version = accepted[1]
    request = HelloRequest(version, _version_offer(version), Purpose.FALLBACK, fallback_scsv=True)
    answer = yield request
    state.note(answer, request)
    if answer.kind is AnswerKind.ACCEPTED:
        return False
    if answer.kind is AnswerKind.REJECTED_ALERT and answer.alert == AlertDescription.INAPPROPRIATE_FALLBACK:
        return True
    # The same offer without the SCSV was accepted by the version probe, so any other refusal is also the
    # SCSV's doing (an asyncio/OpenSSL server closes without flushing the alert); no answer tells nothing.
    return True if answer.kind in _REFUSED else None


def _probe_groups(
    state: _State, cap: int | None, stop_when_decided: bool = False
) -> Generator[HelloRequest, HelloAnswer, bool | None]:
    """Group elimination: offer the groups not yet seen; the server names one per session, until it
    refuses (then the list is complete) or ``cap`` sessions were spent.

    A TLS 1.3 server is asked with HelloRetryRequests over every TLS 1.3 group (RFC 8446 §4.2.7, RFC 7919
    ffdhe included): there the certificate does not constrain the group. Otherwise ECDHE suites at the
    best legacy version with every curve, the deprecated ones included (a server with TLS 1.3 has a
    recommended group anyway). Below TLS 1.3 an ECDSA certificate's own curve must be offered for its
    suites to be usable (RFC 8422 §5.1), so once a found curve is left out a refusal proves nothing for
    such a server: the list is then reported incomplete. With ``stop_when_decided`` (posture mode) it
    stops, list incomplete, as soon as a curve settles ``only_deprecated_curves`` (see
    _groups_can_change_grading).
    """
    candidates: tuple[int, ...]
    if state.best_version is TlsVersion.TLS13:
        version, candidates, offer = TlsVersion.TLS13, TLS13_GROUPS_ALL, _version_offer(TlsVersion.TLS13)
    elif state.best_legacy_version is not None:
        version, candidates = state.best_legacy_version, ALL_EC_GROUPS
        offer = _suites_with_kx(version, KeyExchange.ECDHE)
    else:
        return None
    if not offer:
        return None
    remaining = [g for g in candidates if g not in state.groups]
    spent = 0
    while remaining:
        if cap is not None and spent >= cap:
            return False
        request = HelloRequest(version, offer, Purpose.GROUPS, groups=tuple(remaining))
        answer = yield request
        state.note(answer, request)
        spent += 1
        if answer.kind is AnswerKind.ACCEPTED and answer.group in remaining:
            remaining.remove(answer.group)
            if stop_when_decided and not _groups_can_change_grading(state):
                return False
            continue
        if answer.kind not in _REFUSED:
            return None
        return version is TlsVersion.TLS13 or not state.ecdsa or len(remaining) == len(candidates)
    return True


# RFC 7919 §A: the ffdhe groups' sizes, for a TLS 1.3 server that takes them (finite-field DHE too).
_FFDHE_BITS: Final = {256: 2048, 257: 3072, 258: 4096, 259: 6144, 260: 8192}


def _smallest_dh(state: _State) -> tuple[int | None, str | None]:
    """The smallest finite-field group seen: a DHE ServerKeyExchange prime or an RFC 7919 group."""
    seen = [(p.bit_length(), well_known_prime(p)) for p in state.dh_primes]
    seen += [(_FFDHE_BITS[g], f"rfc7919-ffdhe{_FFDHE_BITS[g]}") for g in state.groups if g in _FFDHE_BITS]
    return min(seen, key=lambda item: item[0], default=(None, None))


def _preferred_group(state: _State) -> int | None:
    best = state.best_version
    answer = state.answers.get(best) if best is not None else None
    return answer.group if answer is not None else None


def _fallback_required(state: _State) -> bool:
    """Posture mode asks RFC 7507 only of the servers NIST SP 800-52r2 (§3.4, TLS extension support)
    requires it of: some version below TLS 1.2 accepted and no TLS 1.3. A TLS 1.3 server protects
    TLS 1.3 clients by its downgrade sentinel (RFC 8446 §4.1.3), and one with TLS 1.2 as its lowest
    version has no fallback below TLS 1.2 to refuse; full mode asks every server with two versions."""
    legacy = (TlsVersion.TLS11, TlsVersion.TLS10, TlsVersion.SSL3)
    return state.versions.get(TlsVersion.TLS13) is not VersionVerdict.ACCEPTED and any(
        state.versions.get(v) is VersionVerdict.ACCEPTED for v in legacy)


def _groups_can_change_grading(state: _State) -> bool:
    """Posture mode eliminates curves only while the list could still make ``only_deprecated_curves``
    (scanner.grading, the one rule the group list decides) fire: never for a TLS 1.3 server (it has a
    TLS 1.3 group, RFC 8446 §9.1), and not once a curve RFC 8422 §5.1.1 does not deprecate was seen.
    The list is then partial and flagged so (groups_complete False); full mode lists every group."""
    if state.best_version is TlsVersion.TLS13:
        return False
    return all(group_class(g) is GroupClass.DEPRECATED for g in state.groups)


def _probe_key_exchange(
    state: _State, limit: int | None, dhe_known: bool | None = None
) -> Generator[HelloRequest, HelloAnswer, KeyExchangeResult]:
    """DHE, fallback and curves, after the suite questions. Posture mode passes ``limit``: no session
    beyond it (a question it leaves out stays None), the fallback hello only where NIST requires the SCSV
    and curve elimination (at most MAX_GROUP_SESSIONS) only where it can change a grade."""
    posture = limit is not None

    def room() -> bool:
        return limit is None or state.sessions < limit

    dhe = True if state.dh_primes else dhe_known
    if dhe is None and room():
        dhe = yield from _probe_dhe(state)  # the weak-class hellos could not answer it (or full mode)
    fallback: bool | None = None
    if room() and (not posture or _fallback_required(state)):
        fallback = yield from _probe_fallback(state)
    groups_complete: bool | None
    if posture and not _groups_can_change_grading(state):
        groups_complete = False
    else:
        cap = None if limit is None else max(0, min(MAX_GROUP_SESSIONS, limit - state.sessions))
        groups_complete = yield from _probe_groups(state, cap, stop_when_decided=posture)
    legacy = state.best_legacy_version
    answer = state.answers[legacy] if legacy is not None else None
    facts = answer.facts if answer is not None else None
    dh_bits, dh_group = _smallest_dh(state)
    return KeyExchangeResult(
        groups=tuple(state.groups), groups_complete=groups_complete, preferred_group=_preferred_group(state),
        dhe=dhe, dh_bits=dh_bits, dh_group=dh_group,
        secure_renegotiation=facts.secure_renegotiation if facts else None,
        compression=facts.compression != 0 if facts else None,
        extended_master_secret=facts.extended_master_secret if facts else None,
        encrypt_then_mac=_encrypt_then_mac(facts, answer.suite if answer is not None else None),
        heartbeat=facts.heartbeat if facts else None,
        ocsp_stapling=facts.status_request if facts else None,
        fallback_scsv=fallback,
    )


def _encrypt_then_mac(facts: HelloFacts | None, suite: int | None) -> bool | None:
    """Encrypt-then-MAC as one ServerHello shows it. RFC 7366 §3: a server that picks an AEAD or stream
    suite MUST NOT echo the extension, so its absence then says nothing (None); only the answer to a
    hello that picked a CBC suite, or the extension seen, is a fact."""
    if facts is None:
        return None
    if facts.encrypt_then_mac:
        return True
    picked = lookup_suite(suite) if suite is not None else None
    return False if picked is not None and picked.enc.endswith("_CBC") else None


def version_hello(version: TlsVersion) -> HelloRequest:
    """The hello both plans send to ask whether ``version`` is accepted (to re-ask it elsewhere)."""
    return HelloRequest(version, _version_offer(version), Purpose.VERSION)
# --------------------------------------------------------------------------
# Agreeing with the observation handshake
# --------------------------------------------------------------------------


QUIRK_NEEDS_SUPPORTED_VERSIONS = "version_needs_supported_versions"  # accepted only with that extension
QUIRK_VERSION_OBSERVED_ONLY = "version_seen_only_by_observation"  # no crafted hello got it accepted
QUIRK_SUITE_ON_REASK = "suite_found_on_reask"  # the enumeration missed it; offered alone it was accepted
QUIRK_SUITE_OBSERVED_ONLY = "suite_seen_only_by_observation"


def _reask_version(version: TlsVersion, quirks: list[str]) -> Generator[HelloRequest, HelloAnswer, bool]:
    """The observation negotiated ``version`` but our hello for it was refused: ask in the other shape.

    Returns whether the other shape was needed (and worked). TLS 1.3 hellos already carry
    supported_versions and SSLv3 hellos cannot, so those have no other shape to try.
    """
    name = VERSION_NAMES[version]
    if version in (TlsVersion.TLS13, TlsVersion.SSL3):
        quirks.append(f"{QUIRK_VERSION_OBSERVED_ONLY}:{name}")
        return False
    request = HelloRequest(version, _version_offer(version), Purpose.RECONCILE, supported_versions=True)
    answer = yield request
    if _version_verdict(request, answer) is VersionVerdict.ACCEPTED:
        quirks.append(f"{QUIRK_NEEDS_SUPPORTED_VERSIONS}:{name}")
        return True
    quirks.append(f"{QUIRK_VERSION_OBSERVED_ONLY}:{name}")
    return False


def _suite_contradicted(result: EnumerationResult, version: TlsVersion, known: CipherSuite) -> bool:
    if result.mode is EnumMode.FULL:
        return known.code not in result.accepted.get(version, ())
    # Posture mode lists classes, not suites: a contradiction is a claim the observed suite refutes.
    missing_weak = bool(known.weak - result.weak_classes) and result.weak_complete
    return missing_weak or (known.nist_r1 and result.nist_r1 is False) or (known.nist_r2 and result.nist_r2 is False)


def reconcile_plan(result: EnumerationResult, observed_version: TlsVersion | None, observed_suite: int | None) -> Plan:
    """Make the enumeration agree with what the observation handshake negotiated (never a contradiction).

    A version or suite the observation handshake negotiated is accepted by definition. When the
    crafted hellos said otherwise, the question is asked again once (in the other hello shape for a
    version; the suite offered alone for a suite), the answer is recorded in ``quirks``, and the
    observed fact is added either way. Yields nothing when the two already agree.
    """
    quirks = list(result.quirks)
    versions = dict(result.versions)
    other_shape = False
    if observed_version is not None and versions.get(observed_version) is not VersionVerdict.ACCEPTED:
        other_shape = yield from _reask_version(observed_version, quirks)
        versions[observed_version] = VersionVerdict.ACCEPTED
    accepted = dict(result.accepted)
    weak, nist_r1, nist_r2 = result.weak_classes, result.nist_r1, result.nist_r2
    known = lookup_suite(observed_suite) if observed_suite is not None else None
    if known is not None and observed_version is not None and _suite_contradicted(result, observed_version, known):
        answer = yield HelloRequest(observed_version, (known.code,), Purpose.RECONCILE, supported_versions=other_shape)
        found = answer.kind is AnswerKind.ACCEPTED and answer.suite == known.code
        quirks.append(f"{QUIRK_SUITE_ON_REASK if found else QUIRK_SUITE_OBSERVED_ONLY}:{known.iana_name}")
    if known is not None and observed_version is not None:
        if result.mode is EnumMode.FULL and known.code not in accepted.get(observed_version, ()):
            accepted[observed_version] = (*accepted.get(observed_version, ()), known.code)
        weak = weak | known.weak
        nist_r1 = True if known.nist_r1 else nist_r1
        nist_r2 = True if known.nist_r2 else nist_r2
    best = next((v for v in POSTURE_VERSIONS if versions.get(v) is VersionVerdict.ACCEPTED), None)
    preferred = result.preferred_version
    return EnumerationResult(
        mode=result.mode, sessions=0, versions=versions, weak_classes=weak, weak_complete=result.weak_complete,
        nist_r1=nist_r1, nist_r2=nist_r2,
        preferred_suite=result.preferred_suite if preferred == best else observed_suite,
        preferred_version=best, server_order=result.server_order, accepted=accepted,
        server_order_suites=result.server_order_suites, complete=result.complete,
        quirks=tuple(quirks), kx=result.kx,
    )
