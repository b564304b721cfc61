"""Render a ``Report`` as a self-contained HTML page, Markdown and JSON, and write the three files.

The HTML carries its CSS inline and its charts as inline SVG; a Content-Security-Policy meta tag forbids
every external load (and scripts), so opening the file never touches the network.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from html import escape
from pathlib import Path
from typing import Any, Final

from scanner.exit_codes import ExitCode
from scanner.report.charts import Bar, bar_chart, bars_from_table
from scanner.report.drill import DRILL_CSS, DRILL_SCRIPT, drill_table, script_csp_source
from scanner.report.model import (
    Basis,
    Citation,
    Comparison,
    Delta,
    Figure,
    FigureTable,
    ProviderRow,
    PublishedValue,
    Report,
    ReportFiles,
    Section,
)
from scanner.report.queries import ReportError
from scanner.report.stats import (
    Share,
    format_ci,
    format_count,
    format_percent,
    format_points,
    format_points_interval,
)
from scanner.version import __version__

__all__ = ["PAGE_CSS", "REPORT_FORMAT_VERSION", "jsonable", "key_figures", "render_html", "render_json",
           "render_markdown", "report_to_dict", "settings_warning", "write_atomic", "write_report"]

REPORT_FORMAT_VERSION: Final = "2"  # bump when report.json changes shape (2: change intervals, settings)

PAGE_CSS: Final = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --band: #f6f8fa; --pub: #fff8e1; --accent: #3b6fb6; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1060px; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 21px; margin: 36px 0 8px; border-bottom: 2px solid var(--line);
     padding-bottom: 4px; } h3 { font-size: 16px; margin: 22px 0 6px; }
.meta { color: var(--muted); margin: 0 0 14px; } .meta b { color: var(--ink); font-weight: 600; }
nav ol { columns: 3; margin: 8px 0 0; padding-left: 20px; } nav a { color: var(--accent); text-decoration: none; }
table { border-collapse: collapse; margin: 6px 0 4px; width: 100%; font-size: 14px; table-layout: fixed; }
table.figures th:first-child { width: 46%; } table.changes th:first-child { width: 40%; }
table.figures.with-baseline th:first-child { width: 30%; }
td.num.ci-change, .with-baseline td.num { white-space: normal; }
table.compare th:first-child { width: 24%; } table.compare th:nth-child(2) { width: 46%; }
table.providers { table-layout: auto; } .wide { overflow-x: auto; }
td { overflow-wrap: anywhere; }
caption { text-align: left; font-weight: 600; padding: 4px 0; } caption .unit { font-weight: 400; color: var(--muted); }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; vertical-align: top; }
th { text-align: left; background: var(--band); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; } td.num { white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
tr.published td { background: var(--pub) !important; font-style: italic; }
tr.ours td:first-child { font-weight: 600; }
p.note { color: var(--muted); font-size: 13px; margin: 2px 0 14px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(440px, 100%), 1fr)); gap: 16px;
          margin: 10px 0; }
svg.chart { width: 100%; height: auto; background: #fff; border: 1px solid var(--line); border-radius: 4px;
            padding: 6px; }
svg.chart text { font: 12px system-ui, "DejaVu Sans", sans-serif; fill: var(--ink); }
svg.chart .chart-title { font-weight: 600; font-size: 13px; } svg.chart .chart-value { fill: var(--muted); }
.warn { background: #fff1f0; border-left: 4px solid #b42318; padding: 6px 10px; }
.grade { display: inline-block; min-width: 2.2em; padding: 0 4px; border-radius: 3px; color: #fff; text-align: center;
         font-weight: 600; }
.pair { white-space: nowrap; margin-right: 6px; } dt { font-weight: 600; margin-top: 6px; } dd { margin-left: 18px; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; }
/* Phones: each table scrolls sideways on its own (columns keep their natural width, text never overlaps). */
@media (max-width: 700px) {
  body { padding: 12px 10px 40px; } nav ol { columns: 1; } h1 { font-size: 22px; }
  table { display: block; overflow-x: auto; width: auto; max-width: 100%; }
}
"""

_GRADE_CSS_COLOURS: Final = {
    "A+": "#1a7f37", "A": "#3fa34d", "B": "#8bb83f", "C": "#b8901f", "D": "#e07b24", "E": "#cf4a2e", "F": "#8c1c13",
}

DeltaMap = dict[tuple[str, str], Delta]


# --- derived views ---------------------------------------------------------------------------------


def key_figures(report: Report) -> list[Figure]:
    """Headline figures; each key is ``<table key>/<figure key>`` of the table it comes from, except
    ``grades.domain/A_or_better`` (A+ and A summed)."""
    grades = report.grades_domain
    a_or_better = Share.estimate(grades.get("A+").numerator + grades.get("A").numerator, grades.get("A").denominator)
    picks = (
        (report.starttls, "all", "Mail domains with STARTTLS on every MX"),
        (report.starttls_decided, "all", "… of domains with a definite verdict"),
        (report.versions_domain, "tls13", "Domains reaching TLS 1.3 on every TLS MX"),
        (report.certs_address, "trusted", "TLS addresses with a trusted, unexpired chain"),
        (report.certs_domain, "valid_all", "Domains whose every TLS MX has a valid certificate"),
        (report.mta_sts, "active", "Domains with an active MTA-STS policy"),
        (report.tlsrpt, "valid", "Domains with a valid TLS-RPT record"),
        (report.dane_domains, "tlsa", "Domains with TLSA records on an MX"),
    )
    figures = [Figure(f"{t.key}/{k}", label, t.get(k)) for t, k, label in picks]
    figures.append(Figure(f"{grades.key}/{_A_OR_BETTER}", "Graded domains with A or A+", a_or_better))
    figures.append(Figure(f"{report.forced_tls.key}/safe", "Domains to which TLS can safely be forced",
                          report.forced_tls.get("safe")))
    return figures


_A_OR_BETTER: Final = "A_or_better"


def _key_deltas(figures: Sequence[Figure], deltas: DeltaMap) -> DeltaMap:
    """Deltas of the key figures, keyed like a table named "key"."""
    out: DeltaMap = {}
    for fig in figures:
        table_key, _, fig_key = fig.key.partition("/")
        if fig_key != _A_OR_BETTER:
            if (table_key, fig_key) in deltas:
                out[("key", fig.key)] = deltas[(table_key, fig_key)]
            continue
        plus, a = deltas.get((table_key, "A+")), deltas.get((table_key, "A"))
        if plus is None or a is None or plus.old is None or a.old is None:
            continue
        old = Share.estimate(plus.old.numerator + a.old.numerator, a.old.denominator)
        out[("key", fig.key)] = Delta(table_key, fig_key, fig.label, old, fig.share)
    return out


def _delta_map(report: Report) -> DeltaMap:
    if report.baseline is None:
        return {}
    return {(d.table_key, d.figure_key): d for d in report.baseline.deltas}


def _charts(report: Report) -> dict[Section, list[str]]:
    grades = report.grades_domain
    dns = report.dns_failures
    return {
        Section.FUNNEL: [bar_chart("chart-funnel", "Probe funnel (addresses)", bars_from_table(
            report.probe_funnel, ["connected", "banner_220", "ehlo", "advertised", "starttls_220", "tls_ok"]))],
        Section.STARTTLS: [bar_chart("chart-starttls", "STARTTLS per mail domain", bars_from_table(
            report.starttls, ["all", "some", "none", "incomplete"]))],
        Section.TLS: [
            bar_chart("chart-versions", "Highest TLS version per address", bars_from_table(report.versions_address)),
            bar_chart("chart-versions-domain", "Highest TLS version per domain",
                      bars_from_table(report.versions_domain)),
            bar_chart("chart-version-support", "Versions accepted (enumerated addresses)",
                      _share_bars(report.version_support)),
        ],
        Section.GRADES: [bar_chart("chart-grades", "Grade per domain",
                                   bars_from_table(grades, [g.key for g in grades.figures if g.key != "ungraded"],
                                                   colours=True))],
        Section.PROVIDERS: [
            bar_chart("chart-providers", "Top MX providers (share of mail domains)",
                      bars_from_table(report.provider_shares)),
            bar_chart("chart-provider-posture", "STARTTLS on every MX, per top provider", _posture_bars(report)),
        ],
        Section.FAILURES: [
            bar_chart("chart-probe-failures", "Probe failures by status / class",
                      bars_from_table(report.probe_failures)),
            bar_chart("chart-dns-failures", "DNS failures by class (domains)",
                      [b for b in bars_from_table(dns) if b.value > 0] or bars_from_table(dns)),
        ],
    }


def _share_bars(table: FigureTable) -> list[Bar]:
    """One bar per figure valued by its share (for tables whose rows have different denominators)."""
    return [Bar(f.label, 100.0 * (f.share.value or 0.0), f"{format_percent(f.share.value)} "
                f"({format_count(f.share.numerator)}/{format_count(f.share.denominator)})") for f in table.figures]


def _posture_bars(report: Report) -> list[Bar]:
    return [Bar(r.provider, 100.0 * (r.starttls_all.value or 0.0), _pct_of(r.starttls_all)) for r in report.providers]


# --- HTML ------------------------------------------------------------------------------------------


def _num(value: str, cls: str = "num") -> str:
    return f'<td class="{cls}">{escape(value)}</td>'


def _delta_cells(delta: Delta | None) -> str:
    if delta is None:
        return _num("n/a") + _num("n/a")
    # No colour for up or down: whether a change is good depends on the row (more TLS 1.3 is, more F is not).
    old = "not listed" if delta.old is None else format_percent(delta.old.value)
    return _num(old) + _num(format_points(delta.points))


def _html_figure_table(table: FigureTable, deltas: DeltaMap, with_baseline: bool, coverage: str = "") -> str:
    estimate = table.basis is Basis.ESTIMATE
    head = "<th>figure</th><th class=num>n</th><th class=num>of</th><th class=num>share</th>"
    head += "<th class=num>95% CI</th>" if estimate else ""
    head += ("<th class=num>baseline</th><th class=num>change</th><th class=num>95% CI of change</th>"
             if with_baseline else "")
    rows = []
    for fig in table.figures:
        cells = f"<td>{escape(fig.label)}</td>" + _num(format_count(fig.share.numerator))
        cells += _num(format_count(fig.share.denominator)) + _num(format_percent(fig.share.value))
        cells += _num(format_ci(fig.share)) if estimate else ""
        cells += _delta_cells(deltas.get((table.key, fig.key))) if with_baseline else ""
        rows.append(f"<tr>{cells}</tr>")
    if not rows:
        span = 4 + estimate + 3 * with_baseline
        rows.append(f'<tr><td colspan="{span}">none ({format_count(0)} {escape(table.unit)})</td></tr>')
    covers = f"; coverage: {coverage}" if coverage else ""
    caption = (f'{escape(table.title)} <span class="unit">— {escape(table.unit)}; denominator: '
               f'{escape(table.denominator)}{escape(covers)}</span>')
    note = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    kind = "figures with-baseline" if with_baseline else "figures"
    return (f'<table class="{kind}" id="t-{escape(table.key)}"><caption>{caption}</caption>'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{note}')


def _grade_badges(grades: Iterable[tuple[str, int]]) -> str:
    return " ".join(
        f'<span class="pair"><span class="grade" style="background:{_GRADE_CSS_COLOURS.get(g, "#555")}">'
        f"{escape(g)}</span>&nbsp;{n}</span>"
        for g, n in grades
    )


def _html_providers(rows: Sequence[ProviderRow]) -> str:
    head = ("<th>provider</th><th class=num>domains</th><th class=num>share</th><th class=num>95% CI</th>"
            "<th class=num>addresses</th><th class=num>STARTTLS all</th><th class=num>TLS 1.3</th>"
            "<th class=num>forced TLS safe</th><th>grades</th>")
    body = "".join(
        f"<tr><td>{escape(r.provider)}</td>" + _num(format_count(r.domains.numerator))
        + _num(format_percent(r.domains.value)) + _num(format_ci(r.domains)) + _num(format_count(r.addresses))
        + _num(_pct_of(r.starttls_all)) + _num(_pct_of(r.tls13)) + _num(_pct_of(r.forced_tls_safe))
        + f"<td>{_grade_badges((g.grade, g.count) for g in r.grades)}</td></tr>"
        for r in rows
    ) or '<tr><td colspan="9">no mail domains</td></tr>'
    caption = ('Posture of the top providers <span class="unit">— STARTTLS all and forced TLS: of the '
               "provider's mail domains; TLS 1.3: of its domains with a TLS address</span>")
    return (f'<div class="wide"><table class="providers" id="t-providers.posture"><caption>{caption}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def _pct_of(share: Share) -> str:
    return f"{format_percent(share.value)} ({format_count(share.numerator)}/{format_count(share.denominator)})"


def _html_comparison(comparison: Comparison) -> str:
    head = ("<th>source</th><th>population / unit</th><th class=num>value</th><th class=num>n / N</th>"
            "<th class=num>95% CI</th>")
    ours = "".join(
        f'<tr class="ours"><td>this scan</td><td>{escape(f.label)}</td>' + _num(format_percent(f.share.value))
        + _num(f"{format_count(f.share.numerator)} / {format_count(f.share.denominator)}") + _num(format_ci(f.share))
        + "</tr>"
        for f in comparison.ours
    )
    pub = "".join(_html_published(p) for p in comparison.published)
    note = f'<p class="note">{escape(comparison.note)}</p>' if comparison.note else ""
    return (f'<table class="compare" id="c-{escape(comparison.key)}"><caption>{escape(comparison.title)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{ours}{pub}</tbody></table>{note}")


def _html_published(p: PublishedValue) -> str:
    note = f" ({escape(p.note)})" if p.note else ""
    return (f'<tr class="published"><td>published: {escape(p.citation.short)} ({escape(p.where)})</td>'
            f"<td>{escape(p.population)}: {escape(p.text)}{note}</td>" + _num(_published_value(p))
            + _num("—") + _num("—") + "</tr>")


def _citations(report: Report) -> list[Citation]:
    """The publications quoted by the comparisons, in order of first use."""
    seen: list[Citation] = []
    for comparison in report.comparisons:
        seen += [p.citation for p in comparison.published if p.citation not in seen]
    return seen


def _html_references(report: Report) -> str:
    return "".join(f"<li>{escape(c.text())}</li>" for c in _citations(report))


def _published_value(p: PublishedValue) -> str:
    return "qualitative" if p.value is None else format_percent(p.value)


def _change_cell(old: str | None, new: str | None, present: tuple[bool, bool]) -> str:
    left = escape(old or "—") if present[0] else "<i>absent</i>"
    right = escape(new or "—") if present[1] else "<i>absent</i>"
    return f"<td>{left}</td><td>{right}</td>"


def _html_baseline(report: Report) -> str:
    base = report.baseline
    if base is None:
        return ""
    warn = "" if base.comparable_grades else (
        f'<p class="warn">Grades were computed with different rubric versions (baseline '
        f'{escape(", ".join(base.grading_versions) or "none")}, this scan '
        f'{escape(", ".join(report.scan.grading_versions) or "none")}): grade changes are not comparable.</p>')
    rows = "".join(
        f"<tr><td>{escape(c.domain)}</td>" + _change_cell(c.old_grade, c.new_grade, (c.in_old, c.in_new))
        + _change_cell(c.old_starttls, c.new_starttls, (c.in_old, c.in_new)) + "</tr>"
        for c in base.changes
    ) or '<tr><td colspan="5">no domain changed</td></tr>'
    shown = (f"the first {format_count(len(base.changes))} (by name) of " if base.changes_total > len(base.changes)
             else "")
    return (
        f'<section id="baseline"><h2>Changes since the baseline scan</h2>'
        f'<p class="meta">Baseline <b>{escape(base.scan_id)}</b> started {escape(base.started_at)} '
        f"({escape(base.out_dir)}). Every table above shows the baseline share and the change in percentage "
        f"points.</p>{warn}"
        f"<p>Domains that differ (grade or STARTTLS verdict changed, or in one scan only): "
        f"<b>{format_count(base.changes_total)}</b>. Among domains in both scans, grade changed: "
        f"{format_count(base.grade_changes)}; STARTTLS verdict changed: {format_count(base.starttls_changes)}. "
        f"Listed: {shown}all {format_count(base.changes_total)}.</p>"
        f'<table class="changes" id="t-changes"><caption>Domains whose grade or STARTTLS verdict changed</caption>'
        f"<thead><tr>"
        f"<th>domain</th><th>grade before</th><th>grade now</th><th>STARTTLS before</th><th>STARTTLS now</th>"
        f"</tr></thead><tbody>{rows}</tbody></table></section>"
    )


_METHODS: Final = (
    ("Mail domain", "an input domain whose MX records (or, without MX, its own A/AAAA records: implicit MX, "
     "RFC 5321 §5.1) resolved to at least one address (status ok)."),
    ("STARTTLS", "the address advertised STARTTLS, answered 220 and completed a TLS handshake. Addresses that timed "
     "out, answered 421 or refused the connection are untested, never counted as 'no STARTTLS'."),
    ("Highest version", "per address, the highest version the enumeration saw accepted (else the negotiated one); "
     "per domain, the lowest of its TLS addresses' highest versions: what a sender reaches on any MX."),
    ("Confidence intervals", "95% Wilson score intervals, given where a share estimates a proportion of the scanned "
     "population; the input funnel and concentration tables describe the list itself and have none. Intervals "
     "cover sampling error only, not the bias of the vantage point or of the domain list (Scheitle et al., IMC "
     "2018). 0 / 0 is reported as n/a."),
    ("Providers", "registered domain (Public Suffix List, ICANN section, shipped with the publicsuffixlist "
     "package) of the domain's first MX host in preference order."),
    ("Grades", "rubric of schemas/grading.md (version stored per row); F means no STARTTLS, E is the floor of "
     "any working TLS."),
    ("Baseline", "with --baseline, each table gives the baseline scan's share for the same row, the change in "
     "percentage points and its 95% interval (Newcombe 1998, hybrid score method 10, built from the two Wilson "
     "intervals); * marks a change whose interval excludes zero. Scans whose verdict-relevant settings differ "
     "are refused unless --allow-different-settings is given, and then listed at the top; "
     "'not listed' means the baseline's table has no such row (e.g. a class outside its top "
     "list). In the list of changed domains, '—' is 'no grade' and 'absent' a domain missing from that scan."),
    ("Published values", "each quoted from the publication itself, at the place named in the row (see References); "
     "populations, years and units differ from ours: context, not targets."),
)


DRILL_COLUMNS: Final = ("domain", "grade", "grade_rules", "starttls", "mx", "why")  # sidecar JSON keys


def _html_drill(report: Report) -> str:
    drill = report.drill
    rows = [[line.domain, line.grade or "—", " ".join(line.grade_rules), line.starttls, line.mx, line.why]
            for line in drill.inline]
    kinds = ", ".join(f"{format_count(sum(1 for line in drill.inline if line.why == w))} {w}"
                      for w in ("failing", "changed", "sample"))
    more = (f" The other {format_count(drill.sidecar_rows)} are in <b>{escape(drill.sidecar)}</b> beside this page: "
            "pick it with the file button to search them here too (read locally, nothing is sent anywhere)."
            if drill.sidecar else " That is every domain of the scan.")
    table = drill_table("drill-domains", "Domains: grade, rules, STARTTLS verdict and MX posture",
                        ["domain", "grade", "rules", "STARTTLS", "MX (host grade status)", "shown because"], rows,
                        sidecar=drill.sidecar or None, columns=DRILL_COLUMNS)
    return (f'<section id="domains"><h2>Domains (drill-down)</h2><p>Inline: {format_count(len(drill.inline))} of '
            f"{format_count(drill.total)} domains ({kinds}).{more}</p>{table}</section>")


def _html_meta(report: Report) -> str:
    s = report.scan
    duration = "" if s.duration_s is None else f" ({s.duration_s:,.0f} s)"
    items = [
        ("scan", s.scan_id), ("started", s.started_at), ("finished", s.finished_at + duration),
        ("completed", "yes" if s.completed else "NO (interrupted)"), ("attempts", str(s.attempts)),
        ("input", s.input), ("input lines", format_count(s.input_lines)), ("probes", format_count(s.probes)),
        ("DNS queries", format_count(s.dns_queries)), ("enumeration", s.enumeration or "—"),
        ("policy checks", "yes" if s.policy_checks else "no"),
        ("grading", ", ".join(s.grading_versions) or "—"), ("address families", s.coverage),
        ("schema", s.schema_version),
        ("scanner", s.tool_version),
    ]
    return '<p class="meta">' + " · ".join(f"{escape(k)} <b>{escape(v)}</b>" for k, v in items) + "</p>"


def settings_warning(differences: Sequence[str]) -> str:
    """The sentence put at the top of a comparison whose scans ran with different verdict-relevant settings."""
    return ("These scans ran with different verdict-relevant settings (compared anyway, "
            "--allow-different-settings): changes may come from the settings, not from the servers. "
            "Differences (baseline -> this scan): " + "; ".join(differences) + ".")


def _html_settings_warning(report: Report) -> str:
    if report.baseline is None or not report.baseline.settings_differences:
        return ""
    return f'<p class="warn" id="settings-warning">{escape(settings_warning(report.baseline.settings_differences))}</p>'


def _md_settings_warning(report: Report) -> list[str]:
    if report.baseline is None or not report.baseline.settings_differences:
        return []
    return [f"**Warning:** {_md(settings_warning(report.baseline.settings_differences))}", ""]


def _html_key_figures(report: Report, deltas: DeltaMap) -> str:
    figures = key_figures(report)
    table = FigureTable("key", Section.FUNNEL, "Headline shares", "see each section", "as in the section's table",
                        Basis.ESTIMATE, tuple(figures))
    return _html_figure_table(table, _key_deltas(figures, deltas), report.baseline is not None,
                              report.scan.partial_coverage)


def render_html(report: Report) -> str:
    deltas = _delta_map(report)
    with_baseline = report.baseline is not None
    charts = _charts(report)
    sections = []
    nav = []
    for number, section in enumerate(Section, start=1):
        anchor = f"s{number}"
        nav.append(f'<li><a href="#{anchor}">{escape(section.value)}</a></li>')
        parts = [f'<section id="{anchor}"><h2>{number}. {escape(section.value)}</h2>']
        if charts.get(section):
            parts.append('<div class="charts">' + "".join(charts[section]) + "</div>")
        parts += [_html_figure_table(t, deltas, with_baseline, report.scan.partial_coverage)
                  for t in report.tables() if t.section is section]
        if section is Section.PROVIDERS:
            parts.append(_html_providers(report.providers))
        parts.append("</section>")
        sections.append("".join(parts))
    nav.append('<li><a href="#published">Comparison with published studies</a></li>')
    if with_baseline:
        nav.append('<li><a href="#baseline">Changes since the baseline</a></li>')
    nav.append('<li><a href="#domains">Domains (drill-down)</a></li>')
    nav.append('<li><a href="#methods">Definitions</a></li>')
    comparisons = "".join(_html_comparison(c) for c in report.comparisons)
    methods = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in _METHODS)
    title = f"SMTP STARTTLS population report — {report.scan.scan_id}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        f"img-src data:; script-src {script_csp_source()}\">"
        f'<link rel="icon" href="data:,"><title>{escape(title)}</title><style>{PAGE_CSS}{DRILL_CSS}</style>'
        "</head><body>"
        f"<header><h1>SMTP STARTTLS population report</h1>{_html_meta(report)}{_html_settings_warning(report)}"
        "</header>"
        f'<nav><ol>{"".join(nav)}</ol></nav>'
        f'<section id="key"><h2>Key figures</h2>{_html_key_figures(report, deltas)}</section>'
        + "".join(sections)
        + f'<section id="published"><h2>Comparison with published studies</h2><p class="note">Rows marked '
        f"<i>published</i> quote the publication at the place given; their populations, years and units "
        f"differ from ours.</p>{comparisons}<h3>References</h3><ol class=\"refs\">{_html_references(report)}</ol>"
        "</section>"
        + _html_baseline(report)
        + _html_drill(report)
        + f'<section id="methods"><h2>Definitions</h2><dl>{methods}</dl></section>'
        f"<footer>smtp-tls-survey {escape(__version__)} · report format {REPORT_FORMAT_VERSION} · generated "
        f"{escape(report.generated_at)} in {report.build_seconds:.2f} s</footer>"
        f"<script>{DRILL_SCRIPT}</script></body></html>\n"
    )


# --- Markdown --------------------------------------------------------------------------------------


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def _md_figure_table(table: FigureTable, deltas: DeltaMap, with_baseline: bool, coverage: str = "") -> list[str]:
    estimate = table.basis is Basis.ESTIMATE
    header = ["figure", "n", "of", "share"] + (["95% CI"] if estimate else []) + (
        ["baseline", "change", "95% CI of change"] if with_baseline else [])
    rows = []
    for fig in table.figures:
        row = [fig.label, format_count(fig.share.numerator), format_count(fig.share.denominator),
               format_percent(fig.share.value)] + ([format_ci(fig.share)] if estimate else [])
        if with_baseline:
            d = deltas.get((table.key, fig.key))
            row += ["n/a", "n/a", "n/a"] if d is None else [
                "not listed" if d.old is None else format_percent(d.old.value),
                format_points(d.points) + (" *" if d.significant else ""), format_points_interval(d.interval)]
        rows.append(row)
    covers = f"; coverage: {coverage}" if coverage else ""
    lines = [f"### {table.title}", "", f"*{table.unit}; denominator: {table.denominator}{covers}*", ""]
    lines += _md_table(header, rows) if rows else [f"none ({table.unit})"]
    if table.note:
        lines += ["", table.note]
    return [*lines, ""]


def _md_providers(rows: Sequence[ProviderRow]) -> list[str]:
    header = ["provider", "domains", "share", "95% CI", "addresses", "STARTTLS all", "TLS 1.3", "forced TLS safe",
              "grades"]
    body = [
        [r.provider, format_count(r.domains.numerator), format_percent(r.domains.value), format_ci(r.domains),
         format_count(r.addresses), _pct_of(r.starttls_all), _pct_of(r.tls13), _pct_of(r.forced_tls_safe),
         " ".join(f"{g.grade}:{g.count}" for g in r.grades)]
        for r in rows
    ]
    return ["### Posture of the top providers", "", *_md_table(header, body), ""]


def _md_comparison(c: Comparison) -> list[str]:
    rows = [["this scan", f.label, format_percent(f.share.value),
             f"{format_count(f.share.numerator)} / {format_count(f.share.denominator)}", format_ci(f.share)]
            for f in c.ours]
    rows += [[f"published: {p.citation.short} ({p.where})",
              f"{p.population}: {p.text}" + (f" ({p.note})" if p.note else ""), _published_value(p), "—", "—"]
             for p in c.published]
    lines = [f"### {c.title}", "", *_md_table(["source", "population / unit", "value", "n / N", "95% CI"], rows, 2)]
    return [*lines, *(["", c.note] if c.note else []), ""]


def _md_baseline(report: Report) -> list[str]:
    base = report.baseline
    if base is None:
        return []
    lines = ["## Changes since the baseline scan", "",
             f"Baseline `{base.scan_id}` started {base.started_at} ({base.out_dir}).", ""]
    if not base.comparable_grades:
        lines += ["**Grades were computed with different rubric versions: grade changes are not comparable.**", ""]
    lines += [f"Domains that differ (grade or STARTTLS verdict changed, or in one scan only): "
              f"**{format_count(base.changes_total)}**. Among domains in both scans, grade changed: "
              f"{format_count(base.grade_changes)}; STARTTLS verdict changed: {format_count(base.starttls_changes)}. "
              f"Listed: {format_count(len(base.changes))}.", ""]

    def side(value: str | None, present: bool) -> str:
        return (value or "—") if present else "absent"

    rows = [[c.domain, side(c.old_grade, c.in_old), side(c.new_grade, c.in_new), side(c.old_starttls, c.in_old),
             side(c.new_starttls, c.in_new)] for c in base.changes]
    lines += _md_table(["domain", "grade before", "grade now", "STARTTLS before", "STARTTLS now"], rows, 5)
    return [*lines, ""]


def render_markdown(report: Report) -> str:
    deltas = _delta_map(report)
    with_baseline = report.baseline is not None
    s = report.scan
    lines = [
        "# SMTP STARTTLS population report", "",
        f"Scan `{s.scan_id}` · started {s.started_at} · finished {s.finished_at} · "
        f"{'completed' if s.completed else 'INTERRUPTED'} · input {s.input} · {format_count(s.input_lines)} input "
        f"lines · {format_count(s.probes)} probes · enumeration {s.enumeration or '—'} · policy checks "
        f"{'yes' if s.policy_checks else 'no'} · grading {', '.join(s.grading_versions) or '—'} · "
        f"address families {s.coverage}", "",
        *_md_settings_warning(report),
        "## Key figures", "",
    ]
    figures = key_figures(report)
    key_table = FigureTable("key", Section.FUNNEL, "Key figures", "see each section", "as in the section's table",
                            Basis.ESTIMATE, tuple(figures))
    lines += _md_figure_table(key_table, _key_deltas(figures, deltas), with_baseline, s.partial_coverage)[4:]
    for number, section in enumerate(Section, start=1):
        lines += [f"## {number}. {section.value}", ""]
        for table in report.tables():
            if table.section is section:
                lines += _md_figure_table(table, deltas, with_baseline, s.partial_coverage)
        if section is Section.PROVIDERS:
            lines += _md_providers(report.providers)
    lines += ["## Comparison with published studies", "",
              "Rows marked *published* quote the publication at the place given; their populations, years and units "
              "differ from ours.", ""]
    for comparison in report.comparisons:
        lines += _md_comparison(comparison)
    lines += ["### References", "", *(f"{i}. {c.text()}" for i, c in enumerate(_citations(report), start=1)), ""]
    lines += _md_baseline(report)
    drill = report.drill
    lines += ["## Domains", "", f"The HTML page lists {format_count(len(drill.inline))} of {format_count(drill.total)} "
              "domains (failing, changed, sampled) in a searchable table"
              + (f"; the others are in {drill.sidecar} beside it." if drill.sidecar else "."), ""]
    lines += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in _METHODS]
    lines += ["", f"*smtp-tls-survey {__version__} · report format {REPORT_FORMAT_VERSION} · generated "
              f"{report.generated_at} in {report.build_seconds:.2f} s*", ""]
    return "\n".join(lines)


# --- JSON ------------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    if isinstance(value, Share):
        ci = None if value.ci is None else [value.ci.low, value.ci.high]
        return {"numerator": value.numerator, "denominator": value.denominator, "value": value.value, "ci95": ci}
    if isinstance(value, Delta):
        interval = value.interval
        return {**{f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)},
                "points": value.points, "ci95_difference": None if interval is None else [interval.low, interval.high],
                "significant": value.significant}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    return value


def report_to_dict(report: Report) -> dict[str, Any]:
    """The whole report as JSON-ready data (shares carry numerator, denominator, value and ci95)."""
    data: dict[str, Any] = {"report_format": REPORT_FORMAT_VERSION}
    data.update(jsonable(report))
    data["key_figures"] = jsonable(key_figures(report))
    return data


def render_json(report: Report) -> str:
    return json.dumps(report_to_dict(report), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


# --- files -----------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write beside the target, then rename: a reader never sees a half-written report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(report: Report, dest: Path) -> ReportFiles:
    """Write ``report.html``, ``report.md`` and ``report.json`` into the directory ``dest`` (created)."""
    dest = Path(dest)
    files = ReportFiles(dest / "report.html", dest / "report.md", dest / "report.json")
    renderers: tuple[tuple[Path, Callable[[Report], str]], ...] = (
        (files.html, render_html), (files.markdown, render_markdown), (files.json, render_json))
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for path, render in renderers:
            write_atomic(path, render(report))
    except OSError as exc:  # --dest is a file, a read-only place, a full disk
        raise ReportError(f"cannot write the report into {dest}: {exc.strerror or exc}", ExitCode.CANT_CREATE) from exc
    return files

