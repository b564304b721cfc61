"""Where a scan's time goes: how full each stage's queue or pool is, how late the event loop runs.

A pipeline of bounded stages runs at the pace of its slowest stage. The stage in front of it stays
full (its producers block), the ones behind it starve. Sampling every stage's fill a few times a
second shows which one that is, without timing any single call. The event loop's lateness
(scheduled wake-up vs actual) says whether the process itself is CPU-bound: then no limit is
binding, the loop simply has no spare time.

The monitor only reads counters that the stages already keep; it changes nothing.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Gauge", "GaugeSummary", "StageMonitor", "current_rss_mb"]

# A stage at or above this share of its capacity counts as "full" in a sample.
FULL_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class Gauge:
    """One stage's occupancy: ``read()`` items out of ``capacity``."""

    name: str
    read: Callable[[], int]
    capacity: int


@dataclass(frozen=True, slots=True)
class GaugeSummary:
    name: str
    capacity: int
    mean_fill: float  # mean of read()/capacity over the samples
    full_share: float  # share of samples at >= FULL_SHARE of capacity
    peak: int

    def to_json(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "mean_fill": round(self.mean_fill, 3),
                "full_share": round(self.full_share, 3), "peak": self.peak}


@dataclass(slots=True)
class _Tally:
    total_fill: float = 0.0
    full: int = 0
    peak: int = 0


@dataclass(slots=True)
class StageMonitor:
    gauges: Sequence[Gauge]
    interval: float = 0.25
    # Work done so far (e.g. rows written), recorded with the resident set size every
    # ``series_every`` seconds: memory must stay flat as the input grows, and this series shows it.
    progress: Callable[[], int] = lambda: 0
    series_every: float = 10.0
    rss_series: list[tuple[float, int, float]] = field(default_factory=list)  # (seconds, progress, RSS MiB)
    started: float = field(default_factory=time.monotonic)
    # Time inside the cyclic garbage collector, per generation: it grows with the live heap, and in
    # a profile it hides as self time of whatever small function happened to allocate.
    gc_seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    gc_runs: list[int] = field(default_factory=lambda: [0, 0, 0])
    _gc_started: float = 0.0
    samples: int = 0
    lag_total: float = 0.0
    lag_max: float = 0.0
    peak_rss_mb: float = 0.0
    _tallies: dict[str, _Tally] = field(default_factory=dict)

    def sample(self) -> None:
        self.samples += 1
        for gauge in self.gauges:
            value = gauge.read()
            tally = self._tallies.setdefault(gauge.name, _Tally())
            share = value / gauge.capacity if gauge.capacity > 0 else 0.0
            tally.total_fill += share
            tally.full += share >= FULL_SHARE
            tally.peak = max(tally.peak, value)
        # ru_maxrss is in KiB on Linux: the process's high-water mark so far.
        self.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        elapsed = time.monotonic() - self.started
        if not self.rss_series or elapsed - self.rss_series[-1][0] >= self.series_every:
            self.rss_series.append((round(elapsed, 1), self.progress(), round(current_rss_mb(), 1)))

    async def run(self) -> None:
        """Sample until cancelled; each wake-up's lateness is the loop's lag."""
        gc.callbacks.append(self._on_gc)
        try:
            while True:
                due = time.monotonic() + self.interval
                await asyncio.sleep(self.interval)
                lag = max(0.0, time.monotonic() - due)
                self.lag_total += lag
                self.lag_max = max(self.lag_max, lag)
                self.sample()
        finally:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            generation = info.get("generation", 2)
            self.gc_seconds[generation] += time.perf_counter() - self._gc_started
            self.gc_runs[generation] += 1

    def summaries(self) -> list[GaugeSummary]:
        out = []
        for gauge in self.gauges:
            tally = self._tallies.get(gauge.name, _Tally())
            n = max(1, self.samples)
            out.append(GaugeSummary(gauge.name, gauge.capacity, tally.total_fill / n, tally.full / n, tally.peak))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "interval_s": self.interval,
            "loop_lag_ms": {"mean": round(1000 * self.lag_total / max(1, self.samples), 2),
                            "max": round(1000 * self.lag_max, 1)},
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "gc": {"seconds": [round(x, 2) for x in self.gc_seconds], "collections": list(self.gc_runs)},
            "stages": {s.name: s.to_json() for s in self.summaries()},
            "rss_series": [list(point) for point in self.rss_series],
        }


def current_rss_mb() -> float:
    """Resident set size now (not the peak), from /proc/self/statm; 0 where /proc is missing."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return resident_pages * resource.getpagesize() / (1 << 20)
