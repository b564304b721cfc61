"""Horizontal bar charts as inline SVG strings: no library, no script, no external resource.

The SVG is static markup (rects and text), so the report renders the same in any browser, prints, and
needs nothing beyond the HTML file. Bars are scaled to the largest value of the chart, and each bar
carries its exact figure as text, so small shares stay visible without being misread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

from scanner.report.model import FigureTable
from scanner.report.stats import format_count, format_percent

__all__ = ["GRADE_COLOURS", "Bar", "Point", "bar_chart", "bars_from_table", "line_chart"]

DEFAULT_COLOUR: Final = "#3b6fb6"
# Green (A+) to dark red (F); F (no STARTTLS) is set apart from the E floor of weak TLS.
GRADE_COLOURS: Final = {
    "A+": "#1a7f37", "A": "#3fa34d", "B": "#8bb83f", "C": "#d4a72c", "D": "#e07b24", "E": "#cf4a2e", "F": "#8c1c13",
}

_LABEL_WIDTH: Final = 200  # px reserved for the category label
_BAR_WIDTH: Final = 210  # px for the longest bar
_VALUE_WIDTH: Final = 110  # px for the figure printed after a bar
_ROW: Final = 24  # px per bar
_TOP: Final = 30  # px for the title
_LABEL_CHARS: Final = 31  # labels longer than this are shortened (the full text stays in a <title>)


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float  # any non-negative magnitude; bars are scaled to the chart's largest value
    text: str  # what is printed after the bar (e.g. "35.0% (7)")
    colour: str = DEFAULT_COLOUR


def bars_from_table(table: FigureTable, keys: Sequence[str] | None = None, *, colours: bool = False) -> list[Bar]:
    """One bar per figure of ``table`` (or per key of ``keys``), valued by its share's numerator."""
    figures = [table.figure(k) for k in keys] if keys is not None else list(table.figures)
    return [
        Bar(f.label, float(f.share.numerator),
            f"{format_percent(f.share.value)} ({format_count(f.share.numerator)})",
            GRADE_COLOURS.get(f.key, DEFAULT_COLOUR) if colours else DEFAULT_COLOUR)
        for f in figures
    ]


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def bar_chart(chart_id: str, title: str, bars: Sequence[Bar]) -> str:
    """An ``<svg>`` element: ``title`` on top, one labelled bar per item; a note when there is no data."""
    width = _LABEL_WIDTH + _BAR_WIDTH + _VALUE_WIDTH
    height = _TOP + max(1, len(bars)) * _ROW + 8
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" preserveAspectRatio="xMinYMin meet">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<text class="chart-title" x="0" y="18">{escape(title)}</text>',
    ]
    largest = max((b.value for b in bars), default=0.0)
    if not bars or largest <= 0:
        parts.append(f'<text class="chart-empty" x="0" y="{_TOP + 16}">no data</text>')
    for i, bar in enumerate(bars):
        y = _TOP + i * _ROW
        length = 0.0 if largest <= 0 else max(0.0, bar.value) / largest * _BAR_WIDTH
        parts.append(
            f'<g class="bar"><title>{escape(bar.label)}: {escape(bar.text)}</title>'
            f'<text class="chart-label" x="{_LABEL_WIDTH - 8}" y="{y + 16}" text-anchor="end">'
            f"{escape(_short(bar.label))}</text>"
            f'<rect x="{_LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" height="{_ROW - 6}" '
            f'fill="{escape(bar.colour)}"/>'
            f'<text class="chart-value" x="{_LABEL_WIDTH + length + 6:.1f}" y="{y + 16}">{escape(bar.text)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Point:
    """One scan's share on a series chart: value and 95 % interval as proportions (None: no estimate)."""

    value: float | None
    low: float | None = None
    high: float | None = None


_LINE_WIDTH: Final = 440  # px of the whole chart
_LINE_HEIGHT: Final = 190
_PLOT_LEFT: Final = 44  # px for the y-axis labels
_PLOT_RIGHT: Final = 16
_PLOT_TOP: Final = 34  # px for the title
_PLOT_BOTTOM: Final = 30  # px for the x-axis labels


def line_chart(chart_id: str, title: str, points: Sequence[Point], x_labels: Sequence[str]) -> str:
    """An ``<svg>`` line chart of shares over scans (y from 0 to 100 %), with the 95 % interval as a band.

    The x labels are short (scan numbers): the page lists each scan's date and id beside the charts, so
    labels never collide however many scans a series holds.
    """
    plot_w = _LINE_WIDTH - _PLOT_LEFT - _PLOT_RIGHT
    plot_h = _LINE_HEIGHT - _PLOT_TOP - _PLOT_BOTTOM

    def x(i: int) -> float:
        return _PLOT_LEFT + (plot_w * i / (len(points) - 1) if len(points) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return _PLOT_TOP + plot_h * (1.0 - v)

    parts = [
        f'<svg class="chart line-chart" id="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title" viewBox="0 0 {_LINE_WIDTH} {_LINE_HEIGHT}" '
        f'width="{_LINE_WIDTH}" height="{_LINE_HEIGHT}" preserveAspectRatio="xMinYMin meet">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<text class="chart-title" x="0" y="18">{escape(_short_title(title))}</text>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(f'<line class="grid" x1="{_PLOT_LEFT}" x2="{_LINE_WIDTH - _PLOT_RIGHT}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}" stroke="#d1d9e0"/>'
                     f'<text class="axis" x="{_PLOT_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                     f"{tick * 100:.0f}%</text>")
    band = [(i, p) for i, p in enumerate(points) if p.low is not None and p.high is not None]
    if len(band) > 1:
        upper = " ".join(f"{x(i):.1f},{y(p.high or 0.0):.1f}" for i, p in band)
        lower = " ".join(f"{x(i):.1f},{y(p.low or 0.0):.1f}" for i, p in reversed(band))
        parts.append(f'<polygon class="ci-band" points="{upper} {lower}" fill="{DEFAULT_COLOUR}" fill-opacity="0.18"/>')
    line = [(i, p.value) for i, p in enumerate(points) if p.value is not None]
    if len(line) > 1:
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in line)
        parts.append(f'<polyline class="series-line" points="{path}" fill="none" stroke="{DEFAULT_COLOUR}" '
                     'stroke-width="2"/>')
    for i, p in enumerate(points):
        if p.value is not None:
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(p.value):.1f}" r="3.5" fill="{DEFAULT_COLOUR}">'
                         f"<title>{escape(x_labels[i])}: {escape(format_percent(p.value))}</title></circle>")
        parts.append(f'<text class="axis" x="{x(i):.1f}" y="{_LINE_HEIGHT - 10}" text-anchor="middle">'
                     f"{escape(x_labels[i])}</text>")
    if not line:
        parts.append(f'<text class="chart-empty" x="{_PLOT_LEFT}" y="{_PLOT_TOP + 20}">no data</text>')
    parts.append("</svg>")
    return "".join(parts)


_TITLE_CHARS: Final = 62  # a title longer than this is shortened on the chart (the full text is its <title>)


def _short_title(title: str) -> str:
    return title if len(title) <= _TITLE_CHARS else title[: _TITLE_CHARS - 1] + "…"
