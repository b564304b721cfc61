"""Three scans of the standard world, changed between them (EPOCH_CHANGES: a server loses STARTTLS, a
certificate expires, a policy moves to enforce), read as a series.

Every series figure, transition count and regressed domain is recomputed here with pandas straight from
the three datasets' Parquet files. The datasets are also read whole with pandas, polars and DuckDB
(globs over one scan and over the folder of scans, with the reports and exports written beside the
tables), exported to JSON Lines and CSV and read back, and the series page is opened in a real headless
Chromium at two widths.
"""

from __future__ import annotations

import asyncio
import csv
import ipaddress
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd  # type: ignore[import-untyped]
import polars as pl
import pyarrow as pa
import pytest
from publicsuffixlist import PublicSuffixList

import scanner
from scanner.cli import main
from scanner.export import CertEncoding, read_jsonl
from scanner.output.arrow_schema import arrow_schema
from scanner.output.rows import TABLES
from scanner.report import SeriesReport, build_series, write_series
from scanner.report.series import GRADE_STATES, SERIES_FIGURES, STARTTLS_STATES
from scanner.report.settings import SettingsMismatchError
from scanner.report.stats import newcombe_difference, wilson_interval
from tests.integration.browser import ARTIFACTS, CHROMIUM, WIDTHS, inspect_page
from tests.integration.scanning import STANDARD_OPTIONS, scan
from worlds.ports import pick_loopback_block
from worlds.scenario import standard_world

pytestmark = pytest.mark.slow

GRADE_RANK = {"A+": 7, "A": 6, "B": 5, "C": 4, "D": 3, "E": 2, "F": 1}
STARTTLS_RANK = {"all": 3, "some": 2, "none": 1}


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """scans/s0, s1, s2: the world at epochs 0, 1 and 2; the last scan reads the list as a Tranco-style CSV.

    Its own standard world, not the session's: changing the epoch rewrites DNS and the policy hosts."""
    folder = tmp_path_factory.mktemp("scans")
    with standard_world(tmp_path_factory.mktemp("world"), pick_loopback_block()) as world:
        ranked = folder.parent / "ranked.csv"
        ranked.write_text("".join(f"{i},{d}\n" for i, d in enumerate(world.expected, start=1)), encoding="utf-8")
        outs = []
        for epoch in range(3):
            if epoch:
                world.set_epoch(epoch)
            outs.append(folder / f"s{epoch}")
            scan(world, outs[-1], *STANDARD_OPTIONS, domains=ranked if epoch == 2 else world.domains_file)
        # Beside the folder (the folder's tests read exactly three scans): epoch 2 again, from a vantage
        # without IPv4, where the IPv4-only domains are "not_covered".
        scan(world, _ipv4_off(outs), *STANDARD_OPTIONS, "--ipv4", "off")
        yield outs


def _ipv4_off(scans: list[Path]) -> Path:
    return scans[0].parent.parent / "ipv4-off"


@pytest.fixture(scope="module")
def series(scans: list[Path]) -> SeriesReport:
    return build_series([scans[2], scans[0], scans[1]])  # any order: sorted by scan start


def _distinct(out: Path) -> pd.DataFrame:
    d = pd.read_parquet(out / "domains")
    return d[d.domain.notna() & (d.status != "duplicate")]


# Each series figure recomputed with pandas: (numerator mask, denominator mask) of a domains frame.
def _b(s: pd.Series) -> pd.Series:
    return s.fillna(False).astype(bool)


PANDAS_FIGURES: dict[str, Callable[[pd.DataFrame], tuple[pd.Series, pd.Series]]] = {
    "starttls_all": lambda d: (d.starttls == "all", d.status == "ok"),
    "starttls_some": lambda d: (d.starttls == "some", d.status == "ok"),
    "starttls_none": lambda d: (d.starttls == "none", d.status == "ok"),
    "starttls_incomplete": lambda d: (d.starttls == "incomplete", d.status == "ok"),
    "certs_valid_all": lambda d: (_b(d.certs_valid_all), (d.status == "ok") & d.certs_valid_all.notna()),
    "grade_a_or_better": lambda d: (d.grade.isin(["A+", "A"]), d.grade.notna()),
    "grade_f": lambda d: (d.grade == "F", d.grade.notna()),
    "mta_sts_active": lambda d: (_b(d.mta_sts_active), (d.status == "ok") & d.mta_sts_txt.notna()),
    "mta_sts_enforce": lambda d: (_b(d.mta_sts_active) & (d.mta_sts_mode == "enforce"),
                                  (d.status == "ok") & d.mta_sts_txt.notna()),
    "tlsrpt_valid": lambda d: (d.tlsrpt_status == "valid", (d.status == "ok") & d.mta_sts_txt.notna()),
    "dane_tlsa": lambda d: (d.dane_mx_with_tlsa.fillna(0) > 0, (d.status == "ok") & d.mta_sts_txt.notna()),
    "forced_tls_safe": lambda d: (_b(d.forced_tls_safe), d.status == "ok"),
}


def test_every_series_figure_equals_pandas(series: SeriesReport, scans: list[Path]) -> None:
    assert set(PANDAS_FIGURES) == {k for k, _, _, _ in SERIES_FIGURES}
    frames = [_distinct(s) for s in scans]
    panel = set.intersection(*(set(f.domain) for f in frames))
    assert series.panel_domains == len(panel)
    assert [s.out_dir for s in series.scans] == [str(s) for s in scans]
    for view, sets in (("cross", frames), ("panel", [f[f.domain.isin(panel)] for f in frames])):
        for key, compute in PANDAS_FIGURES.items():
            fig = series.figure(key, view)
            expected = []
            for d in sets:
                num, den = compute(d)
                expected.append((int((_b(num) & _b(den)).sum()), int(_b(den).sum())))
            assert [(s.numerator, s.denominator) for s in fig.shares] == expected, (view, key)
            for share in fig.shares:
                assert share.ci == wilson_interval(share.numerator, share.denominator)
            for i, change in enumerate(fig.changes):
                (n1, d1), (n0, d0) = expected[i + 1], expected[i]
                interval = newcombe_difference(n1, d1, n0, d0)
                assert change.interval == interval, (view, key, i)
                assert change.significant == (interval is not None and interval.excludes_zero)


def _pairs(scans: list[Path], i: int) -> pd.DataFrame:
    return _distinct(scans[i]).merge(_distinct(scans[i + 1]), on="domain", suffixes=("_old", "_new"))


def test_transition_counts_equal_pandas(series: SeriesReport, scans: list[Path]) -> None:
    for i in range(len(scans) - 1):
        both = _pairs(scans, i)
        for kind, states, column in (("starttls", STARTTLS_STATES, "starttls"), ("grade", GRADE_STATES, "grade")):
            old, new = both[f"{column}_old"].fillna("ungraded"), both[f"{column}_new"].fillna("ungraded")
            table = pd.crosstab(old, new)
            t = series.transition(kind, i)
            for a in states:
                for b in states:
                    expected = int(table.loc[a, b]) if a in table.index and b in table.columns else 0
                    assert t.count(a, b) == expected, (kind, i, a, b)
            assert sum(map(sum, t.counts)) == len(both)


def test_regressed_domains_exact(series: SeriesReport, scans: list[Path]) -> None:
    expected = []
    for i in range(len(scans) - 1):
        for r in _pairs(scans, i).itertuples():
            reasons = []
            o, n = STARTTLS_RANK.get(r.starttls_old), STARTTLS_RANK.get(r.starttls_new)
            if o is not None and n is not None and n < o:
                reasons.append("starttls")
            o, n = GRADE_RANK.get(r.grade_old), GRADE_RANK.get(r.grade_new)
            if o is not None and n is not None and n < o:
                reasons.append("grade")
            if r.certs_valid_all_old is True and r.certs_valid_all_new is False:
                reasons.append("certificate")
            if reasons:
                expected.append((r.domain, i, tuple(reasons)))
    got = [(r.domain, r.from_scan, r.reasons) for r in series.regressions]
    assert got == sorted(expected, key=lambda e: (e[1], e[0])) and series.regressions_total == len(expected)
    # What the world was changed to produce:
    by = {(r.domain, r.from_scan): r for r in series.regressions}
    lost = by[("multiline.world.test", 0)]
    assert (lost.old_starttls, lost.new_starttls) == ("all", "none") and "starttls" in lost.reasons
    assert "certificate" in by[("shared2.world.test", 1)].reasons
    assert series.transition("starttls", 0).count("all", "none") >= 1
    enforce = series.figure("mta_sts_enforce", "panel")
    assert enforce.shares[2].numerator == enforce.shares[1].numerator + 1  # ordered.world.test moved to enforce


def test_series_cli_writes_three_renderings(scans: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "series"
    assert main(["report", *map(str, scans), "--dest", str(dest)]) == 0
    data = json.loads((dest / "series.json").read_text())
    assert [s["scan_id"] for s in data["scans"]] == [scanner.load(s).run["scan_id"][0].as_py() for s in scans]
    assert data["regressions_total"] >= 2 and "regressed" in (dest / "series.md").read_text().lower()
    html = (dest / "series.html").read_text()
    assert html.count('class="chart line-chart"') == 2 * len(SERIES_FIGURES)
    assert "multiline.world.test" in html
    # --baseline takes one scan; a series compares its own.
    assert main(["report", str(scans[1]), str(scans[2]), "--baseline", str(scans[0])]) == 2


def test_not_covered_domains_have_their_own_transition_state(scans: list[Path]) -> None:
    """Every StarttlsVerdict is a transition state: a domain going to not_covered is counted, not a crash."""
    report = build_series([scans[2], _ipv4_off(scans)], allow_different_settings=True)
    (starttls,) = (t for t in report.transitions if t.kind == "starttls")
    assert starttls.states == STARTTLS_STATES and "not_covered" in STARTTLS_STATES
    pairs = _distinct(scans[2])[["domain", "starttls"]].merge(
        _distinct(_ipv4_off(scans))[["domain", "starttls"]], on="domain", suffixes=("_old", "_new"))
    expected = pairs.groupby(["starttls_old", "starttls_new"]).size().to_dict()
    got = {(old, new): n for i, old in enumerate(starttls.states) for j, new in enumerate(starttls.states)
           if (n := starttls.counts[i][j])}
    assert got == expected and any(new == "not_covered" for _, new in got)


def test_series_with_different_settings_refused_unless_allowed(scans: list[Path], tmp_path: Path) -> None:
    run_json = scans[1] / "run.json"
    original = run_json.read_text()
    record = json.loads(original)
    record["result_settings"]["probe.connect_timeout"] = 99.0  # as if scan 2 had run with --connect-timeout 99
    run_json.write_text(json.dumps(record))
    try:
        with pytest.raises(SettingsMismatchError) as err:
            build_series(scans)
        assert err.value.differences == ("probe.connect_timeout: 10.0 -> 99.0",)
        allowed = build_series(scans, allow_different_settings=True)
        assert allowed.scans[1].settings_differences == ("probe.connect_timeout: 10.0 -> 99.0",)
        assert allowed.scans[2].settings_differences == ("probe.connect_timeout: 99.0 -> 10.0",)
        assert main(["report", *map(str, scans), "--dest", str(tmp_path / "s"), "--allow-different-settings"]) == 0
        header = (tmp_path / "s" / "series.html").read_text().split("</header>")[0]
        assert "probe.connect_timeout: 10.0 -&gt; 99.0" in header
    finally:
        run_json.write_text(original)


def test_provider_rank_and_grade_ordinal_columns(scans: list[Path]) -> None:
    psl = PublicSuffixList(accept_unknown=True, only_icann=True)

    def provider(host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return psl.privatesuffix(host) or host
        return "(IP literal)"

    for out in scans:
        mx, domains = pd.read_parquet(out / "mx"), pd.read_parquet(out / "domains")
        assert (mx.provider == mx.mx_host.map(provider)).all()
        first = domains.mx_hosts.map(lambda hosts: provider(hosts[0]) if len(hosts) else None)
        assert (domains.mx_provider.fillna("-") == first.fillna("-")).all()
        assert set(mx.provider) >= {"world.test"}
        ranks = {"A+": 6, "A": 5, "B": 4, "C": 3, "D": 2, "E": 1, "F": 0}
        assert (domains.grade_ordinal.astype("Int64") == domains.grade.map(ranks).astype("Int64")).fillna(True).all()
        assert domains.grade_ordinal.isna().equals(domains.grade.isna())
        graded = domains[domains.grade.notna()].sort_values("grade_ordinal", ascending=False)
        assert list(dict.fromkeys(graded.grade)) == sorted(set(graded.grade), key=lambda g: -ranks[g])
        psl_version = pd.read_parquet(out / "run").psl_version.iloc[0]
        assert psl_version.startswith("publicsuffixlist ") and "list version" in psl_version
        attempts = json.loads((out / "run.json").read_text())["attempts"]  # one source: the attempt's provenance
        assert attempts[-1]["provenance"]["libraries"]["public_suffix_list"]["list"] == psl_version
    plain, ranked = pd.read_parquet(scans[0] / "domains"), pd.read_parquet(scans[2] / "domains")
    assert plain.input_rank.isna().all()
    in_order = plain.sort_values("input_line").domain  # rows are written as domains finish, not in input order
    expected = {d: i for i, d in enumerate(in_order, start=1)}
    assert dict(zip(ranked.domain, ranked.input_rank.astype(int), strict=True)) == expected


def test_load_series(scans: list[Path]) -> None:
    s = scanner.load_series(reversed(scans))
    assert [r.path for r in s.scans] == scans
    domains = s.domains.to_pandas()
    assert len(domains) == sum(len(pd.read_parquet(p / "domains")) for p in scans)
    assert list(domains.drop_duplicates("scan_id").scan_id) == [r.scan_id for r in s.scans]
    assert domains.groupby("scan_id").scan_started.nunique().eq(1).all()
    con = s.duckdb()
    rows = con.execute("SELECT scan_id, count(*) FROM domains GROUP BY 1").fetchall()
    assert dict(rows) == domains.groupby("scan_id").size().to_dict()
    assert con.execute("SELECT count(*) FROM mx").fetchone() == (len(s.mx),)


def test_whole_directory_reads(scans: list[Path], tmp_path: Path) -> None:
    """The README's idioms, with reports and exports written beside the tables first."""
    for out in scans:
        assert main(["report", str(out)]) == 0
        assert main(["export", str(out), "--format", "csv", "--table", "domains"]) == 0
    out = scans[0]
    expected = scanner.load(out).domains.num_rows
    assert len(pd.read_parquet(out / "domains")) == expected
    assert pl.scan_parquet(out / "domains" / "*.parquet").collect().height == expected
    assert pl.read_parquet(out / "mx" / "*.parquet").height == scanner.load(out).mx.num_rows
    folder = out.parent
    total = sum(scanner.load(s).domains.num_rows for s in scans)
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/domains/*.parquet')").fetchall() == [(expected,)]
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/*/domains/*.parquet')").fetchall() == [(total,)]
    per_scan = duckdb.sql(f"SELECT count(DISTINCT scan_id) FROM read_parquet('{folder}/*/domains/*.parquet')")
    assert per_scan.fetchall() == [(3,)]
    assert pl.scan_parquet(folder / "*" / "domains" / "*.parquet").select(pl.len()).collect().item() == total
    assert len(pd.read_parquet([str(p) for s in scans for p in (s / "domains").glob("*.parquet")])) == total


def _same_rows(a: pa.Table, b: pa.Table) -> None:
    assert a.num_rows == b.num_rows
    assert a.to_pylist() == b.to_pylist()


@pytest.mark.parametrize("certs", list(CertEncoding))
def test_export_jsonl_round_trip(scans: list[Path], tmp_path: Path, certs: CertEncoding) -> None:
    out = scans[2]
    assert main(["export", str(out), "--dest", str(tmp_path), "--certs", certs.value]) == 0
    dataset = scanner.load(out)
    for table in TABLES:
        back = read_jsonl(tmp_path / f"{table}.jsonl", table, certs)
        _same_rows(back, dataset.table(table).cast(arrow_schema(TABLES[table])))
    chains = [c for c in dataset.probes.column("cert_chain").to_pylist() if c]
    assert chains  # the world serves certificates
    first = json.loads((tmp_path / "probes.jsonl").read_text().splitlines()[0])
    assert isinstance(first["cert_chain"], list)
    if certs is CertEncoding.PEM:
        assert any(c.startswith("-----BEGIN CERTIFICATE-----") for line in (tmp_path / "probes.jsonl").read_text()
                   .splitlines() for c in json.loads(line)["cert_chain"])


def test_export_csv(scans: list[Path], tmp_path: Path) -> None:
    out = scans[2]
    assert main(["export", str(out), "--format", "csv", "--dest", str(tmp_path)]) == 0
    dataset = scanner.load(out)
    with (tmp_path / "domains.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    original = dataset.domains.to_pylist()
    assert len(rows) == len(original)
    for got, want in zip(rows, original, strict=True):
        assert json.loads(got["mx_hosts"]) == want["mx_hosts"]  # lists are JSON arrays
        assert got["grade"] == (want["grade"] or "")
        assert got["starttls_all"] == ("" if want["starttls_all"] is None else str(want["starttls_all"]).lower())
    with pytest.raises(SystemExit) as usage:  # argparse: not a table
        main(["export", str(out), "--table", "nosuch"])
    assert usage.value.code == 2


_DRILL = """(async () => {
  const box = document.querySelector('#drill-regressions');
  const rows = () => Array.from(box.querySelectorAll('tbody tr')).filter(r => !r.hidden).length;
  const input = box.querySelector('input.drill-search');
  const before = rows();
  input.value = 'multiline'; input.dispatchEvent(new Event('input'));
  const filtered = rows();
  const text = box.querySelector('tbody tr:not([hidden])').textContent;
  input.value = ''; input.dispatchEvent(new Event('input'));
  return {ready: box.classList.contains('drill-ready'), before: before, filtered: filtered, text: text,
          info: box.querySelector('.drill-info').textContent};
})()"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package (/usr/bin/chromium)")
@pytest.mark.parametrize("width", WIDTHS)
async def test_series_page_in_headless_chromium(series: SeriesReport, tmp_path: Path, width: int) -> None:
    files = write_series(series, tmp_path)
    screenshot = ARTIFACTS / f"series-{width}.png"
    facts: dict[str, Any] = await asyncio.wait_for(inspect_page(files.html.as_uri(), screenshot, width, _DRILL), 90)
    assert facts["errors"] == [] and facts["overlaps"] == []
    assert facts["resources"] == 0 and facts["scroll_width"] <= facts["client_width"]
    assert len(facts["charts"]) == 2 * len(SERIES_FIGURES)
    assert all(c["width"] > 0 and c["marks"] > 0 for c in facts["charts"])
    drill = facts["script"]
    assert drill["ready"] and drill["before"] == min(25, series.regressions_total)
    assert drill["filtered"] == 1 and "multiline.world.test" in drill["text"]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
