"""Report statistics and building blocks: Wilson intervals, share formatting, providers, charts, and the
report over hand-made datasets (empty, several providers, an older schema lacking columns)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.output.arrow_schema import arrow_schema
from scanner.output.rows import TABLES
from scanner.providers import IP_LITERAL, ProviderMapper
from scanner.report import Delta, ReportError, Share, build_report, write_report
from scanner.report.charts import Bar, bar_chart
from scanner.report.drill import script_csp_source
from scanner.report.render import render_html, render_markdown
from scanner.report.stats import (
    Interval,
    format_ci,
    format_percent,
    format_points,
    newcombe_difference,
    wilson_interval,
)

# Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of seven
# methods", Statistics in Medicine 17:857-872, Table II, method 3 (Wilson score, no continuity correction).
NEWCOMBE_1998 = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (29, 29, 0.8830, 1.0000),
]


@pytest.mark.parametrize(("x", "n", "low", "high"), NEWCOMBE_1998)
def test_wilson_matches_published_values(x: int, n: int, low: float, high: float) -> None:
    ci = wilson_interval(x, n)
    assert ci is not None
    assert (round(ci.low, 4), round(ci.high, 4)) == (low, high)


def test_wilson_zero_trials_is_no_estimate() -> None:
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize(("x", "n"), [(-1, 5), (6, 5), (0, -1)])
def test_wilson_rejects_impossible_counts(x: int, n: int) -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(x, n)


@given(st.integers(min_value=1, max_value=10**9).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_is_a_proper_interval(counts: tuple[int, int]) -> None:
    x, n = counts
    ci = wilson_interval(x, n)
    mirror = wilson_interval(n - x, n)
    assert ci is not None and mirror is not None
    assert 0.0 <= ci.low <= x / n <= ci.high <= 1.0
    # Symmetric in successes and failures.
    assert ci.low == pytest.approx(1.0 - mirror.high, abs=1e-12)


def test_wilson_narrows_with_more_trials() -> None:
    small, large = wilson_interval(30, 100), wilson_interval(3000, 10000)
    assert small is not None and large is not None
    assert large.high - large.low < small.high - small.low


def test_share_zero_over_zero_is_na_not_a_crash() -> None:
    share = Share.estimate(0, 0)
    assert share.value is None and share.ci is None
    assert format_ci(share) == "n/a"
    assert format_percent(share.value) == "n/a"


def test_share_kinds() -> None:
    estimate, count = Share.estimate(7, 20), Share.count(7, 20)
    assert estimate.ci == wilson_interval(7, 20) and count.ci is None
    assert format_ci(estimate) == "18.1–56.7%"  # p=0.35, centre 0.3742, half-width 0.1930
    assert format_ci(count) == "—"


@pytest.mark.parametrize(("numerator", "denominator"), [(3, 2), (-1, 2), (0, -1)])
def test_share_rejects_impossible_counts(numerator: int, denominator: int) -> None:
    with pytest.raises(ValueError, match="numerator"):
        Share.count(numerator, denominator)


@pytest.mark.parametrize(("value", "text"), [
    (0.35, "35.0%"), (1.0, "100.0%"), (0.0, "0.0%"), (0.001, "0.1%"), (0.000124, "0.012%"),
    (0.0000012, "0.00012%"), (0.00099, "0.099%"), (0.99999, "100.0%"), (None, "n/a"),
])
def test_format_percent(value: float | None, text: str) -> None:
    assert format_percent(value) == text


def test_format_points_and_deltas() -> None:
    assert (format_points(None), format_points(2.46), format_points(-0.01), format_points(-3.0)) == (
        "n/a", "+2.5 pp", "±0.0 pp", "-3.0 pp")
    delta = Delta("t", "f", "label", Share.estimate(1, 4), Share.estimate(1, 2))
    assert delta.points == pytest.approx(25.0)
    assert Delta("t", "f", "label", None, Share.estimate(1, 2)).points is None
    assert Delta("t", "f", "label", Share.estimate(1, 2), Share.estimate(0, 0)).points is None


def test_interval_formatting_keeps_small_bounds_visible() -> None:
    share = Share(1, 10000, Interval(0.0000177, 0.000566))
    assert format_ci(share) == "0.0018–0.057%"


# --- providers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "provider"), [
    ("aspmx.l.google.com", "google.com"),
    ("example-com.mail.protection.outlook.com", "outlook.com"),
    ("MX1.Example.CO.UK.", "example.co.uk"),
    ("mx-good.world.test", "world.test"),  # unknown TLD: label + TLD
    ("192.0.2.25", IP_LITERAL),
    ("2001:db8::25", IP_LITERAL),
    ("com", "com"),  # a public suffix itself has no registered domain
])
def test_provider_is_the_registered_domain(host: str, provider: str) -> None:
    assert ProviderMapper().provider(host) == provider


def test_provider_answers_are_remembered_within_a_bound() -> None:
    """A scan asks once per domain behind a host: the same answers, from a memo that stays bounded."""
    mapper = ProviderMapper(memo=2)
    hosts = ["mx1.example.co.uk", "MX.Example.COM.", "192.0.2.1", "mx1.example.co.uk", "aspmx.l.google.com"]
    assert [mapper.provider(h) for h in hosts] == ["example.co.uk", "example.com", IP_LITERAL, "example.co.uk",
                                                   "google.com"]
    assert [mapper.provider(h) for h in reversed(hosts)] == ["google.com", "example.co.uk", IP_LITERAL,
                                                             "example.com", "example.co.uk"]
    assert len(mapper._memo) == 2


# --- charts ----------------------------------------------------------------------------------------


def test_bar_chart_escapes_and_scales() -> None:
    svg = bar_chart("c1", "t <b>", [Bar("<script>x</script>", 2.0, "50%"), Bar("b", 1.0, "25%", "#123456")])
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "t &lt;b&gt;" in svg
    assert svg.count("<rect") == 2 and 'width="210.0"' in svg and 'width="105.0"' in svg
    assert 'fill="#123456"' in svg


def test_bar_chart_without_data() -> None:
    svg = bar_chart("c2", "empty", [])
    assert "no data" in svg and "<rect" not in svg and svg.startswith("<svg")


# --- hand-made datasets ----------------------------------------------------------------------------


def _default(field: pa.Field) -> Any:
    t = field.type
    if pa.types.is_list(t):
        return []
    if pa.types.is_timestamp(t):
        return datetime(2026, 1, 1, tzinfo=UTC)
    if pa.types.is_boolean(t):
        return False
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return 0
    return ""


def _write(out: Path, table: str, rows: list[dict[str, Any]], drop: tuple[str, ...] = ()) -> None:
    schema = arrow_schema(TABLES[table])
    full = [{f.name: row.get(f.name, None if f.nullable else _default(f)) for f in schema} for row in rows]
    data = pa.Table.from_pylist(full, schema=schema)
    data = data.drop_columns(list(drop))
    (out / table).mkdir(parents=True, exist_ok=True)
    pq.write_table(data, out / table / "part-00000.parquet")


def _dataset(out: Path, providers: dict[str, tuple[int, str]], drop_domain_columns: tuple[str, ...] = ()) -> None:
    """One mail domain per count, MX at the provider; verdict and grade per provider."""
    domains: list[dict[str, Any]] = []
    mx: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    for p_index, (host, (count, verdict)) in enumerate(providers.items()):
        address = f"192.0.2.{p_index + 1}"
        probes.append({"probe_id": f"{address}|25", "address": address, "ip_version": 4, "port": 25,
                       "mx_hosts": [host], "sni": host, "status": "starttls_ok" if verdict == "all" else "no_starttls",
                       "tls_ok": verdict == "all", "tls_version": "TLSv1.3" if verdict == "all" else None})
        for i in range(count):
            domain = f"d{i}.p{p_index}.example"
            domains.append({"scan_id": "s", "domain": domain, "input_line": len(domains) + 1, "input_raw": domain,
                            "status": "ok", "mx_source": "mx", "mx_count": 1, "mx_hosts": [host], "starttls": verdict,
                            "grade": "A" if verdict == "all" else "F", "grading_version": "2026.1",
                            "tlsrpt_status": "valid" if i == 0 else "missing"})
            mx.append({"scan_id": "s", "domain": domain, "mx_host": host, "host_status": "ok", "address": address,
                       "ip_version": 4, "port": 25, "probe_id": f"{address}|25", "grade": domains[-1]["grade"]})
    _write(out, "domains", domains, drop_domain_columns)
    _write(out, "mx", mx)
    _write(out, "probes", probes)
    _write(out, "run", [{"scan_id": "s", "config_json": '{"probe": {"enumeration": "off"}, "policy_checks": true}',
                         "completed": True}])


def test_providers_on_a_handmade_dataset(tmp_path: Path) -> None:
    _dataset(tmp_path, {"aspmx.l.google.com": (5, "all"), "alt1.aspmx.l.google.com": (1, "all"),
                        "mx.self-hosted.co.uk": (3, "none"), "mail.protection.outlook.com": (1, "all")})
    report = build_report(tmp_path)
    rows = {r.provider: r for r in report.providers}
    assert [r.provider for r in report.providers] == ["google.com", "self-hosted.co.uk", "outlook.com"]
    google = rows["google.com"]
    assert (google.domains.numerator, google.domains.denominator, google.addresses) == (6, 10, 2)
    assert (google.starttls_all.numerator, google.tls13.numerator, google.tls13.denominator) == (6, 6, 6)
    assert [(g.grade, g.count) for g in google.grades] == [("A", 6)]
    assert (rows["self-hosted.co.uk"].starttls_all.numerator, rows["self-hosted.co.uk"].tls13.denominator) == (0, 0)
    assert report.provider_concentration.get("top1") == Share.count(6, 10)
    assert report.provider_shares.get("outlook.com").numerator == 1
    assert report.tlsrpt.get("valid") == Share.estimate(4, 10)  # first domain of each provider


def test_domain_version_is_the_lowest_of_its_tls_addresses(tmp_path: Path) -> None:
    """mixed.example: MX at TLS 1.3 and at TLS 1.2 (enumerated) → TLS 1.2; its no-TLS MX does not count."""
    probes = [
        {"probe_id": "192.0.2.1|25", "address": "192.0.2.1", "status": "starttls_ok", "tls_ok": True,
         "tls_version": "TLSv1.3"},
        {"probe_id": "192.0.2.2|25", "address": "192.0.2.2", "status": "starttls_ok", "tls_ok": True,
         "tls_version": "TLSv1.3", "preferred_version": "TLSv1.2"},  # enumeration wins over the handshake
        {"probe_id": "192.0.2.3|25", "address": "192.0.2.3", "status": "no_starttls", "tls_ok": False},
    ]
    links = [("mixed.example", "a.mx.example", "192.0.2.1"), ("mixed.example", "b.mx.example", "192.0.2.2"),
             ("mixed.example", "c.mx.example", "192.0.2.3"), ("modern.example", "a.mx.example", "192.0.2.1")]
    _write(tmp_path, "probes", probes)
    _write(tmp_path, "mx", [{"domain": d, "mx_host": h, "host_status": "ok", "address": a, "probe_id": f"{a}|25"}
                            for d, h, a in links])
    _write(tmp_path, "domains", [{"domain": d, "status": "ok", "mx_hosts": ["a.mx.example"], "starttls": s}
                                 for d, s in (("mixed.example", "some"), ("modern.example", "all"))])
    _write(tmp_path, "run", [])
    report = build_report(tmp_path)
    assert report.versions_domain.get("tls13") == Share.estimate(1, 2)  # modern.example
    assert report.versions_domain.get("tls12") == Share.estimate(1, 2)  # mixed.example
    assert report.versions_address.get("tls12") == Share.estimate(1, 2)
    assert report.providers[0].tls13 == Share.estimate(1, 2)


def test_older_schema_missing_columns_reads_as_na(tmp_path: Path) -> None:
    _dataset(tmp_path, {"mx.example.net": (2, "all")}, drop_domain_columns=("tlsrpt_status", "grade"))
    report = build_report(tmp_path)
    assert report.tlsrpt.get("valid") == Share.estimate(0, 0)
    assert report.grades_domain.get("ungraded") == Share.estimate(2, 2)
    assert report.starttls.get("all") == Share.estimate(2, 2)


def test_empty_dataset_reports_na(tmp_path: Path) -> None:
    for table in TABLES:
        _write(tmp_path / "out", table, [])
    report = build_report(tmp_path / "out")
    assert all(f.share.denominator == 0 for t in report.tables() for f in t.figures)
    assert report.providers == () and report.scan.input_lines == 0
    files = write_report(report, tmp_path / "rep")
    assert "n/a" in files.markdown.read_text(encoding="utf-8")
    html = render_html(report)
    assert html.count("no data") == 10 and html.count("<script") == 1  # the drill-down, allowed by its hash
    assert script_csp_source() in html and "<script src" not in html
    assert "| published: Durumeric et al., IMC 2015 (abstract) |" in render_markdown(report)


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no scan tables"):
        build_report(tmp_path)
    with pytest.raises(ReportError, match="no such dataset directory"):
        build_report(tmp_path / "missing")


# Newcombe (1998), "Interval estimation for the difference between independent proportions: comparison of
# eleven methods", Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score, no continuity
# correction): (m, n, x, y, lower, upper) for p1 = m/n minus p2 = x/y.
NEWCOMBE_DIFFERENCE_1998 = [
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
]


@pytest.mark.parametrize(("m", "n", "x", "y", "low", "high"), NEWCOMBE_DIFFERENCE_1998)
def test_newcombe_difference_matches_published_table(m: int, n: int, x: int, y: int, low: float, high: float) -> None:
    interval = newcombe_difference(m, n, x, y)
    assert interval is not None
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)
    assert interval.excludes_zero == (low > 0 or high < 0)


@given(st.integers(0, 60), st.integers(1, 60), st.integers(0, 60), st.integers(1, 60))
def test_newcombe_difference_contains_the_difference(m: int, n: int, x: int, y: int) -> None:
    m, x = min(m, n), min(x, y)
    interval = newcombe_difference(m, n, x, y)
    assert interval is not None
    assert -1.0 <= interval.low <= m / n - x / y <= interval.high <= 1.0


def test_newcombe_difference_undefined_without_trials() -> None:
    assert newcombe_difference(0, 0, 3, 10) is None and newcombe_difference(3, 10, 0, 0) is None
