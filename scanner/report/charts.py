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

__all__ = ["GRADE_COLOURS", "Bar", "bar_chart", "bars_from_table"]

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
