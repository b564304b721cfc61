"""smtp-tls-survey: measure how well the Internet's inbound mail servers do TLS."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from scanner.api import ScanResult
    from scanner.checker import CheckResult
    from scanner.dataset import Dataset
    from scanner.series import Series

from scanner.version import __version__

__all__ = ["__version__", "check", "load", "load_series", "scan"]


def load(out_dir: str | Path) -> Dataset:
    """Open a scan's output directory: ``.domains``, ``.mx``, ``.probes``, ``.run`` and ``.duckdb()``.

    Imported lazily so that ``import scanner`` stays light (see ``scanner.dataset``).
    """
    from scanner.dataset import load as _load  # noqa: PLC0415

    return _load(out_dir)


def scan(domains: Any, out: str | Path, **options: Any) -> ScanResult:
    """Scan domains (a file, or an iterable of names) into the dataset ``out``: ``scanner.api.scan``."""
    from scanner.api import scan as _scan  # noqa: PLC0415

    return _scan(domains, out, **options)


def check(target: str, **options: Any) -> CheckResult:
    """Check one domain (or ``HOST:PORT`` / IP server), like the command: ``scanner.api.check``."""
    from scanner.api import check as _check  # noqa: PLC0415

    return _check(target, **options)


def load_series(paths: Iterable[str | Path]) -> Series:
    """Open several scans as one series ordered by start: tables with ``scan_id`` and ``scan_started``
    columns, and ``.duckdb()`` with views over them (see ``scanner.series``)."""
    from scanner.series import load_series as _load_series  # noqa: PLC0415

    return _load_series(paths)
