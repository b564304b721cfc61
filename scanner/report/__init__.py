"""Population report of a scan: figures as typed data, rendered to HTML, Markdown and JSON.

    from scanner.report import build_report, write_report
    report = build_report(Path("out/"), baseline=Path("old-out/"))
    files = write_report(report, Path("out/report/"))
"""

from __future__ import annotations

from scanner.report.build import build_report, write_domains_sidecar
from scanner.report.model import (
    BaselineDiff,
    Basis,
    Citation,
    Comparison,
    Delta,
    DomainChange,
    DomainDrill,
    DomainLine,
    Figure,
    FigureTable,
    GradeCount,
    ProviderRow,
    PublishedValue,
    Report,
    ReportFiles,
    ScanInfo,
    Section,
)
from scanner.report.queries import ReportError
from scanner.report.render import write_report
from scanner.report.series import SeriesReport, build_series
from scanner.report.series_render import write_series
from scanner.report.stats import Interval, Share

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
    "Interval",
    "ProviderRow",
    "PublishedValue",
    "Report",
    "ReportError",
    "ReportFiles",
    "ScanInfo",
    "Section",
    "SeriesReport",
    "Share",
    "build_report",
    "build_series",
    "write_domains_sidecar",
    "write_report",
    "write_series",
]
