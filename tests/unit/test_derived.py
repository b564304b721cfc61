"""Files derived from a scan (reports, exports) are removed with the scan they describe (scan --overwrite)."""

from __future__ import annotations

from pathlib import Path

from scanner.derived import EXPORT_DIR, REPORT_DIR, SERIES_DIR, remove_derived


def test_remove_derived_keeps_what_it_did_not_write(tmp_path: Path) -> None:
    for directory, name in ((REPORT_DIR, "report.html"), (REPORT_DIR, "report-domains.jsonl"),
                            (SERIES_DIR, "series.json"), (EXPORT_DIR, "probes.csv")):
        (tmp_path / directory).mkdir(exist_ok=True)
        (tmp_path / directory / name).write_text("x")
    (tmp_path / EXPORT_DIR / "my-notes.txt").write_text("mine")
    (tmp_path / "domains").mkdir()
    (tmp_path / "domains" / "part-00000.parquet").write_text("table")
    removed = remove_derived(tmp_path)
    assert sorted(p.name for p in removed) == ["probes.csv", "report-domains.jsonl", "report.html", "series.json"]
    assert not (tmp_path / REPORT_DIR).exists() and not (tmp_path / SERIES_DIR).exists()
    assert (tmp_path / EXPORT_DIR / "my-notes.txt").read_text() == "mine"  # a user's file, and its directory, stay
    assert (tmp_path / "domains" / "part-00000.parquet").exists()
