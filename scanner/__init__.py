"""smtp-tls-survey: measure how well the Internet's inbound mail servers do TLS."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scanner.dataset import Dataset

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(out_dir: str | Path) -> Dataset:
    """Open a scan's output directory: ``.domains``, ``.mx``, ``.probes``, ``.run`` and ``.duckdb()``.

    Imported lazily so that ``import scanner`` stays light (see ``scanner.dataset``).
    """
    from scanner.dataset import load as _load  # noqa: PLC0415

    return _load(out_dir)
