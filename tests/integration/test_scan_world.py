"""End to end: the real CLI scans the standard world (nsd + mail servers on loopback) into Parquet.

Every assertion compares the dataset with what the world was *built* to produce (worlds/scenario.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from scanner.cli import CommandError, main
from scanner.exit_codes import ExitCode
from scanner.grading import GRADING_VERSION, Grade
from scanner.net.limits import PolitenessLimiter
from scanner.output.arrow_schema import arrow_schema, closed_sets
from scanner.output.rows import TABLES, DomainRow, MxRow, ProbeRow
from scanner.status import DomainStatus
from tests.integration.scanning import STANDARD_OPTIONS, scan
from worlds.ports import loopback_host
from worlds.procs import LoopThread
from worlds.scenario import World

pytestmark = pytest.mark.slow


def _rows(out: Path, table: str) -> list[dict[str, Any]]:
    return pq.read_table(out / table).to_pylist()  # type: ignore[no-any-return]


def test_every_input_domain_has_exactly_one_row(standard: World, standard_scan: Path) -> None:
    domains = [r["domain"] for r in _rows(standard_scan, "domains")]
    assert sorted(domains) == sorted(standard.expected)


def test_domain_status_and_verdict_match_the_world(standard: World, standard_scan: Path) -> None:
    rows = {r["domain"]: r for r in _rows(standard_scan, "domains")}
    mismatches = {
        d: (rows[d]["status"], rows[d]["starttls"], rows[d]["mx_source"], rows[d]["status_detail"])
        for d, exp in standard.expected.items()
        if (rows[d]["status"], rows[d]["starttls"], rows[d]["mx_source"]) != (exp.domain_status, exp.starttls,
                                                                              exp.mx_source)
    }
    assert not mismatches


def test_mx_order_and_probe_statuses(standard: World, standard_scan: Path) -> None:
    links: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(_rows(standard_scan, "mx"), key=lambda r: (r["domain"], r["mx_rank"])):
        links.setdefault(row["domain"], []).append(row)
    for domain, exp in standard.expected.items():
        if not exp.mx_hosts:
            continue
        got_hosts = tuple(dict.fromkeys(r["mx_host"] for r in links[domain]))
        assert got_hosts == exp.mx_hosts, domain
        statuses = tuple(r["probe_status"] for r in links[domain] if r["address"] is not None)
        assert statuses == exp.probe_statuses, domain


def test_certificate_verdicts(standard: World, standard_scan: Path) -> None:
    probes = {r["probe_id"]: r for r in _rows(standard_scan, "probes")}
    for row in _rows(standard_scan, "mx"):
        exp = standard.expected[row["domain"]]
        if exp.cert_trust is None or row["mx_rank"] != 0:
            continue
        probe = probes[row["probe_id"]]
        assert probe["cert_trust"] == exp.cert_trust, row["domain"]
        assert row["cert_name_match"] == exp.name_match, row["domain"]
        assert row["cert_valid"] == (exp.cert_trust == "trusted" and exp.name_match == "san"), row["domain"]
        assert probe["cert_chain"] and probe["cert_sha256"] and probe["tls_version"] and probe["tls_cipher"]


def test_failure_classes_and_phases(standard_scan: Path, standard: World) -> None:
    # Several names can share an address (mx-good also serves the implicit-MX domain): key by every name.
    by_host = {name.split(".")[0]: r for r in _rows(standard_scan, "probes") for name in r["mx_hosts"]}
    expectations = {
        "mx-slow": ("timeout", "banner", "timeout"),
        "mx-421": ("throttled", "banner", "smtp_421"),  # after one retry (attempts == 2, below)
        "mx-554": ("smtp_rejected", "banner", "smtp_5xx"),
        "mx-refused": ("unreachable", "connect", "refused"),
        "mx-tlsfail": ("tls_handshake_failed", "tls_handshake", None),
        "mx-notls": ("no_starttls", None, None),
        "mx-good": ("starttls_ok", None, None),
    }
    for host, (status, phase, failure) in expectations.items():
        probe = by_host[host]
        assert (probe["status"], probe["failure_phase"]) == (status, phase), host
        if failure:
            assert probe["failure_class"] == failure, host
    assert by_host["mx-421"]["attempts"] == 2 and by_host["mx-slow"]["attempts"] == 2
    assert by_host["mx-good"]["attempts"] == 1
    tlsfail = by_host["mx-tlsfail"]
    # Garbage then close: OpenSSL sees a bad record, or the kernel reports the close/RST first.
    assert tlsfail["failure_class"] in ("tls_protocol_error", "tls_closed", "reset")
    # The no-STARTTLS server answered EHLO: its extensions are recorded, STARTTLS not among them.
    assert by_host["mx-notls"]["starttls_advertised"] is False and by_host["mx-notls"]["ehlo_extensions"]
    assert by_host["mx-multiline"]["tls_version"] == "TLSv1.2"
    # Real Postfix: its banner and extensions, TLS 1.3 by default, 1.2 when limited to it.
    assert "ESMTP" in by_host["mx-postfix"]["banner"] and "PIPELINING" in by_host["mx-postfix"]["ehlo_extensions"]
    assert by_host["mx-postfix"]["tls_version"] == "TLSv1.3"
    assert by_host["mx-postfix-tls12"]["tls_version"] == "TLSv1.2"
    assert by_host["mx-postfix-notls"]["starttls_advertised"] is False
    # Posture enumeration ran after every accepted STARTTLS, within its session budget.
    assert by_host["mx-multiline"]["versions_accepted"] == ["TLSv1.2"]
    assert by_host["mx-multiline"]["ver_tls1_3"] in ("rejected_alert", "rejected_close")
    assert by_host["mx-postfix"]["versions_accepted"] == ["TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1.0"]
    assert by_host["mx-postfix-tls12"]["ver_tls1_3"] != "accepted"
    assert by_host["mx-postfix"]["nist_r1"] and by_host["mx-postfix"]["nist_r2"]
    enumerated = [r for r in by_host.values() if r["enum_mode"] == "posture"]
    assert enumerated and all(r["enum_sessions"] <= 12 for r in enumerated)
    assert by_host["mx-notls"]["enum_mode"] is None  # nothing to enumerate without STARTTLS
    assert by_host["mx-multiline"]["banner"].count("\n") == 2


def test_one_probe_per_address(standard_scan: Path) -> None:
    probes = _rows(standard_scan, "probes")
    ids = [r["probe_id"] for r in probes]
    assert len(ids) == len(set(ids))
    good = [r for r in probes if "mx-good.world.test" in r["mx_hosts"]]
    assert len(good) == 1  # good, shared1, shared2, mixed and implicit all resolve to it
    con = duckdb.connect()
    sharing = con.execute(
        f"SELECT count(DISTINCT domain) FROM read_parquet('{standard_scan}/mx/*.parquet') WHERE probe_id = ?",
        [good[0]["probe_id"]],
    ).fetchone()
    assert sharing == (6,)  # good, shared1, shared2, mixed, implicit, dualstack


def test_files_carry_the_declared_schema(standard_scan: Path, standard: World) -> None:
    for table, row_class in (("domains", DomainRow), ("mx", MxRow), ("probes", ProbeRow)):
        schema = pq.read_schema(next((standard_scan / table).glob("*.parquet")))
        assert schema.equals(arrow_schema(row_class), check_metadata=False), table
    run = _rows(standard_scan, "run")
    assert len(run) == 1 and run[0]["completed"] and run[0]["domains"] == len(standard.expected)


def test_closed_set_columns_hold_only_their_enum_values(standard_scan: Path) -> None:
    """Every value a real scan writes to a closed-set column (or to a list column's items) is one of its enum's."""
    seen: dict[str, set[str]] = {}
    for table, row_class in TABLES.items():
        rows = _rows(standard_scan, table)
        for column, cls in closed_sets(row_class).items():
            values: set[str] = set()
            for row in rows:
                value = row[column]
                values.update(value if isinstance(value, list) else [] if value is None else [value])
            assert values <= {m.value for m in cls}, f"{table}.{column}: {values - {m.value for m in cls}}"
            seen[f"{table}.{column}"] = values
    # Not vacuous: the world exercises the policy, DANE, certificate and enumeration columns.
    for column in ("domains.mta_sts_mode", "domains.mta_sts_errors", "domains.tlsrpt_status", "domains.grade",
                   "domains.families_covered", "mx.cert_name_match", "mx.dane_verdict", "mx.dane_dnssec",
                   "probes.cert_trust", "probes.cert_key_type", "probes.enum_mode", "probes.weak_classes",
                   "probes.versions_accepted", "probes.preferred_version", "sessions.cert_trust"):
        assert seen[column], f"{column}: no value in the standard world's scan"


def test_headline_query(standard_scan: Path, standard: World) -> None:
    con = duckdb.connect()
    share = con.execute(
        f"SELECT count(*) FILTER (WHERE starttls = 'all'), count(*) FILTER (WHERE starttls <> 'not_applicable') "
        f"FROM read_parquet('{standard_scan}/domains/*.parquet')"
    ).fetchone()
    expected_all = sum(1 for e in standard.expected.values() if e.starttls == "all")
    expected_mail = sum(1 for e in standard.expected.values() if e.starttls != "not_applicable")
    assert share == (expected_all, expected_mail)


def test_reserved_addresses_refused_without_the_flag(standard: World, tmp_path: Path) -> None:
    assert standard.farm is not None
    before = sum(s.accepted for s in standard.farm.stats().values())
    scan(standard, tmp_path / "out", *STANDARD_OPTIONS, allow_private=False)
    probes = _rows(tmp_path / "out", "probes")
    assert probes and {r["status"] for r in probes} == {"skipped_reserved_address"}
    assert {r["failure_phase"] for r in probes} == {"address"}
    # Not a single connection reached any server of the world.
    assert sum(s.accepted for s in standard.farm.stats().values()) == before


def test_rerunning_a_complete_scan_changes_nothing(standard: World, standard_scan: Path) -> None:
    before = sorted(p.name for p in (standard_scan / "domains").iterdir())
    scan(standard, standard_scan, *STANDARD_OPTIONS)
    assert sorted(p.name for p in (standard_scan / "domains").iterdir()) == before


def test_other_settings_never_mix_into_an_interrupted_scan(standard: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    scan(standard, out, *STANDARD_OPTIONS)
    (out / ".state" / "complete").unlink()  # as if interrupted
    scan(standard, out, *STANDARD_OPTIONS, "--port", "2525", expect=ExitCode.CONFIG)  # refused: other settings


def test_ipv6_addresses_are_probed(standard_scan: Path) -> None:
    rows = [r for r in _rows(standard_scan, "mx") if r["domain"] == "dualstack.world.test"]
    assert [(r["address"], r["ip_version"]) for r in rows][1] == ("::1", 6)
    probe = next(r for r in _rows(standard_scan, "probes") if r["address"] == "::1")
    assert (probe["status"], probe["failure_class"], probe["ip_version"]) == ("unreachable", "refused", 6)


def test_invalid_duplicate_and_excluded_lines_are_rows(standard: World, tmp_path: Path) -> None:
    domains = tmp_path / "in.txt"
    domains.write_bytes(b"\xef\xbb\xbf# header\r\ngood.world.test\r\n\r\nnot a domain\r\nGOOD.World.Test.\r\n"
                        b"\xff\xfe junk\r\nnotls.world.test\r\n")
    exclude = tmp_path / "optout.txt"
    exclude.write_text("# opt-outs\nnotls.world.test\n", encoding="utf-8")
    out = tmp_path / "out"
    scan(standard, out, "--throttle-retry", "--exclude", str(exclude), domains=domains)
    rows = sorted(_rows(out, "domains"), key=lambda r: r["input_line"])
    got = [(r["input_line"], r["domain"], r["status"], r["duplicate_of_line"]) for r in rows]
    assert got == [
        (2, "good.world.test", "ok", None),
        (4, None, "invalid_input", None),
        (5, "good.world.test", "duplicate", 2),
        (6, None, "invalid_input", None),
        (7, "notls.world.test", "excluded", None),
    ]
    run = _rows(out, "run")[0]
    assert (run["input_lines"], run["domains"], run["invalid_lines"], run["duplicate_lines"]) == (5, 1, 2, 1)


def test_missing_input_and_bad_resolver_fail_cleanly(standard: World, tmp_path: Path) -> None:
    assert main(["scan", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "o1")]) == ExitCode.NO_INPUT
    assert main(["scan", str(standard.domains_file), "-o", str(tmp_path / "o2"), "--resolver", "dns.example"]) == 2
    assert main(["scan", str(standard.domains_file), "-o", str(tmp_path / "o3"), "--port", "0"]) == 2


def test_policies_through_the_scan(standard_scan: Path) -> None:
    rows = {r["domain"]: r for r in _rows(standard_scan, "domains")}
    good, ordered, wrongname, mixed = (rows[f"{d}.world.test"] for d in ("good", "ordered", "wrongname", "mixed"))
    assert (good["mta_sts_active"], good["mta_sts_mode"], good["mta_sts_unmatched_mx"], good["mta_sts_mx_fail"]) == (
        True, "enforce", [], [])
    assert good["mta_sts_id"] == "20261122T000000" and good["mta_sts_max_age"] == 86400
    assert ordered["mta_sts_mode"] == "testing" and ordered["mta_sts_unmatched_mx"] == []  # *.world.test
    assert wrongname["mta_sts_mx_fail"] == ["mx-wrongname.world.test"]
    assert sorted(mixed["mta_sts_unmatched_mx"]) == ["mx-good.world.test", "mx-tlsfail.world.test"]
    assert rows["notls.world.test"]["mta_sts_txt"] is False and rows["notls.world.test"]["mta_sts_active"] is False
    assert good["tlsrpt_status"] == "valid" and good["tlsrpt_rua"] == ["mailto:tlsrpt@good.world.test"]
    assert wrongname["tlsrpt_status"] == "invalid" and rows["notls.world.test"]["tlsrpt_status"] == "missing"
    # Null MX and DNS failures have no policy columns: nothing was checked.
    assert rows["nullmx.world.test"]["mta_sts_txt"] is None


def test_dane_through_the_scan(standard_scan: Path) -> None:
    links = {(r["domain"], r["mx_host"]): r for r in _rows(standard_scan, "mx") if r["address"]}
    good = links[("good.world.test", "mx-good.world.test")]
    stale = links[("selfsigned.world.test", "mx-selfsigned.world.test")]
    assert good["dane_verdict"] == "match" and stale["dane_verdict"] == "no_match"
    # nsd is authoritative (no RA bit): whether the answer was validated cannot be told, so: unknown.
    assert good["dane_dnssec"] == "unknown"
    assert links[("notls.world.test", "mx-notls.world.test")]["dane_verdict"] == "no_records"
    rows = {r["domain"]: r for r in _rows(standard_scan, "domains")}
    assert rows["good.world.test"]["dane_valid"] is None and rows["good.world.test"]["dane_mx_with_tlsa"] == 1


def test_grades_and_forced_tls_through_the_scan(standard_scan: Path) -> None:
    rows = {r["domain"]: r for r in _rows(standard_scan, "domains")}
    good = rows["good.world.test"]
    # Modern TLS, trusted cert, enforced MTA-STS that covers and passes every MX: the top grade.
    assert (good["grade"], good["forced_tls_safe"], good["grading_version"]) == ("A+", True, GRADING_VERSION)
    assert rows["shared1.world.test"]["grade"] == "A"  # same MX, but no MTA-STS: A, not A+
    assert "publish_mta_sts_enforce" in rows["shared1.world.test"]["recommendations"]
    notls = rows["notls.world.test"]
    assert notls["grade"] == "F" and notls["forced_tls_safe"] is False and "no_starttls" in notls["grade_rules"]
    assert "enable_starttls" in notls["recommendations"]
    assert {"cert_name_mismatch", "mta_sts_mx_fail"} <= set(rows["wrongname.world.test"]["grade_rules"])
    assert "cert_expired" in rows["expired.world.test"]["grade_rules"]
    assert "cert_self_signed" in rows["selfsigned.world.test"]["grade_rules"]
    postfix = rows["postfix.world.test"]
    assert {"tls10_or_tls11_enabled", "insecure_suites"} <= set(postfix["grade_rules"])  # TLS 1.0 and anon
    # The domain gets its worst MX: mixed has a good MX and one whose handshake fails.
    assert rows["mixed.world.test"]["grade"] == "F"
    # Nothing could be tested: no grade and no forced-TLS verdict, never a guess.
    assert rows["slow.world.test"]["grade"] is None and rows["slow.world.test"]["forced_tls_safe"] is None
    mx = {(r["domain"], r["mx_host"]): r for r in _rows(standard_scan, "mx") if r["address"]}
    assert mx[("good.world.test", "mx-good.world.test")]["grade"] == "A"


def _check(standard: World, capsys: pytest.CaptureFixture[str], domain: str, *extra: str,
           code: ExitCode = ExitCode.OK) -> str:
    got = main(["check", domain, "--resolver", standard.resolver, "--ca-file", str(standard.ca_file), "--allow-private",
                "--banner-timeout", "2", "--throttle-retry", "--ehlo-name", "scanner.test", *extra])
    assert got == code
    return capsys.readouterr().out


def test_check_good_domain(standard: World, capsys: pytest.CaptureFixture[str]) -> None:
    out = _check(standard, capsys, "good.world.test")
    assert "good.world.test: grade A+" in out and "forced TLS: safe" in out
    assert "mx-good.world.test" in out and "TLSv1.3" in out and "MTA-STS: enforce" in out


def test_check_keeps_its_rows_in_memory(standard: World, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No temporary Parquet dataset written and read back: the rows come from the scan's in-memory sink."""
    def no_dataset(*args: object, **kwargs: object) -> None:
        raise AssertionError("check wrote a Parquet dataset")

    monkeypatch.setattr("scanner.pipeline.DatasetWriter", no_dataset)
    monkeypatch.setattr("scanner.dataset.load", no_dataset)
    data = json.loads(_check(standard, capsys, "good.world.test", "--json"))
    assert data["domain"]["grade"] == "A+" and data["probes"]


def test_check_shows_key_exchange_and_hygiene(standard: World, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(_check(standard, capsys, "good.world.test", "--json"))
    probe = data["probes"][0]
    assert "x25519" in probe["kx_groups"] and probe["kx_preferred_group"] == "x25519"
    assert probe["secure_renegotiation"] is True and probe["tls_compression"] is False
    # Posture mode asks the fallback SCSV only where NIST SP 800-52r2 requires it (below TLS 1.2, no TLS
    # 1.3): this TLS 1.3 server has the RFC 8446 §4.1.3 downgrade sentinel instead, so: not asked.
    assert probe["extended_master_secret"] is True and probe["fallback_scsv"] is None
    text = " ".join(_check(standard, capsys, "good.world.test").split())  # words wrap in 80 columns
    assert "secure renegotiation yes" in text and "fallback SCSV" not in text


def test_check_bad_domain_json(standard: World, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(_check(standard, capsys, "notls.world.test", "--json"))
    assert data["domain"]["grade"] == "F" and data["domain"]["starttls"] == "none"
    assert [p["status"] for p in data["probes"]] == ["no_starttls"]
    assert "enable_starttls" in data["domain"]["recommendations"]


def test_check_domains_without_mail(standard: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Scriptable: "no mail host" has its own exit code (README "Exit codes"); it was 0."""
    assert "status null_mx" in _check(standard, capsys, "nullmx.world.test", code=ExitCode.CHECK_NO_MAIL_HOST)
    assert "status dns_no_mail_host" in _check(standard, capsys, "nothing.world.test",
                                               code=ExitCode.CHECK_NO_MAIL_HOST)


@pytest.mark.parametrize("target", ["not a domain", "", "#x", "good.world.test\nmx.evil.test", "[127.0.0.1]:25"])
def test_check_invalid_target_is_a_usage_error(standard: World, capsys: pytest.CaptureFixture[str],
                                               target: str) -> None:
    """Invalid input exits 2 with one line and probes nothing (it was exit 0, or a scan of junk)."""
    assert main(["check", target, "--resolver", standard.resolver, "--allow-private"]) == ExitCode.USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_check_exit_codes_for_scripts(standard: World, capsys: pytest.CaptureFixture[str]) -> None:
    """--fail-under: exit 5 when the grade is worse (notls is F); untestable MX exit 4 (slow: tarpit)."""
    _check(standard, capsys, "notls.world.test", "--fail-under", "C", code=ExitCode.CHECK_GRADE_BELOW)
    _check(standard, capsys, "good.world.test", "--fail-under", "A", code=ExitCode.OK)
    _check(standard, capsys, "slow.world.test", "--banner-timeout", "0.3", code=ExitCode.CHECK_UNTESTABLE)


def test_check_one_server_directly(standard: World, capsys: pytest.CaptureFixture[str]) -> None:
    """HOST:PORT, IP:PORT with --sni, [IPv6]:PORT: one server, no MX lookup (as sslyze and testssl.sh)."""
    out = _check(standard, capsys, f"{standard.host(10)}:25", "--sni", "mx-good.world.test")
    assert "grade A" in out and "mx-good.world.test" in out and "TLSv1.3" in out and "name ok" in out
    data = json.loads(_check(standard, capsys, "mx-good.world.test:25", "--json"))
    assert (data["domain"]["domain"], data["domain"]["mx_source"]) == ("mx-good.world.test", "implicit")
    assert [p["address"] for p in data["probes"]] == [standard.host(10)]
    assert [(p["status"], p["sni"]) for p in data["probes"]] == [("starttls_ok", "mx-good.world.test")]
    # Without --sni an IP gets no name: the certificate name cannot match it.
    data = json.loads(_check(standard, capsys, standard.host(10), "--json"))
    assert data["mx"][0]["cert_name_match"] != "san"
    # ... and no SNI in our own hellos either (RFC 6066 §3): the enumeration still runs.
    assert "TLSv1.3" in data["probes"][0]["versions_accepted"]
    # Nothing listens on [::1]:25 in this world: a real refused connection, so untestable (exit 4).
    data = json.loads(_check(standard, capsys, "[::1]:25", "--json", code=ExitCode.CHECK_UNTESTABLE))
    assert [(p["address"], p["status"]) for p in data["probes"]] == [("::1", "unreachable")]


class _MarkupServer:
    """A server whose replies are Rich markup and terminal escapes (a real socket, one behaviour)."""

    BANNER = b"554-[/] [bold red]x\x1b]0;pwned\x07\x1b[2J\r\n554 go away [/]\r\n"

    def __init__(self, address: str) -> None:
        self.address = address
        self._thread = LoopThread("markup-server")
        self._server: asyncio.AbstractServer | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.BANNER)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while await reader.readline():
                writer.write(b"503 5.5.1 [/]\x1b[31m no\r\n")
        writer.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.address, 25)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def __enter__(self) -> _MarkupServer:
        self._thread.start(asyncio.new_event_loop(), self._start, 30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop(self._stop, 30)


def test_check_shows_server_text_inert(standard: World, capsys: pytest.CaptureFixture[str]) -> None:
    """``[/]`` in a reply crashed check (Rich markup); escape sequences reached the terminal."""
    with _MarkupServer(standard.host(230)):
        out = _check(standard, capsys, f"{standard.host(230)}:25", code=ExitCode.CHECK_UNTESTABLE)
    assert "\x1b" not in out and "\x07" not in out
    assert "[/]" in out and "\\x1b]0;pwned" in out  # shown, as text


def test_check_server_on_loopback_needs_allow_private(standard: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert standard.farm is not None
    before = sum(s.accepted for s in standard.farm.stats().values())
    code = main(["check", f"{standard.host(10)}:25", "--resolver", standard.resolver, "--ehlo-name", "scanner.test"])
    assert code == ExitCode.CHECK_UNTESTABLE and "skipped_reserved_address" in capsys.readouterr().out
    assert sum(s.accepted for s in standard.farm.stats().values()) == before


def test_check_table_readable_in_80_columns(standard: World, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped output is 80 columns (rich's default without a terminal): lines fit, words are whole."""
    monkeypatch.delenv("COLUMNS", raising=False)
    out = _check(standard, capsys, "mixed.world.test")
    assert max(len(line) for line in out.splitlines()) <= 80
    words = set(out.split())
    assert {"mx-good.world.test", "mx-tlsfail.world.test", "certificate", "enumeration"} <= words
    text = " ".join(out.split())
    assert "Enable STARTTLS (RFC 3207) with a working TLS 1.2/1.3 configuration." in text


def test_check_warns_about_a_non_fqdn_ehlo_name(standard: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "good.world.test", "--resolver", standard.resolver, "--ca-file", str(standard.ca_file),
                 "--allow-private", "--ehlo-name", "box", "--json"]) == ExitCode.OK
    assert "warning: EHLO name 'box' is not a fully qualified domain name" in capsys.readouterr().err


def test_status_lines_without_a_terminal_with_gzip_total(standard: World, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr is not a terminal here: plain status lines (zmap-style) with the gzip input's counted total."""
    monkeypatch.setattr("scanner.cli.STATUS_EVERY", 0.0)
    source = tmp_path / "in.txt.gz"
    source.write_bytes(gzip.compress(standard.domains_file.read_bytes()))
    code = main(["scan", str(source), "-o", str(tmp_path / "out"), "--resolver", standard.resolver, "--ca-file",
                 str(standard.ca_file), "--allow-private", "--per-ip-interval", "0", "--throttle-retry",
                 "--banner-timeout", "0.5", "--ehlo-name", "scanner.test", "--no-policy"])
    assert code == ExitCode.OK
    status = [line for line in capsys.readouterr().err.splitlines() if line.startswith("info: status: ")]
    assert status, "no status line"
    assert f"/{len(standard.expected):,} rows" in status[-1] and "dom/s" in status[-1]


def test_resolver_trouble_is_logged_1_10_100(standard: World, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """SERVFAIL (nsd's broken zone) for 12 domains: a warning at the 1st and 10th, not one per domain."""
    domains = tmp_path / "in.txt"
    domains.write_text("".join(f"d{i}.broken.test\n" for i in range(12)), encoding="utf-8")
    code = main(["scan", str(domains), "-o", str(tmp_path / "out"), "--resolver", standard.resolver,
                 "--ehlo-name", "scanner.test", "--no-progress", "--no-policy"])
    assert code == ExitCode.OK
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: DNS trouble")]
    assert len(warnings) == 2 and "1 domains" in warnings[0] and "10 domains" in warnings[1]
    assert "dns_servfail" in warnings[0]


def test_report_dest_that_cannot_be_written_is_one_line(standard_scan: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert main(["report", str(standard_scan), "--dest", str(tmp_path / "file" / "r")]) == ExitCode.CANT_CREATE
    err = capsys.readouterr().err
    assert err.startswith("error: --dest: ") and err.count("\n") == 1


def test_python_api_scan_and_check(standard: World, tmp_path: Path) -> None:
    import scanner

    options: dict[str, Any] = {"resolver": standard.resolver, "ca_file": standard.ca_file, "allow_private": True,
                               "ehlo_name": "scanner.test", "throttle_retry": [], "per_ip_interval": 0.0}
    result = scanner.check("good.world.test", **options)
    assert result.grade is Grade.A_PLUS and result.status is DomainStatus.OK and result.starttls.value == "all"
    bad = scanner.check("notls.world.test", **options)
    assert "enable_starttls" in bad.recommendations and bad.grade is Grade.F
    done = scanner.scan(["good.world.test", "notls.world.test"], tmp_path / "out", no_policy=True, **options)
    assert done.completed and done.stats.domains_done == 2
    assert scanner.load(done.out).domains.num_rows == 2
    with pytest.raises(CommandError, match="--concurrency"):
        scanner.check("good.world.test", **{**options, "concurrency": 0})


def test_python_api_load(standard_scan: Path, standard: World) -> None:
    import scanner

    ds = scanner.load(standard_scan)
    assert ds.domains.num_rows == len(standard.expected)
    frame = ds.probes.to_pandas()
    assert set(frame["status"]) >= {"starttls_ok", "no_starttls"}
    top = ds.duckdb().execute("SELECT count(*) FROM domains WHERE grade = 'A+'").fetchone()
    assert top == (1,)


def test_report_command_writes_three_files(standard_scan: Path, tmp_path: Path) -> None:
    assert main(["report", str(standard_scan), "--dest", str(tmp_path / "r")]) == 0
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"report.html", "report.md", "report.json"}
    figures = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert figures  # the figures themselves are checked against pandas in test_report.py
    assert main(["report", str(tmp_path / "nothing-here")]) == ExitCode.NO_INPUT


def test_full_mode_for_a_sample_of_addresses(standard: World, tmp_path: Path) -> None:
    scan(standard, tmp_path / "out", *STANDARD_OPTIONS, "--no-policy", "--full-sample", "1.0")
    modes = {r["enum_mode"] for r in _rows(tmp_path / "out", "probes") if r["enum_mode"]}
    assert modes == {"full"}
    postfix = next(r for r in _rows(tmp_path / "out", "probes") if "mx-postfix.world.test" in r["mx_hosts"])
    assert postfix["suites_tls1_2"] and postfix["suites_tls1_3"]


def test_spilled_probe_summaries_give_the_same_dataset(standard: World, standard_scan: Path, tmp_path: Path) -> None:
    """One summary in memory: every other one goes to disk and back, and nothing may change."""
    scan(standard, tmp_path / "out", *STANDARD_OPTIONS, "--summaries-in-memory", "1")
    columns = ("domain", "status", "starttls", "grade", "certs_valid_all", "dane_valid")

    def verdicts(out: Path) -> list[tuple[Any, ...]]:
        return sorted(tuple(r[c] for c in columns) for r in _rows(out, "domains"))

    assert verdicts(tmp_path / "out") == verdicts(standard_scan)
    ids = [r["probe_id"] for r in _rows(tmp_path / "out", "probes")]
    assert len(ids) == len(set(ids)) == len(_rows(standard_scan, "probes"))


def test_probes_and_policy_fetches_share_the_scans_one_limiter(standard: World, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection of the scan, the MTA-STS policy fetches included, takes a slot of one limiter."""
    taken: dict[int, set[str]] = {}  # limiter instance -> addresses it gave a slot to
    real_slot = PolitenessLimiter.slot

    def slot(self: PolitenessLimiter, address: str) -> contextlib.AbstractAsyncContextManager[None]:
        taken.setdefault(id(self), set()).add(address)
        return real_slot(self, address)

    monkeypatch.setattr(PolitenessLimiter, "slot", slot)
    out = tmp_path / "out"
    scan(standard, out, *STANDARD_OPTIONS)
    probed = {r["address"] for r in _rows(out, "probes") if not r["status"].startswith("skipped_")}  # connected
    assert len(taken) == 1  # one limiter for the whole scan
    (addresses,) = taken.values()
    assert probed <= addresses
    assert loopback_host(standard.block, 40) in addresses - probed  # the policy host (nginx, worlds.scenario)
