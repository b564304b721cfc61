"""Render a ``SeriesReport`` as a self-contained HTML page (SVG charts, one hashed inline script for the
searchable regression list), Markdown and JSON, and write the three files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any, Final

from scanner.report.charts import Point, line_chart
from scanner.report.drill import DRILL_CSS, DRILL_SCRIPT, drill_table, script_csp_source
from scanner.report.model import Delta, ReportFiles
from scanner.report.render import PAGE_CSS, jsonable, settings_warning, write_atomic
from scanner.report.series import SeriesFigure, SeriesReport, Transition
from scanner.report.stats import format_ci, format_count, format_percent, format_points, format_points_interval
from scanner.version import __version__

__all__ = ["SERIES_FORMAT_VERSION", "render_series_html", "render_series_json", "render_series_markdown",
           "write_series"]

SERIES_FORMAT_VERSION: Final = "1"  # bump when series.json changes shape

_VIEWS: Final = (("cross", "Cross-section: all domains of each scan"),
                 ("panel", "Panel: only the domains present in every scan"))
_SERIES_CSS: Final = """
.wide { overflow-x: auto; } table.series { table-layout: auto; } table.series td:first-child { min-width: 14em; }
table.matrix { table-layout: auto; width: auto; } table.matrix td.zero { color: var(--line); }
b.sig { color: #b42318; }
"""


def _label(i: int) -> str:
    return str(i + 1)


def _change_text(delta: Delta) -> str:
    return format_points(delta.points) + (" *" if delta.significant else "")


def _warnings(report: SeriesReport) -> list[str]:
    return [f"scan {_label(i)}: {settings_warning(s.settings_differences)}"
            for i, s in enumerate(report.scans) if s.settings_differences]


# --- HTML ------------------------------------------------------------------------------------------


def _html_scans(report: SeriesReport) -> str:
    rows = "".join(
        f"<tr><td class=num>{_label(i)}</td><td>{escape(s.started_at)}</td><td>{escape(s.scan_id)}</td>"
        f"<td class=num>{format_count(s.domains)}</td><td>{escape(s.out_dir)}</td></tr>"
        for i, s in enumerate(report.scans)
    )
    return ('<div class="wide"><table class="series" id="t-scans"><caption>Scans, ordered by start</caption>'
            "<thead><tr><th class=num>#</th><th>started (UTC)</th><th>scan id</th><th class=num>domains</th>"
            f"<th>dataset</th></tr></thead><tbody>{rows}</tbody></table></div>")


def _html_figure_table(report: SeriesReport, view: str) -> str:
    n = len(report.scans)
    head = "<th>figure</th>" + "".join(f"<th class=num>scan {_label(i)}</th>" for i in range(n))
    head += "".join(f"<th class=num>{_label(i)} → {_label(i + 1)}</th>" for i in range(n - 1))
    rows = []
    for fig in (f for f in report.figures if f.view == view):
        cells = f"<td>{escape(fig.label)}</td>"
        cells += "".join(
            f'<td class=num>{escape(format_percent(s.value))}<br><span class="unit">{format_count(s.numerator)} / '
            f"{format_count(s.denominator)}<br>{escape(format_ci(s))}</span></td>" for s in fig.shares)
        for d in fig.changes:
            flag = ' <b class="sig" title="the 95% interval excludes zero">*</b>' if d.significant else ""
            cells += (f'<td class=num>{escape(format_points(d.points))}{flag}<br><span class="unit">'
                      f"{escape(format_points_interval(d.interval))}</span></td>")
        rows.append(f"<tr>{cells}</tr>")
    return (f'<div class="wide"><table class="series figures" id="t-series-{view}"><caption>Share per scan (n / N, '
            "95% Wilson interval) and change between consecutive scans (95% Newcombe interval; * excludes zero)"
            f"</caption><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _html_charts(report: SeriesReport, view: str) -> str:
    labels = [_label(i) for i in range(len(report.scans))]
    charts = []
    for fig in (f for f in report.figures if f.view == view):
        points = [Point(s.value, s.ci.low if s.ci else None, s.ci.high if s.ci else None) for s in fig.shares]
        charts.append(line_chart(f"chart-{view}-{fig.key}", fig.label, points, labels))
    return '<div class="charts">' + "".join(charts) + "</div>"


def _html_matrix(t: Transition) -> str:
    head = "<th>from \\ to</th>" + "".join(f"<th class=num>{escape(s)}</th>" for s in t.states)
    body = "".join(
        f"<tr><th>{escape(old)}</th>" + "".join(
            f'<td class="num{" zero" if n == 0 else ""}">{format_count(n)}</td>' for n in t.counts[i]) + "</tr>"
        for i, old in enumerate(t.states)
    )
    what = "STARTTLS verdict" if t.kind == "starttls" else "grade"
    return (f'<div class="wide"><table class="matrix" id="m-{t.kind}-{t.from_scan}"><caption>{escape(what)}: scan '
            f"{_label(t.from_scan)} → scan {_label(t.to_scan)} (domains in both scans)</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def _regression_rows(report: SeriesReport) -> list[list[str]]:
    return [[r.domain, f"{_label(r.from_scan)} → {_label(r.to_scan)}", r.old_starttls or "—", r.new_starttls or "—",
             r.old_grade or "—", r.new_grade or "—", ", ".join(r.reasons)] for r in report.regressions]


def render_series_html(report: SeriesReport) -> str:
    warnings = "".join(f'<p class="warn settings-warning">{escape(w)}</p>' for w in _warnings(report))
    views = "".join(
        f'<section id="{view}"><h2>{escape(title)}</h2>'
        + (f'<p class="note">{format_count(report.panel_domains)} domains are present in every scan.</p>'
           if view == "panel" else "")
        + _html_charts(report, view) + _html_figure_table(report, view) + "</section>"
        for view, title in _VIEWS
    )
    matrices = "".join(_html_matrix(t) for t in report.transitions)
    shown = len(report.regressions)
    listed = "" if shown == report.regressions_total else f"; listed: the first {format_count(shown)}"
    regressions = drill_table(
        "drill-regressions", "Domains that regressed between consecutive scans",
        ["domain", "scans", "STARTTLS before", "STARTTLS after", "grade before", "grade after", "regressed in"],
        _regression_rows(report), page_size=25)
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src {script_csp_source()}")
    title = f"SMTP STARTTLS series report — {len(report.scans)} scans"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f'<link rel="icon" href="data:,"><title>{escape(title)}</title>'
        f"<style>{PAGE_CSS}{DRILL_CSS}{_SERIES_CSS}</style></head><body>"
        f"<header><h1>SMTP STARTTLS series report</h1>{warnings}</header>"
        f'<section id="scans"><h2>Scans</h2>{_html_scans(report)}<p class="note">Charts and tables number the '
        "scans as here. Shares are of mail domains unless the figure says otherwise; the band around each line is "
        "the 95% Wilson interval.</p></section>"
        + views
        + f'<section id="transitions"><h2>Transitions between consecutive scans</h2>{matrices}</section>'
        f'<section id="regressions"><h2>Domains that regressed</h2><p>Regressed: <b>'
        f"{format_count(report.regressions_total)}</b> (domain, scan pair){listed}. "
        "STARTTLS regresses from all to some or none, or from some to none; a grade regresses when it drops; a "
        "certificate when every TLS MX had a valid one and now not. A verdict that became incomplete is not a "
        f"regression (nothing was measured).</p>{regressions}</section>"
        f"<footer>smtp-tls-survey {escape(__version__)} · series format {SERIES_FORMAT_VERSION} · generated "
        f"{escape(report.generated_at)} in {report.build_seconds:.2f} s</footer>"
        f"<script>{DRILL_SCRIPT}</script></body></html>\n"
    )


# --- Markdown --------------------------------------------------------------------------------------


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _md_view(report: SeriesReport, view: str, title: str) -> list[str]:
    n = len(report.scans)
    header = ["figure", *[f"scan {_label(i)}" for i in range(n)], *[f"{_label(i)} → {_label(i + 1)}"
                                                                     for i in range(n - 1)]]
    lines = [f"## {title}", "", _md_row(header), _md_row(["---"] + ["---:"] * (len(header) - 1))]
    figs: list[SeriesFigure] = [f for f in report.figures if f.view == view]
    for fig in figs:
        cells = [fig.label] + [f"{format_percent(s.value)} ({format_count(s.numerator)}/{format_count(s.denominator)}; "
                               f"{format_ci(s)})" for s in fig.shares]
        cells += [f"{_change_text(d)} ({format_points_interval(d.interval)})" for d in fig.changes]
        lines.append(_md_row(cells))
    return [*lines, ""]


def render_series_markdown(report: SeriesReport) -> str:
    lines = ["# SMTP STARTTLS series report", ""]
    lines += [f"**Warning:** {w}" for w in _warnings(report)] + ([""] if _warnings(report) else [])
    lines += ["## Scans", "", _md_row(["#", "started (UTC)", "scan id", "domains", "dataset"]),
              _md_row(["---:", "---", "---", "---:", "---"])]
    lines += [_md_row([_label(i), s.started_at, s.scan_id, format_count(s.domains), s.out_dir])
              for i, s in enumerate(report.scans)]
    lines.append("")
    for view, title in _VIEWS:
        lines += _md_view(report, view, title)
    lines += ["Changes: percentage points, 95% Newcombe interval in brackets; * marks an interval excluding zero.", "",
              "## Transitions between consecutive scans", ""]
    for t in report.transitions:
        lines += [f"### {'STARTTLS verdict' if t.kind == 'starttls' else 'grade'}: scan {_label(t.from_scan)} → "
                  f"scan {_label(t.to_scan)}", "", _md_row(["from \\ to", *t.states]),
                  _md_row(["---"] + ["---:"] * len(t.states))]
        lines += [_md_row([old, *(format_count(n) for n in t.counts[i])]) for i, old in enumerate(t.states)]
        lines.append("")
    lines += ["## Domains that regressed", "", f"Regressed: **{format_count(report.regressions_total)}**.", "",
              _md_row(["domain", "scans", "STARTTLS before", "STARTTLS after", "grade before", "grade after",
                       "regressed in"]), _md_row(["---"] * 7)]
    lines += [_md_row(r) for r in _regression_rows(report)]
    lines += ["", f"*smtp-tls-survey {__version__} · series format {SERIES_FORMAT_VERSION} · generated "
              f"{report.generated_at}*", ""]
    return "\n".join(lines)


# --- JSON and files --------------------------------------------------------------------------------


def series_to_dict(report: SeriesReport) -> dict[str, Any]:
    data: dict[str, Any] = {"series_format": SERIES_FORMAT_VERSION}
    data.update(jsonable(report))
    return data


def render_series_json(report: SeriesReport) -> str:
    return json.dumps(series_to_dict(report), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write_series(report: SeriesReport, dest: Path) -> ReportFiles:
    """Write ``series.html``, ``series.md`` and ``series.json`` into the directory ``dest`` (created)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(dest / "series.html", dest / "series.md", dest / "series.json")
    write_atomic(files.html, render_series_html(report))
    write_atomic(files.markdown, render_series_markdown(report))
    write_atomic(files.json, render_series_json(report))
    return files
