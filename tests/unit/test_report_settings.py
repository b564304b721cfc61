"""Settings comparison of two scans (report --baseline, series): read from the run record, one source of
truth (scanner.config.result_settings / settings_differences)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from scanner.config import OutputConfig, ProbeConfig, ScanConfig, result_settings
from scanner.report.settings import RUBRIC_KEY, SettingsMismatchError, check_comparable, scan_settings


def _config(out: Path, **probe: object) -> ScanConfig:
    return ScanConfig(output=OutputConfig(out), probe=ProbeConfig(ehlo_name="scanner.test", **probe))  # type: ignore[arg-type]


def _write_scan(out: Path, config: ScanConfig, *, with_settings: bool) -> None:
    """A run.json as the pipeline writes it (older scans: no result_settings key) and an empty table dir."""
    (out / "domains").mkdir(parents=True)
    record: dict[str, object] = {"config": json.loads(json.dumps(dataclasses.asdict(config), default=str))}
    if with_settings:
        record["result_settings"] = result_settings(config)
    (out / "run.json").write_text(json.dumps(record), encoding="utf-8")


def test_settings_derived_from_an_older_run_record_equal_result_settings(tmp_path: Path) -> None:
    config = _config(tmp_path / "a", banner_timeout=2.0, throttle_retry_delays=(1.0, 5.0))
    _write_scan(tmp_path / "a", config, with_settings=False)
    settings = scan_settings(tmp_path / "a")
    assert settings.pop(RUBRIC_KEY) is None  # no graded domain in this empty scan
    assert settings == result_settings(config)


def test_different_timeouts_refused_naming_each_difference(tmp_path: Path) -> None:
    _write_scan(tmp_path / "old", _config(tmp_path / "old", banner_timeout=30.0), with_settings=True)
    _write_scan(tmp_path / "new", _config(tmp_path / "new", banner_timeout=2.0, enumeration="full"),
                with_settings=False)
    with pytest.raises(SettingsMismatchError) as err:
        check_comparable(tmp_path / "new", tmp_path / "old", allow_different=False)
    assert err.value.differences == ("probe.banner_timeout: 30.0 -> 2.0", "probe.enumeration: 'posture' -> 'full'")
    assert "probe.banner_timeout" in str(err.value) and "--allow-different-settings" in str(err.value)
    allowed = check_comparable(tmp_path / "new", tmp_path / "old", allow_different=True)
    assert allowed == err.value.differences


def test_result_neutral_settings_do_not_block(tmp_path: Path) -> None:
    _write_scan(tmp_path / "old", _config(tmp_path / "old", max_connections=10, workers=10), with_settings=False)
    _write_scan(tmp_path / "new", _config(tmp_path / "new", max_connections=300, workers=300), with_settings=True)
    assert check_comparable(tmp_path / "new", tmp_path / "old", allow_different=False) == ()


def test_trust_store_digest_from_provenance_compared(tmp_path: Path) -> None:
    """Same --ca-file path, another bundle: the digest in the run record's provenance tells them apart."""
    for name, digest in (("old", "aa" * 32), ("new", "bb" * 32)):
        _write_scan(tmp_path / name, _config(tmp_path / name), with_settings=True)
        record = json.loads((tmp_path / name / "run.json").read_text())
        record["attempts"] = [{"provenance": {"trust_store": {"sha256": digest}}}]  # scanner.provenance's place
        (tmp_path / name / "run.json").write_text(json.dumps(record))
    with pytest.raises(SettingsMismatchError) as err:
        check_comparable(tmp_path / "new", tmp_path / "old", allow_different=False)
    assert err.value.differences == (f"trust_store.sha256: {'aa' * 32!r} -> {'bb' * 32!r}",)
    # An older scan whose record has no digest is compared on the ca_file setting alone.
    _write_scan(tmp_path / "older", _config(tmp_path / "older"), with_settings=False)
    assert check_comparable(tmp_path / "new", tmp_path / "older", allow_different=False) == ()


def test_settings_read_from_the_run_table_without_run_json(tmp_path: Path) -> None:
    """A dataset copied without run.json: the newest attempt's row of the run table holds the config."""
    from datetime import UTC, datetime, timedelta

    from scanner.output.parquet import DatasetWriter
    from scanner.output.rows import RunRow
    from scanner.status import AttemptOutcome

    old_config, new_config = _config(tmp_path, banner_timeout=5.0), _config(tmp_path, banner_timeout=7.0)
    writer = DatasetWriter(tmp_path, segment_rows=10, row_group_size=10)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for attempt, config in ((1, old_config), (2, new_config)):
        writer.write([RunRow(
            scan_id="s", tool_version="t", schema_version="7", started_at=now, finished_at=now + timedelta(attempt),
            input="x", config_json=json.dumps(dataclasses.asdict(config), default=str), input_lines=0, domains=0,
            invalid_lines=0, duplicate_lines=0, probes=0, dns_queries=0, completed=True, attempt=attempt,
            resumed_lines=0, skipped_lines=0, psl_version="p", outcome=AttemptOutcome.COMPLETED, domain_rows=0,
            mx_rows=0, provenance_json="{}", ipv4_reachable=True, ipv6_reachable=True, families_detail="")])
    writer.close()
    (tmp_path / "domains").mkdir(exist_ok=True)
    settings = scan_settings(tmp_path)
    assert settings["probe.banner_timeout"] == 7.0 and settings.pop(RUBRIC_KEY) is None
    assert settings == result_settings(new_config)


def test_the_trust_store_digest_comes_from_the_newest_attempts_provenance() -> None:
    """The scan record keeps each attempt's provenance (scanner.provenance); the newest one's counts."""
    from scanner.report.settings import _trust_store_digest

    record = {"attempts": [{"provenance": {"trust_store": {"sha256": "old"}}},
                           {"provenance": {"trust_store": {"sha256": "new"}}}]}
    assert _trust_store_digest(record) == "new"
    assert _trust_store_digest({"attempts": []}) is None and _trust_store_digest({}) is None
