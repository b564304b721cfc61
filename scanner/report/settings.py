"""Which verdict-relevant settings a scan ran with, and whether two scans may be compared.

One source of truth for "which settings can change results": ``scanner.config.result_settings`` (fields
without ``RESULT_NEUTRAL`` metadata) and ``settings_differences``. A scan's mapping is read from its run
record: the ``result_settings`` key when the scan wrote one, else derived from the stored configuration
(``config`` in run.json, ``config_json`` in the run table) of an older scan, the same flattening applied
to the same dataclass fields. The grading rubric version, stored per domain row, is added as
``grading.rubric_version`` (grades from two rubrics are not comparable), and the trust store's SHA-256,
when the run record's provenance has one, as ``trust_store.sha256`` (a scan without it is compared on
the ``ca_file`` setting only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Final, get_type_hints

from scanner.config import ScanConfig, settings_differences
from scanner.dataset import DatasetError, load
from scanner.exit_codes import ExitCode
from scanner.report.queries import ReportError

__all__ = ["RUBRIC_KEY", "TRUST_STORE_KEY", "SettingsMismatchError", "check_comparable", "scan_settings"]

RUBRIC_KEY: Final = "grading.rubric_version"
TRUST_STORE_KEY: Final = "trust_store.sha256"


class SettingsMismatchError(ReportError):
    """Two scans ran with different verdict-relevant settings; the message names each difference."""

    def __init__(self, message: str, differences: Sequence[str]) -> None:
        super().__init__(message, ExitCode.CONFIG)  # as a scan refuses another scan's settings
        self.differences = tuple(differences)


def _flatten(config_type: type, stored: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``result_settings`` of a configuration stored as ``dataclasses.asdict`` JSON (older run records)."""
    out: dict[str, Any] = {}
    hints = get_type_hints(config_type)
    for f in fields(config_type):
        if f.metadata.get("result_neutral") or f.name not in stored:
            continue
        value, key = stored[f.name], f"{prefix}{f.name}"
        nested = hints.get(f.name)
        if is_dataclass(nested) and isinstance(nested, type) and isinstance(value, Mapping):
            out.update(_flatten(nested, value, f"{key}."))
        elif isinstance(value, (list, tuple)):
            out[key] = [v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for v in value]
        else:
            out[key] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return out


def _run_record(out_dir: Path) -> dict[str, Any]:
    """The scan record: run.json when present (``scanner.scan_record``: ``result_settings`` and
    ``attempts``), else the run table's newest attempt (its ``config_json`` and ``provenance_json``)."""
    path = out_dir / "run.json"
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    try:
        rows = load(out_dir).run.to_pylist()  # one row per attempt: a handful
    except DatasetError as exc:
        raise ReportError(str(exc)) from exc
    if not rows:
        return {}
    row = max(rows, key=lambda r: int(r["attempt"]))  # a killed attempt has no finished_at
    return {"config": json.loads(row.get("config_json") or "{}"),
            "attempts": [{"provenance": json.loads(row.get("provenance_json") or "{}")}]}


def _trust_store_digest(record: Mapping[str, Any]) -> str | None:
    """The SHA-256 of the trust store the newest attempt actually used (its provenance, ``scanner.provenance``):
    the same ``--ca-file`` path may hold another bundle in another scan."""
    attempts = record.get("attempts")
    newest = attempts[-1] if isinstance(attempts, list) and attempts and isinstance(attempts[-1], Mapping) else {}
    store = newest.get("provenance", {}).get("trust_store", {}) if isinstance(newest.get("provenance"), Mapping) \
        else {}
    digest = store.get("sha256") if isinstance(store, Mapping) else None
    return digest if isinstance(digest, str) else None


def scan_settings(out_dir: Path) -> dict[str, Any]:
    """The verdict-relevant settings of the scan in ``out_dir`` (see the module docstring)."""
    record = _run_record(out_dir)
    stored = record.get("result_settings")
    settings = dict(stored) if isinstance(stored, Mapping) else _flatten(ScanConfig, record.get("config") or {})
    digest = _trust_store_digest(record)
    if digest is not None and TRUST_STORE_KEY not in settings:
        settings[TRUST_STORE_KEY] = digest
    if RUBRIC_KEY not in settings:
        try:
            versions = load(out_dir).domains.column("grading_version").unique().drop_null().to_pylist()
        except DatasetError as exc:
            raise ReportError(str(exc)) from exc
        settings[RUBRIC_KEY] = ",".join(sorted(str(v) for v in versions)) or None
    return settings


def check_comparable(ours: Path, theirs: Path, *, allow_different: bool) -> tuple[str, ...]:
    """Differences between two scans' settings (``older -> newer`` per line); raises
    ``SettingsMismatchError`` naming them unless ``allow_different``."""
    mine, other = scan_settings(ours), scan_settings(theirs)
    if (TRUST_STORE_KEY in mine) != (TRUST_STORE_KEY in other):  # an older record without the digest
        mine.pop(TRUST_STORE_KEY, None)
        other.pop(TRUST_STORE_KEY, None)
    differences = settings_differences(mine, other)
    if differences and not allow_different:
        raise SettingsMismatchError(
            f"{theirs} and {ours} were scanned with different verdict-relevant settings, so their figures are not "
            "comparable:\n  " + "\n  ".join(differences)
            + "\n(give --allow-different-settings to compare them anyway; the report then says so at the top)",
            differences,
        )
    return tuple(differences)
