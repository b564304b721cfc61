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
        record["provenance"] = {"trust_store_sha256": digest}
        (tmp_path / name / "run.json").write_text(json.dumps(record))
    with pytest.raises(SettingsMismatchError) as err:
        check_comparable(tmp_path / "new", tmp_path / "old", allow_different=False)
    assert err.value.differences == (f"trust_store.sha256: {'aa' * 32!r} -> {'bb' * 32!r}",)
    # An older scan whose record has no digest is compared on the ca_file setting alone.
    _write_scan(tmp_path / "older", _config(tmp_path / "older"), with_settings=False)
    assert check_comparable(tmp_path / "new", tmp_path / "older", allow_different=False) == ()
