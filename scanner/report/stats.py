"""Shares, Wilson score intervals and their formatting (pure functions, no I/O).

Why Wilson: the normal ("Wald") interval p ± z·sqrt(p(1-p)/n) collapses to zero width at p = 0 or 1 and
undercovers for small n or extreme p, which is exactly where survey shares live (0.01 % MTA-STS
adoption, 99 % STARTTLS at large providers). The Wilson score interval (Wilson 1927; Newcombe 1998,
"Two-sided confidence intervals for the single proportion", method 3) stays inside [0, 1] and keeps
close to nominal coverage there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "Z_95",
    "DifferenceInterval",
    "Interval",
    "Share",
    "format_ci",
    "format_count",
    "format_percent",
    "format_points",
    "format_points_interval",
    "newcombe_difference",
    "wilson_interval",
]

# Two-sided 95 %: the 0.975 quantile of the standard normal distribution.
Z_95: Final = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Interval:
    """A closed interval of proportions, both ends in [0, 1]."""

    low: float
    high: float


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval | None:
    """Wilson score interval for ``successes`` out of ``trials``; None when ``trials`` is 0 (no estimate).

    centre = (p + z²/2n) / (1 + z²/n),  half-width = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²).
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return None
    n = float(trials)
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # Clamp rounding noise only: mathematically the interval is inside [0, 1] and contains p.
    return Interval(max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p)))


@dataclass(frozen=True, slots=True)
class DifferenceInterval:
    """A 95 % interval for a difference of two proportions (new − old), both ends in [-1, 1]."""

    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """The change is unlikely to be sampling noise alone (the interval lies on one side of 0)."""
        return self.low > 0.0 or self.high < 0.0


def newcombe_difference(
    new_successes: int, new_trials: int, old_successes: int, old_trials: int, z: float = Z_95,
) -> DifferenceInterval | None:
    """Newcombe's hybrid score interval for p_new − p_old (None when either side has no trials).

    Newcombe (1998), "Interval estimation for the difference between independent proportions: comparison of
    eleven methods", Statistics in Medicine 17:873-890, method 10: with Wilson intervals (l1, u1) for p1 and
    (l2, u2) for p2, δ = p1 − p2 has  L = δ − sqrt((p1 − l1)² + (u2 − p2)²),  U = δ + sqrt((u1 − p1)² + (p2 − l2)²).
    Like Wilson's, it stays inside [-1, 1] and keeps near-nominal coverage at shares close to 0 or 1.
    """
    first, second = wilson_interval(new_successes, new_trials, z), wilson_interval(old_successes, old_trials, z)
    if first is None or second is None:
        return None
    p1, p2 = new_successes / new_trials, old_successes / old_trials
    delta = p1 - p2
    low = delta - math.sqrt((p1 - first.low) ** 2 + (second.high - p2) ** 2)
    high = delta + math.sqrt((first.high - p1) ** 2 + (p2 - second.low) ** 2)
    return DifferenceInterval(max(-1.0, min(low, delta)), min(1.0, max(high, delta)))


@dataclass(frozen=True, slots=True)
class Share:
    """``numerator`` of ``denominator``; ``ci`` is the 95 % Wilson interval when the share estimates a
    population proportion, None for plain counts (or when the denominator is 0)."""

    numerator: int
    denominator: int
    ci: Interval | None = None

    def __post_init__(self) -> None:
        if self.denominator < 0 or self.numerator < 0 or self.numerator > self.denominator:
            raise ValueError(f"a share needs 0 <= numerator <= denominator, got {self.numerator}/{self.denominator}")

    @classmethod
    def estimate(cls, numerator: int, denominator: int) -> Share:
        """A share that estimates a population proportion: carries its Wilson interval."""
        return cls(numerator, denominator, wilson_interval(numerator, denominator))

    @classmethod
    def count(cls, numerator: int, denominator: int) -> Share:
        """A descriptive share (e.g. of the input list's lines): no interval."""
        return cls(numerator, denominator, None)

    @property
    def value(self) -> float | None:
        """The proportion, or None for 0/0 (undefined, never reported as 0 %)."""
        return self.numerator / self.denominator if self.denominator else None


def format_percent(value: float | None) -> str:
    """``0.35`` → ``35.0%``; tiny non-zero shares keep two significant digits (``0.012%``), never ``0.0%``."""
    if value is None:
        return "n/a"
    percent = value * 100.0
    if percent == 0.0 or percent >= 0.1:
        return f"{percent:.1f}%"
    decimals = min(6, 1 - math.floor(math.log10(percent)))
    return f"{percent:.{decimals}f}%"


def format_count(value: int) -> str:
    """Thousands separated by a thin space-free comma: ``1234567`` → ``1,234,567``."""
    return f"{value:,}"


def format_ci(share: Share) -> str:
    """``25.1–46.2%`` for an estimate; ``n/a`` for 0/0 estimates; ``—`` for counts without an interval."""
    if share.ci is None:
        return "n/a" if share.denominator == 0 else "—"
    low, high = format_percent(share.ci.low), format_percent(share.ci.high)
    return f"{low.removesuffix('%')}–{high}"


def format_points_interval(interval: DifferenceInterval | None) -> str:
    """``+0.5 to +4.1 pp`` (the interval of a change, in percentage points); ``n/a`` when undefined."""
    if interval is None:
        return "n/a"
    return f"{interval.low * 100:+.1f} to {interval.high * 100:+.1f} pp"


def format_points(delta: float | None) -> str:
    """A change of share in percentage points, signed: ``+2.5 pp``; ``n/a`` when undefined."""
    if delta is None:
        return "n/a"
    if abs(delta) < 0.05:
        return "±0.0 pp"
    return f"{delta:+.1f} pp"
