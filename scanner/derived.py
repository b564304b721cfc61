"""Files derived from a scan inside its output directory (reports, exports): their default places beside
the table directories, never inside one (so ``OUT/domains`` holds Parquet parts only), and their removal
when the scan is overwritten (``scan --overwrite``: a report of the previous scan must not survive it)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Final

from scanner.output.rows import TABLES

__all__ = ["EXPORT_DIR", "REPORT_DIR", "SERIES_DIR", "remove_derived"]

REPORT_DIR: Final = "report"  # report.html, report.md, report.json (+ sidecar)
SERIES_DIR: Final = "series"  # series.html, series.md, series.json of a series ending with this scan
EXPORT_DIR: Final = "export"  # <table>.jsonl / <table>.csv

_FILES: Final = {
    REPORT_DIR: ("report.html", "report.md", "report.json", "report-domains.jsonl"),
    SERIES_DIR: ("series.html", "series.md", "series.json"),
    EXPORT_DIR: tuple(f"{t}.{ext}" for t in TABLES for ext in ("jsonl", "csv")),
}


def remove_derived(out_dir: Path) -> list[Path]:
    """Remove the files this tool derived from the scan in ``out_dir`` (only the names it writes; a
    directory is removed when that leaves it empty). Returns what was removed."""
    removed = []
    for directory, names in _FILES.items():
        for name in names:
            path = out_dir / directory / name
            if path.is_file():
                path.unlink()
                removed.append(path)
        with contextlib.suppress(OSError):  # not empty (a user's own file) or absent: keep it
            (out_dir / directory).rmdir()
    return removed
