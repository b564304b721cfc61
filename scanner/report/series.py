"""A series report: two or more scans ordered by start, their headline figures over time, the transitions
of each domain between consecutive scans and the domains that regressed.

Two views of every figure: *cross-section* (all domains of each scan) and *panel* (only the domains present
in every scan, so that a change is not an artefact of a changed list). Each change between consecutive
scans carries its 95 % Newcombe interval (``Delta.interval``). Consecutive scans must have the same
verdict-relevant settings (``scanner.report.settings``) unless the caller allows otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import duckdb

from scanner.dataset import DatasetError
from scanner.grading import Grade
from scanner.report.model import Delta
from scanner.report.queries import ReportError, lit, lits
from scanner.report.settings import check_comparable
from scanner.report.stats import Share
from scanner.series import Series, load_series
from scanner.status import DomainStatus, StarttlsVerdict, StsMode, TlsRptStatus

__all__ = [
    "GRADE_STATES",
    "REGRESSIONS_LIMIT",
    "SERIES_FIGURES",
    "STARTTLS_STATES",
    "Regression",
    "SeriesFigure",
    "SeriesReport",
    "SeriesScan",
    "Transition",
    "build_series",
]

REGRESSIONS_LIMIT: Final = 5000  # regressed domains listed per report (the total is always given)
# Every verdict is a state, not_covered (a vantage without the family, schema 7) included.
STARTTLS_STATES: Final = tuple(v.value for v in StarttlsVerdict)
GRADE_STATES: Final = (*(g.value for g in Grade), "ungraded")
# Better verdicts rank higher; 'incomplete' (not measured) and 'not_applicable' are no regression.
_RANKED_STARTTLS: Final = (StarttlsVerdict.ALL, StarttlsVerdict.SOME, StarttlsVerdict.NONE)
_STARTTLS_RANK: Final = ("CASE {0} " + " ".join(f"WHEN {lit(v)} THEN {len(_RANKED_STARTTLS) - i}"
                                                for i, v in enumerate(_RANKED_STARTTLS)) + " END")
_GRADE_RANK: Final = ("CASE {0} " + " ".join(f"WHEN {lit(g)} THEN {len(Grade) - i}" for i, g in enumerate(Grade))
                      + " END")

_MAIL: Final = f"status = {lit(DomainStatus.OK)}"
_POLICIES_CHECKED: Final = f"{_MAIL} AND mta_sts_txt IS NOT NULL"
# (key, label, numerator condition, denominator condition) over one domains row
SERIES_FIGURES: Final[tuple[tuple[str, str, str, str], ...]] = (
    ("starttls_all", "Mail domains with STARTTLS on every MX", f"starttls = {lit(StarttlsVerdict.ALL)}", _MAIL),
    ("starttls_some", "… on some MX addresses only", f"starttls = {lit(StarttlsVerdict.SOME)}", _MAIL),
    ("starttls_none", "… on no MX address", f"starttls = {lit(StarttlsVerdict.NONE)}", _MAIL),
    ("starttls_incomplete", "… could not be tested", f"starttls = {lit(StarttlsVerdict.INCOMPLETE)}", _MAIL),
    ("certs_valid_all", "Domains whose every TLS MX has a valid certificate (of domains with TLS)",
     "certs_valid_all", f"{_MAIL} AND certs_valid_all IS NOT NULL"),
    ("grade_a_or_better", "Graded domains with A or A+", f"grade IN {lits(Grade.A_PLUS, Grade.A)}",
     "grade IS NOT NULL"),
    ("grade_f", "Graded domains with F (no STARTTLS)", f"grade = {lit(Grade.F)}", "grade IS NOT NULL"),
    ("mta_sts_active", "Domains with an active MTA-STS policy (of domains checked)", "mta_sts_active",
     _POLICIES_CHECKED),
    ("mta_sts_enforce", "… in enforce mode", f"mta_sts_active AND mta_sts_mode = {lit(StsMode.ENFORCE)}",
     _POLICIES_CHECKED),
    ("tlsrpt_valid", "Domains with a valid TLS-RPT record (of domains checked)",
     f"tlsrpt_status = {lit(TlsRptStatus.VALID)}", _POLICIES_CHECKED),
    ("dane_tlsa", "Domains with TLSA records on an MX (of domains checked)", "dane_mx_with_tlsa > 0",
     _POLICIES_CHECKED),
    ("forced_tls_safe", "Mail domains to which TLS can safely be forced", "forced_tls_safe", _MAIL),
)

# One row per distinct domain of a scan (duplicates and invalid lines have no verdict of their own).
_DISTINCT: Final = f"domain IS NOT NULL AND status <> {lit(DomainStatus.DUPLICATE)}"


@dataclass(frozen=True, slots=True)
class SeriesScan:
    out_dir: str
    scan_id: str
    started_at: str  # ISO 8601, UTC
    domains: int  # distinct domains
    settings_differences: tuple[str, ...]  # against the previous scan ("setting: previous -> this")


@dataclass(frozen=True, slots=True)
class SeriesFigure:
    key: str
    label: str
    view: str  # "cross" (all domains of each scan) or "panel" (domains present in every scan)
    shares: tuple[Share, ...]  # one per scan, in scan order
    changes: tuple[Delta, ...]  # one per consecutive pair (scan i → i+1)


@dataclass(frozen=True, slots=True)
class Transition:
    """Counts of domains present in both scans by (state in the earlier scan, state in the later one)."""

    kind: str  # "starttls" or "grade"
    from_scan: int  # position in the series
    to_scan: int
    states: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]  # counts[i][j]: from states[i] to states[j]

    def count(self, old: str, new: str) -> int:
        return self.counts[self.states.index(old)][self.states.index(new)]


@dataclass(frozen=True, slots=True)
class Regression:
    """A domain that got worse between two consecutive scans, and in what."""

    domain: str
    from_scan: int
    to_scan: int
    old_starttls: str | None
    new_starttls: str | None
    old_grade: str | None
    new_grade: str | None
    reasons: tuple[str, ...]  # "starttls", "grade", "certificate"


@dataclass(frozen=True, slots=True)
class SeriesReport:
    scans: tuple[SeriesScan, ...]
    panel_domains: int
    figures: tuple[SeriesFigure, ...]
    transitions: tuple[Transition, ...]
    regressions: tuple[Regression, ...]  # by (to_scan, domain), at most ``regressions_limit``
    regressions_total: int
    regressions_limit: int
    generated_at: str
    build_seconds: float

    def figure(self, key: str, view: str) -> SeriesFigure:
        for fig in self.figures:
            if fig.key == key and fig.view == view:
                return fig
        raise KeyError(f"no series figure {key!r} in view {view!r}")

    def transition(self, kind: str, from_scan: int) -> Transition:
        for t in self.transitions:
            if t.kind == kind and t.from_scan == from_scan:
                return t
        raise KeyError(f"no {kind} transition from scan {from_scan}")


def _figures_sql(panel: bool, scans: int) -> str:
    counts = ",\n".join(
        f"count(*) FILTER (WHERE coalesce(({den}) AND ({num}), false)) AS {key}_n, "
        f"count(*) FILTER (WHERE coalesce({den}, false)) AS {key}_d"
        for key, _, num, den in SERIES_FIGURES
    )
    panel_filter = (f" AND domain IN (SELECT domain FROM domains WHERE {_DISTINCT} GROUP BY domain "
                    f"HAVING count(DISTINCT scan_id) = {scans})") if panel else ""
    return (f"SELECT s.position, {counts}\nFROM scans s LEFT JOIN "
            f"(SELECT * FROM domains WHERE {_DISTINCT}{panel_filter}) d ON d.scan_id = s.scan_id "
            "GROUP BY s.position ORDER BY s.position")


def _figures(con: duckdb.DuckDBPyConnection, scans: int) -> tuple[SeriesFigure, ...]:
    out = []
    for view in ("cross", "panel"):
        cursor = con.execute(_figures_sql(view == "panel", scans))
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        for key, label, _, _ in SERIES_FIGURES:
            shares = tuple(Share.estimate(int(r[f"{key}_n"]), int(r[f"{key}_d"])) for r in rows)
            changes = tuple(Delta(f"series.{view}", key, label, shares[i], shares[i + 1])
                            for i in range(len(shares) - 1))
            out.append(SeriesFigure(key, label, view, shares, changes))
    return tuple(out)


_PAIRS: Final = """
SELECT o.domain, o.starttls AS old_starttls, n.starttls AS new_starttls, o.grade AS old_grade, n.grade AS new_grade,
       o.certs_valid_all AS old_certs, n.certs_valid_all AS new_certs
FROM (SELECT * FROM domains WHERE scan_id = $old AND {distinct}) o
JOIN (SELECT * FROM domains WHERE scan_id = $new AND {distinct}) n USING (domain)
"""


def _transitions(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> tuple[Transition, ...]:
    out = []
    pairs = _PAIRS.format(distinct=_DISTINCT)
    for i in range(len(ids) - 1):
        params = {"old": ids[i], "new": ids[i + 1]}
        for kind, states, column in (("starttls", STARTTLS_STATES, "starttls"), ("grade", GRADE_STATES, "grade")):
            rows = con.execute(
                f"SELECT coalesce(old_{column}, 'ungraded'), coalesce(new_{column}, 'ungraded'), count(*) "
                f"FROM ({pairs}) GROUP BY 1, 2", params).fetchall()
            counts = [[0] * len(states) for _ in states]
            for old, new, n in rows:
                counts[states.index(str(old))][states.index(str(new))] += int(n)
            out.append(Transition(kind, i, i + 1, states, tuple(tuple(r) for r in counts)))
    return tuple(out)


def _regressions(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> tuple[list[Regression], int]:
    pairs = _PAIRS.format(distinct=_DISTINCT)
    worse_starttls = f"{_STARTTLS_RANK.format('new_starttls')} < {_STARTTLS_RANK.format('old_starttls')}"
    worse_grade = f"{_GRADE_RANK.format('new_grade')} < {_GRADE_RANK.format('old_grade')}"
    worse_certs = "old_certs AND NOT new_certs"
    found: list[Regression] = []
    total = 0
    for i in range(len(ids) - 1):
        rows = con.execute(
            f"SELECT domain, old_starttls, new_starttls, old_grade, new_grade, coalesce({worse_starttls}, false), "
            f"coalesce({worse_grade}, false), coalesce({worse_certs}, false) FROM ({pairs}) "
            f"WHERE coalesce({worse_starttls}, false) OR coalesce({worse_grade}, false) "
            f"OR coalesce({worse_certs}, false) ORDER BY domain",
            {"old": ids[i], "new": ids[i + 1]}).fetchall()
        total += len(rows)
        for domain, o_tls, n_tls, o_grade, n_grade, tls, grade, certs in rows:
            if len(found) < REGRESSIONS_LIMIT:
                reasons = tuple(r for r, hit in (("starttls", tls), ("grade", grade), ("certificate", certs)) if hit)
                found.append(Regression(str(domain), i, i + 1, o_tls, n_tls, o_grade, n_grade, reasons))
    return found, total


def build_series(paths: Sequence[Path], *, allow_different_settings: bool = False) -> SeriesReport:
    """The series report of two or more scans (any order: they are sorted by start).

    Raises ``ReportError`` for a directory that is not a scan, and ``SettingsMismatchError`` when two
    consecutive scans ran with different verdict-relevant settings, unless ``allow_different_settings``.
    """
    started = time.perf_counter()
    if len(paths) < 2:
        raise ReportError("a series report needs two or more scans")
    try:
        series: Series = load_series(paths)
    except DatasetError as exc:
        raise ReportError(str(exc)) from exc
    refs = series.scans
    differences = [()] + [
        check_comparable(refs[i + 1].path, refs[i].path, allow_different=allow_different_settings)
        for i in range(len(refs) - 1)
    ]
    con = series.duckdb()
    try:
        ids = [r.scan_id for r in refs]
        counts = dict(con.execute(f"SELECT scan_id, count(*) FROM domains WHERE {_DISTINCT} GROUP BY 1").fetchall())
        panel = con.execute(f"SELECT count(*) FROM (SELECT domain FROM domains WHERE {_DISTINCT} GROUP BY domain "
                            f"HAVING count(DISTINCT scan_id) = {len(refs)})").fetchone()
        figures = _figures(con, len(refs))
        transitions = _transitions(con, ids)
        regressions, total = _regressions(con, ids)
    except duckdb.Error as exc:  # bad pages behind a good footer, a column of another type
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReportError(f"cannot read the series' datasets: {first}") from exc
    finally:
        con.close()
    scans = tuple(
        SeriesScan(str(r.path), r.scan_id, r.started.astimezone(UTC).isoformat(timespec="seconds"),
                   int(counts.get(r.scan_id, 0)), tuple(d))
        for r, d in zip(refs, differences, strict=True)
    )
    return SeriesReport(
        scans=scans, panel_domains=int(panel[0]) if panel else 0, figures=figures, transitions=transitions,
        regressions=tuple(regressions), regressions_total=total, regressions_limit=REGRESSIONS_LIMIT,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"), build_seconds=time.perf_counter() - started,
    )
