"""The report as typed, immutable data: every figure is a ``Share`` with its numerator and denominator.

``Report`` is what ``build_report`` returns and what the HTML, Markdown and JSON renderers read; nothing
in here touches the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path

from scanner.report.stats import DifferenceInterval, Share, newcombe_difference

__all__ = [
    "BaselineDiff",
    "Basis",
    "Citation",
    "Comparison",
    "Delta",
    "DomainChange",
    "DomainDrill",
    "DomainLine",
    "Figure",
    "FigureTable",
    "GradeCount",
    "ProviderRow",
    "PublishedValue",
    "Report",
    "ReportFiles",
    "ScanInfo",
    "Section",
]


class Basis(str, Enum):
    """Whether a table's shares estimate population proportions (95 % Wilson interval) or just count."""

    ESTIMATE = "estimate"
    COUNT = "count"


class Section(str, Enum):
    """Report sections, in reading order."""

    FUNNEL = "Scan and funnel"
    STARTTLS = "STARTTLS"
    TLS = "Protocol versions and cipher suites"
    CERTIFICATES = "Certificates"
    POLICIES = "MTA-STS, TLS-RPT and DANE"
    GRADES = "Grades and forced TLS"
    PROVIDERS = "Mail providers"
    FAILURES = "Failures"


@dataclass(frozen=True, slots=True)
class Figure:
    """One row of a table: a stable ``key`` (for baselines and the JSON), a label and its share."""

    key: str
    label: str
    share: Share


@dataclass(frozen=True, slots=True)
class FigureTable:
    key: str  # stable identifier, e.g. "starttls.domains"
    section: Section
    title: str
    unit: str  # what each numerator counts ("domains", "addresses", "MX links")
    denominator: str  # what the (main) denominator is, in words
    basis: Basis
    figures: tuple[Figure, ...]
    note: str = ""

    def figure(self, key: str) -> Figure:
        """The row with ``key``; KeyError when the table has none."""
        for fig in self.figures:
            if fig.key == key:
                return fig
        raise KeyError(f"{self.key} has no figure {key!r}")

    def get(self, key: str) -> Share:
        """Shortcut: the share of row ``key``."""
        return self.figure(key).share


@dataclass(frozen=True, slots=True)
class GradeCount:
    grade: str
    count: int


@dataclass(frozen=True, slots=True)
class ProviderRow:
    """One MX provider (registered domain of the primary MX host, Public Suffix List) and its posture."""

    provider: str
    domains: Share  # of all mail domains
    addresses: int  # distinct MX addresses under this provider's host names
    starttls_all: Share  # of the provider's mail domains
    tls13: Share  # of the provider's domains with a TLS address: every TLS address reaches TLS 1.3
    grades: tuple[GradeCount, ...]  # of the provider's graded domains, A+ first
    forced_tls_safe: Share  # of the provider's mail domains


@dataclass(frozen=True, slots=True)
class Citation:
    """A publication, cited in full."""

    authors: str
    title: str
    venue: str
    year: int
    short: str  # "Durumeric et al., IMC 2015"

    def text(self) -> str:
        return f"{self.authors}. {self.title}. {self.venue}, {self.year}."


@dataclass(frozen=True, slots=True)
class PublishedValue:
    """A number from a published study, with where in the publication it is stated."""

    citation: Citation
    where: str  # section or table of the publication ("abstract", "Table 3", "§5.2")
    population: str
    value: float | None  # as a proportion, when the study gives one
    text: str  # the value as published (with its unit)
    note: str = ""


@dataclass(frozen=True, slots=True)
class Comparison:
    """Our figures set beside published ones (different populations and years: context, not a test)."""

    key: str
    title: str
    ours: tuple[Figure, ...]
    published: tuple[PublishedValue, ...]
    note: str = ""


@dataclass(frozen=True, slots=True)
class ScanInfo:
    out_dir: str
    scan_id: str
    tool_version: str
    schema_version: str
    started_at: str  # ISO 8601, UTC
    finished_at: str
    duration_s: float | None
    attempts: int
    completed: bool
    input: str
    input_lines: int  # rows of the domains table (one per meaningful input line)
    probes: int
    dns_queries: int
    enumeration: str  # off / posture / full
    policy_checks: bool
    grading_versions: tuple[str, ...]
    coverage: str = "unknown"  # address families probed, from the run record (scanner.net.families)
    partial_coverage: str = ""  # the same when a family was not probed (shown beside every figure), else ""


@dataclass(frozen=True, slots=True)
class Delta:
    """One figure in the baseline scan and in this one."""

    table_key: str
    figure_key: str
    label: str
    old: Share | None  # None: the baseline report has no such row
    new: Share | None

    @property
    def points(self) -> float | None:
        """Change of the share in percentage points (None when either side is undefined)."""
        if self.old is None or self.new is None or self.old.value is None or self.new.value is None:
            return None
        return (self.new.value - self.old.value) * 100.0

    @property
    def interval(self) -> DifferenceInterval | None:
        """95 % Newcombe interval of new − old, for shares that estimate proportions (None otherwise)."""
        if self.old is None or self.new is None or self.old.ci is None or self.new.ci is None:
            return None
        return newcombe_difference(self.new.numerator, self.new.denominator, self.old.numerator, self.old.denominator)

    @property
    def significant(self) -> bool:
        """The change's 95 % interval excludes zero."""
        interval = self.interval
        return interval is not None and interval.excludes_zero


@dataclass(frozen=True, slots=True)
class DomainChange:
    """A domain whose grade or STARTTLS verdict differs between the scans (None: absent or not graded)."""

    domain: str
    old_grade: str | None
    new_grade: str | None
    old_starttls: str | None
    new_starttls: str | None
    in_old: bool
    in_new: bool


@dataclass(frozen=True, slots=True)
class BaselineDiff:
    out_dir: str
    scan_id: str
    started_at: str
    grading_versions: tuple[str, ...]
    comparable_grades: bool  # both scans graded with one and the same rubric version
    deltas: tuple[Delta, ...]
    changes: tuple[DomainChange, ...]  # sorted by domain, at most ``changes_limit``
    changes_total: int
    changes_limit: int
    grade_changes: int  # domains present in both scans whose grade changed
    starttls_changes: int  # ... whose STARTTLS verdict changed
    # verdict-relevant settings that differ ("setting: baseline -> this scan"); non-empty only when the
    # comparison was allowed anyway (--allow-different-settings)
    settings_differences: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DomainLine:
    """One domain of the drill-down table (also one line of the JSONL sidecar, same keys)."""

    domain: str
    grade: str | None
    grade_rules: tuple[str, ...]
    starttls: str
    mx: str  # MX posture: "host grade probe-status" per MX address, "; "-joined
    why: str  # why the row is inline: "failing", "changed" or "sample"


@dataclass(frozen=True, slots=True)
class DomainDrill:
    """The per-domain drill-down: the rows shown inline and how many more the sidecar holds."""

    inline: tuple[DomainLine, ...]  # failing first, then changed (against a baseline), then a sample
    total: int  # distinct domains of the scan
    sidecar: str  # file name of the JSONL beside the page with the other domains ("" when none)
    sidecar_rows: int


@dataclass(frozen=True, slots=True)
class Report:
    scan: ScanInfo
    domain_status: FigureTable
    inventory: FigureTable
    probe_funnel: FigureTable
    starttls: FigureTable
    starttls_decided: FigureTable
    versions_address: FigureTable
    versions_domain: FigureTable
    version_support: FigureTable
    suites: FigureTable
    preferred_suites: FigureTable
    key_exchange: FigureTable
    groups: FigureTable
    certs_address: FigureTable
    certs_link: FigureTable
    certs_domain: FigureTable
    cert_keys: FigureTable
    cert_signatures: FigureTable
    mta_sts: FigureTable
    mta_sts_errors: FigureTable
    tlsrpt: FigureTable
    dane_domains: FigureTable
    dane_hosts: FigureTable
    grades_domain: FigureTable
    grades_link: FigureTable
    grade_rules: FigureTable
    forced_tls: FigureTable
    forced_tls_reasons: FigureTable
    provider_shares: FigureTable
    provider_concentration: FigureTable
    providers: tuple[ProviderRow, ...]
    dns_failures: FigureTable
    host_failures: FigureTable
    probe_failures: FigureTable
    comparisons: tuple[Comparison, ...]
    baseline: BaselineDiff | None
    drill: DomainDrill
    generated_at: str
    build_seconds: float

    def tables(self) -> Iterator[FigureTable]:
        """Every figure table, in field (reading) order."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, FigureTable):
                yield value

    def table(self, key: str) -> FigureTable:
        for table in self.tables():
            if table.key == key:
                return table
        raise KeyError(f"no table {key!r}")


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """Where ``write_report`` put the three renderings."""

    html: Path
    markdown: Path
    json: Path
