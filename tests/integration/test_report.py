"""The population report on a real scan of the standard world (nsd + mail servers on loopback).

Every figure is checked against counts computed here with pandas straight from the Parquet files (not
with the report's SQL), and a few against what the world was built to produce. A second scan (other
input, --no-policy) checks the baseline comparison, and a real headless Chromium opens the HTML page
over the DevTools protocol: no console error, charts drawn, screenshot saved under artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import pyarrow.parquet as pq
import pytest

from scanner.cli import main
from scanner.exit_codes import ExitCode
from scanner.report import Basis, FigureTable, Report, Share, build_report, write_domains_sidecar, write_report
from scanner.report.render import DRILL_COLUMNS
from scanner.report.stats import newcombe_difference, wilson_interval
from scanner.tls.groups import DEPRECATED_EC_GROUPS, group_name
from tests.integration.browser import ARTIFACTS, CHROMIUM, WIDTHS, inspect_page
from tests.integration.scanning import STANDARD_OPTIONS, scan
from worlds.scenario import SLOW_BANNER_DELAY, World

pytestmark = pytest.mark.slow

GRADES = ("A+", "A", "B", "C", "D", "E", "F")
VERSION_RANK = {"TLSv1.3": 5, "TLSv1.2": 4, "TLSv1.1": 3, "TLSv1.0": 2, "SSLv3": 1}


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(standard_scan: Path) -> Report:
    return build_report(standard_scan)


@pytest.fixture(scope="module")
def second_scan(standard: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world again, without one domain, with one new (non-existent) domain, without policy checks and with
    a longer banner timeout (still shorter than the slow server's delay): settings that differ."""
    work = tmp_path_factory.mktemp("second")
    lines = [d for d in standard.expected if d != "refused.world.test"] + ["added.world.test"]
    domains = work / "domains.txt"
    domains.write_text("\n".join(lines) + "\n", encoding="utf-8")
    scan(standard, work / "out", *STANDARD_OPTIONS, "--no-policy", "--banner-timeout", str(SLOW_BANNER_DELAY / 2),
         domains=domains)
    return work / "out"


@pytest.fixture(scope="module")
def compared(standard_scan: Path, second_scan: Path) -> Report:
    return build_report(second_scan, baseline=standard_scan, allow_different_settings=True)


# --- independent counts (pandas on the Parquet files) ----------------------------------------------


class Frames:
    def __init__(self, out: Path) -> None:
        self.domains: pd.DataFrame = pq.read_table(out / "domains").to_pandas()
        self.mx: pd.DataFrame = pq.read_table(out / "mx").to_pandas()
        self.probes: pd.DataFrame = pq.read_table(out / "probes").to_pandas()
        self.mail = self.domains[self.domains.status == "ok"]
        self.tls = self.probes[self.probes.tls_ok]
        self.enumerated = self.probes[self.probes.enum_mode.notna()]


@pytest.fixture(scope="module")
def frames(standard_scan: Path) -> Frames:
    return Frames(standard_scan)


def _n(mask: Any) -> int:
    return int(mask.sum())


def _highest(probes: pd.DataFrame) -> pd.Series:
    return probes.preferred_version.fillna(probes.tls_version)


def _domain_version_rank(f: Frames) -> pd.Series:
    """Per mail domain with a TLS address: the lowest of its TLS addresses' highest versions."""
    ranks = _highest(f.tls).map(VERSION_RANK).fillna(0)
    by_probe = pd.Series(ranks.values, index=f.tls.probe_id.values)
    links = f.mx[f.mx.probe_id.isin(by_probe.index)][["domain", "probe_id"]].drop_duplicates()
    links = links[links.domain.isin(f.mail.domain)]
    return links.assign(r=links.probe_id.map(by_probe)).groupby("domain").r.min()


def _has(values: Any, item: str) -> bool:
    return values is not None and item in list(values)


def _length(values: Any) -> int:
    return 0 if values is None else len(values)


def assert_table(table: FigureTable, expected: dict[str, tuple[int, int]]) -> None:
    got = {k: (table.get(k).numerator, table.get(k).denominator) for k in expected}
    assert got == expected, table.key
    for fig in table.figures:
        share = fig.share
        if table.basis is Basis.ESTIMATE and share.denominator:
            assert share.ci == wilson_interval(share.numerator, share.denominator), (table.key, fig.key)
            assert share.ci is not None and share.ci.low <= share.numerator / share.denominator <= share.ci.high
        else:
            assert share.ci is None, (table.key, fig.key)


# --- figures against pandas ------------------------------------------------------------------------


def test_domain_status_and_funnel(report: Report, frames: Frames, standard: World) -> None:
    d = frames.domains
    lines = len(d)
    assert lines == len(standard.expected)
    statuses = d.status.value_counts().to_dict()
    expected = {s: (int(statuses.get(s, 0)), lines) for s in (
        "ok", "invalid_input", "duplicate", "excluded", "null_mx", "dns_nxdomain", "dns_no_mail_host",
        "dns_servfail", "dns_timeout", "dns_refused", "dns_error", "mx_no_address", "internal_error")}
    expected["ok_implicit"] = (_n((d.status == "ok") & (d.mx_source == "implicit")), lines)
    expected["ok_mx"] = (_n((d.status == "ok") & (d.mx_source == "mx")), lines)
    assert_table(report.domain_status, expected)
    # The world's design: 20 mail domains, one of them through implicit MX, one null MX, one SERVFAIL.
    assert expected["ok"][0] == sum(1 for e in standard.expected.values() if e.domain_status == "ok")
    assert (expected["ok_implicit"][0], expected["null_mx"][0], expected["dns_servfail"][0]) == (1, 1, 1)

    addresses = frames.mx[frames.mx.address.notna()].drop_duplicates("address")
    assert_table(report.inventory, {
        "ipv4": (_n(addresses.ip_version == 4), len(addresses)),
        "ipv6": (_n(addresses.ip_version == 6), len(addresses)),
    })
    p = frames.probes
    attempted = p[~p.status.isin(["skipped_reserved_address", "skipped_excluded"])]
    definitive = attempted.status.isin(["starttls_ok", "no_starttls", "starttls_rejected", "tls_handshake_failed"])
    assert_table(report.probe_funnel, {
        "connected": (_n(~attempted.failure_phase.isin(["address", "connect"])), len(attempted)),
        "banner_220": (_n(attempted.banner_code == 220), len(attempted)),
        "ehlo": (_n(attempted.starttls_advertised.notna()), len(attempted)),
        "advertised": (_n(attempted.starttls_advertised.fillna(False).astype(bool)), len(attempted)),
        "starttls_220": (_n(attempted.starttls_code == 220), len(attempted)),
        "tls_ok": (_n(attempted.tls_ok), len(attempted)),
        "tls_ok_definitive": (_n(attempted.tls_ok), _n(definitive)),
        "plaintext_after_starttls": (_n(attempted.plaintext_after_starttls), _n(attempted.starttls_code == 220)),
    })


def test_starttls_verdicts(report: Report, frames: Frames, standard: World) -> None:
    mail = frames.mail
    counts = mail.starttls.value_counts().to_dict()
    decided = sum(int(counts.get(k, 0)) for k in ("all", "some", "none"))
    assert_table(report.starttls, {
        **{k: (int(counts.get(k, 0)), len(mail)) for k in ("all", "some", "none", "incomplete")},
        "any": (_n(mail.starttls_any.fillna(False).astype(bool)), len(mail)),
    })
    assert_table(report.starttls_decided, {k: (int(counts.get(k, 0)), decided) for k in ("all", "some", "none")})
    designed = [e.starttls for e in standard.expected.values() if e.domain_status == "ok"]
    assert report.starttls.get("all").numerator == designed.count("all")
    assert report.starttls.get("incomplete").numerator == designed.count("incomplete")


def test_versions(report: Report, frames: Frames) -> None:
    highest = _highest(frames.tls)
    keys = {"tls13": "TLSv1.3", "tls12": "TLSv1.2", "tls11": "TLSv1.1", "tls10": "TLSv1.0", "ssl3": "SSLv3"}
    assert_table(report.versions_address, {k: (_n(highest == v), len(highest)) for k, v in keys.items()})
    per_domain = _domain_version_rank(frames)
    assert_table(report.versions_domain, {k: (_n(per_domain == VERSION_RANK[v]), len(per_domain))
                                          for k, v in keys.items()})
    # Postfix accepts TLS 1.0-1.3, mx-multiline and Postfix limited to <= 1.2 stop at TLS 1.2.
    assert report.versions_address.get("tls12").numerator >= 2 and report.versions_address.get("tls13").numerator >= 4
    e = frames.enumerated
    answered = ["accepted", "rejected_alert", "rejected_close", "rejected_downgrade"]
    assert_table(report.version_support, {
        v: (_n(e[f"ver_{v}"] == "accepted"), _n(e[f"ver_{v}"].isin(answered)))
        for v in ("ssl3", "tls1_0", "tls1_1", "tls1_2", "tls1_3")
    })
    assert report.version_support.get("tls1_0").numerator == 2  # the two Postfix instances with TLS


def test_suites(report: Report, frames: Frames) -> None:
    e = frames.enumerated
    known = e[e.weak_classes.notna()]
    expected = {"weak_any": (_n(known.weak_classes.map(_length) > 0), len(known))}
    for cls in ("null", "anon", "export", "rc4", "des", "3des", "rc2", "idea", "md5", "low_bits"):
        expected[f"class_{cls}"] = (_n(known.weak_classes.map(lambda v, c=cls: _has(v, c))), len(known))
    expected["nist_r1"] = (_n(e.nist_r1.fillna(False).astype(bool)), _n(e.nist_r1.notna()))
    expected["nist_r2"] = (_n(e.nist_r2.fillna(False).astype(bool)), _n(e.nist_r2.notna()))
    assert_table(report.suites, expected)
    assert expected["class_anon"][0] == 2  # Postfix offers anonymous suites (grading test of the world)


def test_key_exchange(report: Report, frames: Frames) -> None:
    e = frames.enumerated
    known = e[e.dhe_accepted.notna() | e.dh_bits.notna()]
    bits = known.dh_bits

    def observed(column: str, value: bool) -> tuple[int, int]:
        return _n(e[column].notna() & (e[column] == value)), _n(e[column].notna())

    expected = {
        "dh_none": (_n(bits.isna() & (known.dhe_accepted == False)), len(known)),  # noqa: E712
        "dh_1024": (_n(bits == 1024), len(known)), "dh_2048": (_n(bits == 2048), len(known)),
        "dh_above_2048": (_n(bits > 2048), len(known)),
        "no_reneg": observed("secure_renegotiation", False), "compression": observed("tls_compression", True),
        "no_ems": observed("extended_master_secret", False), "fallback": observed("fallback_scsv", True),
    }
    # "ECDHE only with deprecated curves" over the addresses where it is decided: a complete list, or one
    # holding a curve RFC 8422 does not deprecate (where posture mode stops eliminating).
    deprecated = {group_name(g) for g in DEPRECATED_EC_GROUPS}
    groups = e.kx_groups.map(lambda v: set(v) if v is not None and len(v) else set())
    complete = e.kx_groups_complete.fillna(False).astype(bool)
    only_deprecated = complete & groups.map(lambda g: bool(g) and g <= deprecated)
    decided = complete | groups.map(lambda g: bool(g - deprecated))
    expected["only_deprecated"] = (_n(only_deprecated), _n(decided))
    assert_table(report.key_exchange, expected)
    assert _n(decided) > _n(complete)  # posture-mode addresses count once a recommended curve was seen
    # The size classes and "no DHE suite" partition the addresses whose DHE support is known.
    classes = ("dh_none", "dh_below_1024", "dh_1024", "dh_below_2048", "dh_2048", "dh_above_2048")
    assert sum(report.key_exchange.get(k).numerator for k in classes) == len(known) > 0
    with_groups = e.kx_groups[e.kx_groups.map(_length) > 0]
    x25519 = _n(with_groups.map(lambda v: _has(v, "x25519")))
    assert_table(report.groups, {"x25519": (x25519, len(with_groups))})


def test_certificates(report: Report, frames: Frames) -> None:
    tls = frames.tls
    trust = tls.cert_trust.value_counts().to_dict()
    links = frames.mx.merge(frames.tls[["probe_id", "cert_trust", "cert_self_signed", "cert_expired"]], on="probe_id")
    sni = frames.mx[["probe_id", "mx_host", "cert_name_match"]].drop_duplicates(["probe_id", "mx_host"])
    by_sni = tls[["probe_id", "sni"]].merge(sni, left_on=["probe_id", "sni"], right_on=["probe_id", "mx_host"],
                                            how="left")
    assert_table(report.certs_address, {
        "trusted": (int(trust.get("trusted", 0)), len(tls)),
        "trust_self_signed": (int(trust.get("self_signed", 0)), len(tls)),
        "trust_expired": (int(trust.get("expired", 0)), len(tls)),
        "self_signed": (_n(tls.cert_self_signed.fillna(False).astype(bool)), _n(tls.cert_self_signed.notna())),
        "expired": (_n(tls.cert_expired.fillna(False).astype(bool)), _n(tls.cert_expired.notna())),
        "mismatch": (_n(by_sni.cert_name_match == "mismatch"), _n(by_sni.cert_name_match.notna())),
    })
    assert_table(report.certs_link, {
        "trusted": (_n(links.cert_trust == "trusted"), len(links)),
        "self_signed": (_n(links.cert_self_signed.fillna(False).astype(bool)), len(links)),
        "expired": (_n(links.cert_expired.fillna(False).astype(bool)), len(links)),
        "mismatch": (_n(links.cert_name_match == "mismatch"), _n(links.cert_name_match.notna())),
        "valid": (_n(links.cert_valid.fillna(False).astype(bool)), _n(links.cert_valid.notna())),
    })
    # The world: one self-signed and one expired server; wrongname (and dualstack's shared address) mismatch.
    assert (trust.get("self_signed"), trust.get("expired")) == (1, 1)
    assert report.certs_link.get("mismatch").numerator == 2


def test_policies(report: Report, frames: Frames) -> None:
    m = frames.mail[frames.mail.mta_sts_txt.notna()]
    active = m[m.mta_sts_active.fillna(False).astype(bool)]
    txt = m[m.mta_sts_txt.fillna(False).astype(bool)]
    unmatched = active.mta_sts_unmatched_mx.map(_length) > 0
    failing = active.mta_sts_mx_fail.map(_length) > 0
    assert_table(report.mta_sts, {
        "txt": (len(txt), len(m)), "active": (len(active), len(m)),
        "enforce": (_n(active.mta_sts_mode == "enforce"), len(active)),
        "testing": (_n(active.mta_sts_mode == "testing"), len(active)),
        "unmatched": (_n(unmatched), len(active)), "mx_fail": (_n(failing), len(active)),
        "delivery_risk": (_n((active.mta_sts_mode == "enforce") & (unmatched | failing)), len(txt)),
    })
    assert (len(txt), _n(active.mta_sts_mode == "enforce")) == (4, 3)  # good, wrongname, mixed enforce; ordered tests
    r = frames.mail[frames.mail.tlsrpt_status.notna()]
    assert_table(report.tlsrpt, {s: (_n(r.tlsrpt_status == s), len(r)) for s in ("valid", "missing", "invalid")})
    assert report.tlsrpt.get("valid").numerator == 1  # good.world.test
    dane = frames.mail[frames.mail.dane_mx_with_tlsa.notna()]
    with_tlsa = dane[dane.dane_mx_with_tlsa > 0]
    assert_table(report.dane_domains, {
        "tlsa": (len(with_tlsa), len(dane)), "valid": (_n(with_tlsa.dane_valid == True), len(with_tlsa)),  # noqa: E712
        "unknown": (_n(with_tlsa.dane_valid.isna()), len(with_tlsa)),
    })
    hosts = frames.mx[frames.mx.dane_verdict.notna()].drop_duplicates(["mx_host", "address", "dane_verdict",
                                                                        "dane_dnssec"])
    records = hosts[~hosts.dane_verdict.isin(["no_records", "lookup_failed"])]
    compared = records[records.dane_verdict.isin(["match", "no_match", "ta_chain_invalid", "name_mismatch"])]
    assert_table(report.dane_hosts, {
        "tlsa": (len(records), len(hosts)), "match": (_n(compared.dane_verdict == "match"), len(compared)),
        "no_match": (_n(compared.dane_verdict == "no_match"), len(compared)),
        "dnssec_unknown": (_n(records.dane_dnssec == "unknown"), len(records)),
    })
    assert (len(records), _n(compared.dane_verdict == "match")) == (2, 1)  # mx-good matches, mx-selfsigned is stale


def test_grades_and_forced_tls(report: Report, frames: Frames) -> None:
    mail = frames.mail
    graded = mail[mail.grade.notna()]
    assert_table(report.grades_domain, {
        **{g: (_n(graded.grade == g), len(graded)) for g in GRADES}, "ungraded": (_n(mail.grade.isna()), len(mail)),
    })
    links = frames.mx[frames.mx.address.notna() & frames.mx.probe_id.notna()]
    assert_table(report.grades_link, {g: (_n(links.grade == g), _n(links.grade.notna())) for g in GRADES})
    assert report.grades_domain.get("A+").numerator == 1  # good.world.test
    safe = mail.forced_tls_safe
    assert_table(report.forced_tls, {
        "safe": (_n(safe == True), len(mail)), "unsafe": (_n(safe == False), len(mail)),  # noqa: E712
        "undecided": (_n(safe.isna()), len(mail)), "safe_decided": (_n(safe == True), _n(safe.notna())),  # noqa: E712
    })
    not_safe = mail[safe != True]  # noqa: E712
    codes = pd.Series([r.split(":")[0] for rs in not_safe.forced_tls_reasons for r in rs])
    per_code = {c: int(not_safe.forced_tls_reasons.map(lambda rs, c=c: any(r.startswith(c + ":") for r in rs)).sum())
                for c in codes.unique()}
    assert_table(report.forced_tls_reasons, {c: (n, len(not_safe)) for c, n in per_code.items()})


def test_providers(report: Report, frames: Frames) -> None:
    mail = frames.mail
    # Every MX host of the world is under world.test: one provider with every mail domain.
    assert [r.provider for r in report.providers] == ["world.test"]
    row = report.providers[0]
    assert (row.domains.numerator, row.domains.denominator) == (len(mail), len(mail))
    assert (row.starttls_all.numerator, row.starttls_all.denominator) == (_n(mail.starttls == "all"), len(mail))
    per_domain = _domain_version_rank(frames)
    assert (row.tls13.numerator, row.tls13.denominator) == (_n(per_domain == 5), len(per_domain))
    graded = mail.grade.value_counts().to_dict()
    assert {g.grade: g.count for g in row.grades} == {g: int(n) for g, n in graded.items()}
    links = frames.mx[frames.mx.address.notna() & frames.mx.mx_host.str.endswith(".world.test")]
    assert row.addresses == links.address.nunique()
    assert report.provider_concentration.get("top1").numerator == len(mail)


def test_failures(report: Report, frames: Frames) -> None:
    p = frames.probes
    failed = p[~p.status.isin(["starttls_ok", "no_starttls"])]
    keys = failed.status + failed.failure_class.map(lambda c: f" / {c}" if isinstance(c, str) else "")
    assert_table(report.probe_failures, {k: (int(n), len(p)) for k, n in keys.value_counts().items()})
    hosts = frames.mx.drop_duplicates(["mx_host", "host_status"])
    bad = hosts[hosts.host_status != "ok"].host_status.value_counts().to_dict()
    assert_table(report.host_failures, {k: (int(n), frames.mx.mx_host.nunique()) for k, n in bad.items()})
    assert set(bad) == {"nxdomain", "ip_literal", "no_address"}  # ghostmx, literalmx, nothing (implicit)
    d = frames.domains
    looked_up = _n(~d.status.isin(["invalid_input", "duplicate", "excluded"]))
    assert_table(report.dns_failures, {s: (_n(d.status == s), looked_up)
                                       for s in ("dns_nxdomain", "dns_servfail", "mx_no_address")})
    assert {"timeout / timeout", "throttled / smtp_421", "unreachable / refused"} <= set(keys)


def test_comparisons_carry_full_citations(report: Report, tmp_path: Path) -> None:
    by_key = {c.key: c for c in report.comparisons}
    assert set(by_key) == {"starttls", "dane", "injection"}  # only figures with a verified citation
    durumeric = by_key["starttls"].published[0]
    assert (durumeric.value, durumeric.where) == (0.35, "abstract") and durumeric.citation.year == 2015
    for p in (p for c in report.comparisons for p in c.published):
        cite = p.citation
        assert cite.authors and cite.title and cite.venue and 2000 < cite.year < 2100 and p.where
    files = write_report(report, tmp_path)
    for text in (files.html.read_text(), files.markdown.read_text()):
        assert "unverified" not in text and "standards.md" not in text and "shared/" not in text
        assert "Neither Snow Nor Rain Nor MITM" in text  # the reference list
    ours = by_key["starttls"].ours[0].share
    assert ours == report.probe_funnel.get("tls_ok_definitive")


# --- files -----------------------------------------------------------------------------------------


def test_written_files(report: Report, tmp_path: Path) -> None:
    files = write_report(report, tmp_path / "rep")
    data = json.loads(files.json.read_text(encoding="utf-8"))
    assert data["report_format"] == "2" and data["scan"]["scan_id"] == report.scan.scan_id
    all_mx = data["starttls"]["figures"][0]
    assert all_mx["key"] == "all" and all_mx["share"]["numerator"] == report.starttls.get("all").numerator
    ci = report.starttls.get("all").ci
    assert ci is not None and all_mx["share"]["ci95"] == [ci.low, ci.high]
    html = files.html.read_text(encoding="utf-8")
    assert html.count('<svg class="chart"') == 10 and html.count("<script") == 1  # the drill-down's, by hash
    # Self-contained: the only URL is the SVG namespace; the CSP forbids every load.
    assert re.findall(r"[a-z]+://[^\s\"'<]+", html) == ["http://www.w3.org/2000/svg"] * 10
    assert "default-src 'none'" in html
    markdown = files.markdown.read_text(encoding="utf-8")
    assert "| published: Durumeric et al., IMC 2015 (abstract) |" in markdown
    assert "### STARTTLS per mail domain" in markdown and "95% CI" in markdown


def test_overwrite_removes_the_previous_scans_report(standard: World, tmp_path: Path) -> None:
    domains = tmp_path / "one.txt"
    domains.write_text("good.world.test\n", encoding="utf-8")
    out = tmp_path / "out"
    scan(standard, out, *STANDARD_OPTIONS, domains=domains)
    assert main(["report", str(out)]) == 0 and main(["export", str(out), "--table", "run"]) == 0
    assert (out / "report" / "report.html").is_file() and (out / "export" / "run.jsonl").is_file()
    scan(standard, out, *STANDARD_OPTIONS, "--overwrite", domains=domains)
    assert not (out / "report").exists() and not (out / "export").exists()  # nothing describes the old scan


def test_empty_scan_reports_na(standard: World, tmp_path: Path) -> None:
    """A scan whose input holds nothing valid: every share is 0/0 → n/a, and the files are written."""
    domains = tmp_path / "in.txt"
    domains.write_text("not a domain\n", encoding="utf-8")
    scan(standard, tmp_path / "out", *STANDARD_OPTIONS, domains=domains)
    rep = build_report(tmp_path / "out")
    assert rep.starttls.get("all") == Share.estimate(0, 0) and rep.starttls.get("all").value is None
    assert rep.domain_status.get("invalid_input") == Share.count(1, 1) and rep.providers == ()
    files = write_report(rep, tmp_path / "rep")
    assert "n/a" in files.markdown.read_text(encoding="utf-8") and files.html.stat().st_size > 0


# --- baseline --------------------------------------------------------------------------------------


def test_baseline_changed_domains(compared: Report, standard_scan: Path, second_scan: Path) -> None:
    base = compared.baseline
    assert base is not None
    old, new = Frames(standard_scan).domains, Frames(second_scan).domains
    cols = ["domain", "grade", "starttls"]
    merged = old[old.domain.notna()][cols].merge(new[new.domain.notna()][cols], on="domain", how="outer",
                                                 suffixes=("_old", "_new"), indicator="side")
    changed = merged[(merged.side != "both") | (merged.grade_old.fillna("-") != merged.grade_new.fillna("-"))
                     | (merged.starttls_old.fillna("-") != merged.starttls_new.fillna("-"))]

    def value(v: Any) -> str | None:
        return None if pd.isna(v) else str(v)

    expected = sorted(
        (r.domain, value(r.grade_old), value(r.grade_new), value(r.starttls_old), value(r.starttls_new),
         r.side != "right_only", r.side != "left_only")
        for r in changed.itertuples()
    )
    got = [(c.domain, c.old_grade, c.new_grade, c.old_starttls, c.new_starttls, c.in_old, c.in_new)
           for c in base.changes]
    assert got == expected and base.changes_total == len(expected)
    by_domain = {c.domain: c for c in base.changes}
    # Without policy checks good.world.test cannot earn A+ (enforced MTA-STS): A.
    assert (by_domain["good.world.test"].old_grade, by_domain["good.world.test"].new_grade) == ("A+", "A")
    assert by_domain["refused.world.test"].in_new is False and by_domain["added.world.test"].in_old is False
    assert base.comparable_grades


def test_baseline_with_different_settings_refused_unless_allowed(
    standard_scan: Path, second_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    dest = tmp_path / "rep"
    assert main(["report", str(second_scan), "--baseline", str(standard_scan), "--dest", str(dest)]) == ExitCode.CONFIG
    err = " ".join(capsys.readouterr().err.split())
    assert f"probe.banner_timeout: {SLOW_BANNER_DELAY / 3!r} -> {SLOW_BANNER_DELAY / 2!r}" in err
    assert "policy_checks: True -> False" in err and "--allow-different-settings" in err
    assert not dest.exists()
    assert main(["report", str(second_scan), "--baseline", str(standard_scan), "--dest", str(dest),
                 "--allow-different-settings"]) == 0
    html, markdown = (dest / "report.html").read_text(), (dest / "report.md").read_text()
    assert 'id="settings-warning"' in html and "probe.banner_timeout" in html.split("</header>")[0]
    assert markdown.split("## Key figures")[0].count("probe.banner_timeout") == 1
    data = json.loads((dest / "report.json").read_text())
    assert sorted(data["baseline"]["settings_differences"]) == sorted([
        f"probe.banner_timeout: {SLOW_BANNER_DELAY / 3!r} -> {SLOW_BANNER_DELAY / 2!r}",
        "policy_checks: True -> False"])
    # The same scan as its own baseline: nothing differs, no warning, no change excludes zero.
    assert main(["report", str(standard_scan), "--baseline", str(standard_scan), "--dest", str(tmp_path / "self")]) == 0
    same = json.loads((tmp_path / "self" / "report.json").read_text())["baseline"]
    assert same["settings_differences"] == [] and not any(d["significant"] for d in same["deltas"])


def test_baseline_deltas(compared: Report, report: Report) -> None:
    base = compared.baseline
    assert base is not None
    deltas = {(d.table_key, d.figure_key): d for d in base.deltas}
    for table in ("starttls.domains", "grades.domain", "policy.mta_sts", "tls.versions_address"):
        for fig in report.table(table).figures:
            delta = deltas[(table, fig.key)]
            assert delta.old == fig.share  # the baseline side is the first scan's report
            assert delta.new == compared.table(table).get(fig.key)
    mta = deltas[("policy.mta_sts", "txt")]
    assert mta.new is not None and mta.new.denominator == 0 and mta.points is None  # --no-policy: n/a
    for delta in deltas.values():  # every change of two estimates carries its Newcombe interval
        if delta.old is not None and delta.new is not None and delta.old.ci is not None and delta.new.ci is not None:
            interval = newcombe_difference(delta.new.numerator, delta.new.denominator,
                                           delta.old.numerator, delta.old.denominator)
            assert delta.interval == interval and delta.significant == (interval is not None and interval.excludes_zero)
    plus = deltas[("grades.domain", "A+")]
    assert plus.old is not None and plus.new is not None and plus.new.numerator == plus.old.numerator - 1
    assert plus.points is not None and plus.points < 0
    # The baseline's providers are the current top providers, read from the old scan.
    assert deltas[("providers.share", "world.test")].old == report.provider_shares.get("world.test")


# --- per-domain drill-down -------------------------------------------------------------------------


def _failing(f: Frames) -> list[str]:
    d = f.domains[f.domains.domain.notna() & (f.domains.status != "duplicate")]
    mask = d.starttls.isin(["none", "some", "incomplete"]) | d.grade.isin(["E", "F"])
    return sorted(d[mask].domain)


def test_drill_down_inline_and_sidecar(standard_scan: Path, report: Report, frames: Frames, tmp_path: Path) -> None:
    everything = set(frames.domains[frames.domains.domain.notna()].domain)
    drill = report.drill
    assert drill.total == len(everything) and drill.sidecar == "" and len(drill.inline) == drill.total
    failing = _failing(frames)
    assert [line.domain for line in drill.inline[:len(failing)]] == failing
    assert all(line.why == "failing" for line in drill.inline[:len(failing)])
    assert all(line.why == "sample" for line in drill.inline[len(failing):])
    good = next(line for line in drill.inline if line.domain == "good.world.test")
    # the domain earns A+ with its enforced MTA-STS policy; the link itself grades A
    assert (good.grade, good.starttls, good.mx) == ("A+", "all", "mx-good.world.test A starttls_ok")
    # A small page: five domains inline, the others in the sidecar, every domain exactly once.
    small = build_report(standard_scan, drill_inline=5)
    assert [line.domain for line in small.drill.inline] == failing[:5]
    files = write_report(small, tmp_path)
    sidecar = write_domains_sidecar(standard_scan, small.drill, tmp_path)
    assert sidecar == tmp_path / "report-domains.jsonl" and small.drill.sidecar_rows == len(everything) - 5
    rest = [json.loads(line) for line in sidecar.read_text().splitlines()]
    assert len(rest) == small.drill.sidecar_rows and set(rest[0]) == set(DRILL_COLUMNS)
    assert {r["domain"] for r in rest} | set(failing[:5]) == everything
    assert "report-domains.jsonl" in files.html.read_text()


# --- the page in a real browser --------------------------------------------------------------------


_DRILL = """(() => {
  const box = document.querySelector('#drill-domains');
  const visible = () => Array.from(box.querySelectorAll('tbody tr')).filter(r => !r.hidden);
  const rows = parseInt(box.querySelector('.drill-info').textContent.split(' of ')[1], 10);
  const input = box.querySelector('input.drill-search');
  input.value = 'good.world.test'; input.dispatchEvent(new Event('input'));
  const found = visible().map(r => r.cells[0].textContent);
  input.value = ''; input.dispatchEvent(new Event('input'));
  return {ready: box.classList.contains('drill-ready'), rows: rows, found: found, shown: visible().length};
})()"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package (/usr/bin/chromium)")
@pytest.mark.parametrize("width", WIDTHS)
async def test_html_in_headless_chromium(standard_scan: Path, compared: Report, tmp_path: Path, width: int) -> None:
    # The page's drill-down loads the other domains from the sidecar.
    small = build_report(standard_scan, drill_inline=5)
    drill_dir = tmp_path / "drill"
    drill_page = write_report(small, drill_dir).html
    sidecar = write_domains_sidecar(standard_scan, small.drill, drill_dir)
    assert sidecar is not None
    drill = await asyncio.wait_for(inspect_page(
        drill_page.as_uri(), ARTIFACTS / f"report-drill-{width}.png", width, _DRILL,
        ("#drill-domains input.drill-sidecar", sidecar)), 90)
    assert drill["errors"] == [] and drill["overlaps"] == []
    assert drill["script"]["ready"] and drill["script"]["rows"] == small.drill.total  # 5 inline + the sidecar
    assert "good.world.test" not in {line.domain for line in small.drill.inline}
    assert "good.world.test" in drill["script"]["found"]  # found although it was only in the sidecar
    assert drill["script"]["shown"] == min(50, small.drill.total)  # one page

    files = write_report(compared, tmp_path / "rep")
    screenshot = ARTIFACTS / f"report-{width}.png"
    facts = await asyncio.wait_for(inspect_page(files.html.as_uri(), screenshot, width), 90)
    assert facts["errors"] == []
    assert facts["overlaps"] == []
    assert facts["rects"] > 0 and facts["resources"] == 0  # nothing loaded besides the page itself
    assert len(facts["charts"]) == 10
    for chart in facts["charts"]:
        assert chart["width"] > 0 and chart["height"] > 0, chart
        assert chart["marks"] > 0, chart  # every chart of this scan has data
    assert facts["tables"] >= 30 and compared.scan.scan_id in facts["title"]
    assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
