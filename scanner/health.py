"""Is our side broken? Sliding windows over DNS query and probe outcomes (README: "When our side is broken").

The Internet is messy: some domains' name servers time out, some addresses are unreachable. That is
data. But when nearly *every* query fails, the resolver is dead; when nearly every connection finds no
route, our uplink is. Recording that as the Internet's state would produce a "complete" scan that
measured nothing, so the scan stops instead (stop intake, commit, exit ExitCode.UNAVAILABLE) and the
same command resumes it once the problem is fixed. Pure bookkeeping: no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from scanner.config import HealthConfig
from scanner.status import DnsOutcome, FailureClass

__all__ = ["DNS_FAILURES", "PROBE_FAILURES", "Breakdown", "FailureWindow", "HealthWatch"]

# Per DNS query: the resolver gave no usable verdict about the name (NXDOMAIN and NODATA are verdicts).
DNS_FAILURES = frozenset({DnsOutcome.TIMEOUT, DnsOutcome.SERVFAIL, DnsOutcome.REFUSED, DnsOutcome.ERROR})
# Per probe: our host could not send the packet at all (no route, or another local socket error such
# as EADDRNOTAVAIL). Timeouts and refusals are the far side's answer and stay out.
PROBE_FAILURES = frozenset({FailureClass.NO_ROUTE, FailureClass.NETWORK_ERROR})


class FailureWindow:
    """The share of failures among the last ``size`` outcomes; trips when it reaches ``threshold``.

    It never trips before ``size`` outcomes were seen: a handful of early failures is not a trend.
    """

    __slots__ = ("_outcomes", "failures", "last_detail", "seen", "threshold")

    def __init__(self, size: int, threshold: float) -> None:
        self._outcomes: deque[bool] = deque(maxlen=size)
        self.threshold = threshold
        self.failures = 0  # in the window
        self.seen = 0
        self.last_detail = ""

    @property
    def size(self) -> int:
        return self._outcomes.maxlen or 0

    def add(self, failed: bool, detail: str = "") -> bool:
        """Record one outcome; True when the window is full and its failure share reaches the threshold."""
        if len(self._outcomes) == self.size and self._outcomes[0]:
            self.failures -= 1
        self._outcomes.append(failed)
        self.seen += 1
        if failed:
            self.failures += 1
            self.last_detail = detail
        return len(self._outcomes) == self.size and self.failures >= self.threshold * self.size


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Why the scan concluded that our side is broken."""

    kind: str  # "dns" or "probe"
    failures: int
    window: int
    last_detail: str

    def describe(self, resolvers: str) -> str:
        if self.kind == "dns":
            what = f"{self.failures} of the last {self.window} DNS queries to {resolvers} failed"
            fix = "check the resolver"
            knobs = "--dns-failure-window/--dns-failure-threshold"
        else:
            what = f"{self.failures} of the last {self.window} probes found no route or a local network error"
            fix = "check this host's network"
            knobs = "--probe-failure-window/--probe-failure-threshold"
        return (f"{what} (last: {self.last_detail}): our side looks broken, not the Internet. The scan stopped "
                f"and is NOT complete; everything committed is kept. {fix.capitalize()}, then run the same "
                f"command again to resume (limits: {knobs}).")


class HealthWatch:
    """Both windows of one scan; calls ``on_breakdown`` once, the first time one of them trips."""

    def __init__(self, config: HealthConfig, on_breakdown: Callable[[Breakdown], None]) -> None:
        self._dns = FailureWindow(config.dns_window, config.dns_threshold)
        self._probes = FailureWindow(config.probe_window, config.probe_threshold)
        self._on_breakdown = on_breakdown
        self.breakdown: Breakdown | None = None

    @property
    def dns_seen(self) -> int:
        """DNS outcomes observed so far (a clock for rows held until the window has moved past them)."""
        return self._dns.seen

    @property
    def dns_window(self) -> int:
        return self._dns.size

    def dns(self, outcome: DnsOutcome, detail: str) -> None:
        if self._dns.add(outcome in DNS_FAILURES, detail):
            self._trip("dns", self._dns)

    def probe(self, failure: FailureClass | None, detail: str) -> None:
        if self._probes.add(failure in PROBE_FAILURES, detail):
            self._trip("probe", self._probes)

    def _trip(self, kind: str, window: FailureWindow) -> None:
        if self.breakdown is None:
            self.breakdown = Breakdown(kind, window.failures, window.size, window.last_detail)
            self._on_breakdown(self.breakdown)
