"""Command-line conventions that need no network: abbreviations, help, exit codes, errors, logs.

Every ``main`` call here stops before the first packet (an argument or option error); the ones that
scan live in tests/integration/test_scan_world.py.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import time
from dataclasses import fields
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from scanner.api import _namespace
from scanner.checker import CheckResult, CheckTarget, check_exit_code, render_check
from scanner.cli import FLAGS, CommandError, _rate_text, build_parser, check_config, config_from_args, main
from scanner.config import OutputConfig, ProbeConfig, ScanConfig, is_fqdn, result_settings
from scanner.exit_codes import ExitCode
from scanner.grading import RECOMMENDATIONS, Grade
from scanner.input import InputTotal, input_total
from scanner.logs import JsonFormatter, TextFormatter
from scanner.options import SECTIONS
from scanner.output.parquet import prepare_output_dir
from scanner.pipeline import ScanStats
from scanner.resume import mark_complete

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def domains(tmp_path: Path) -> Path:
    path = tmp_path / "domains.txt"
    path.write_text("example.org\n", encoding="utf-8")
    return path


def _scan(domains: Path, tmp_path: Path, *extra: str) -> int:
    # A resolver nobody listens on and an explicit EHLO name: these calls must fail on the option.
    return main(["scan", str(domains), "-o", str(tmp_path / "out"), "--resolver", "127.0.0.1:9",
                 "--ehlo-name", "scanner.example.org", "--no-progress", *extra])


# --------------------------------------------------------------------------
# Abbreviations, help, defaults
# --------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["scan", "d.txt", "-o", "out", "--conc", "5"],
    ["scan", "d.txt", "-o", "out", "--resolv", "127.0.0.1"],
    ["check", "example.org", "--allow-priv"],
    ["report", "out", "--dest", "x", "--bas", "y"],
])
def test_abbreviated_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``--conc 5`` was read as ``--concurrency 5``; now it is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == ExitCode.USAGE
    assert "unrecognized arguments" in capsys.readouterr().err


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["scan", "report", "check"])
def test_every_option_has_help_and_shows_its_default(command: str) -> None:
    sub = _subparsers()[command]
    assert not sub.allow_abbrev
    text = sub.format_help()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.option_strings or action.dest} has no help line"
        if action.default not in (None, False, [], argparse.SUPPRESS):
            helped = " ".join(sub._get_formatter()._get_help_string(action).split())  # type: ignore[arg-type]
            assert "default" in helped, f"{command} {action.option_strings}: default not shown"
    assert "for pipelines (default: text)" in " ".join(text.split())  # --log-format


def test_check_has_its_own_per_address_interval() -> None:
    scan = _subparsers()["scan"].parse_args(["d", "-o", "o"])
    check = _subparsers()["check"].parse_args(["example.org"])
    assert scan.per_ip_interval == 1.0 and check.per_ip_interval < scan.per_ip_interval


# --------------------------------------------------------------------------
# Option values: rejected with the flag the user typed, before anything runs
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "flag"), [
    (["--concurrency", "0"], "--concurrency"),
    (["--concurrency", "100000000"], "--concurrency"),  # 1.65 GB of worker tasks before any packet
    (["--dns-timeout", "nan"], "--dns-timeout"),
    (["--connect-timeout", "inf"], "--connect-timeout"),
    (["--per-ip-interval", "nan"], "--per-ip-interval"),
    (["--per-ip-interval", "-1"], "--per-ip-interval"),
    (["--commit-interval", "nan"], "--commit-interval"),
    (["--throttle-retry", "inf"], "--throttle-retry"),
    (["--dns-workers", "10000000"], "--dns-workers"),
    (["--max-in-flight", "0"], "--max-in-flight"),
    (["--full-sample", "nan"], "--full-sample"),
    (["--ehlo-name", "scännér.example"], "--ehlo-name"),
    (["--ehlo-name", "a\r\nRCPT TO:<x@y>"], "--ehlo-name"),
    (["--resolver", "dns.example"], "--resolver"),
])
def test_bad_option_values_name_the_flag(domains: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         extra: list[str], flag: str) -> None:
    assert _scan(domains, tmp_path, *extra) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} ") and err.count("\n") == 1, err
    assert "max_connections" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing ran


# Fields a person does not set with an option of their own: the output directory is ``-o`` (a command
# argument), the row group follows --rows-per-file, the probe workers follow --concurrency (FLAGS names it),
# and the grace period after a Ctrl-C is fixed.
NOT_OPTIONS = {"output.out_dir", "output.row_group_size", "stop_grace"}


def _settings() -> set[str]:
    top = {f.name for f in fields(ScanConfig) if f.name not in SECTIONS}
    return top | {f"{prefix}.{f.name}" for prefix, cls in SECTIONS.items() for f in fields(cls)}


def test_every_config_field_maps_to_a_flag() -> None:
    """A ConfigError's ``setting`` is always one the CLI can name (FLAGS), for every field with an option."""
    assert set(FLAGS) == _settings() - NOT_OPTIONS
    assert FLAGS["probe.workers"] == FLAGS["probe.max_connections"] == "--concurrency"


def test_option_defaults_are_the_config_defaults() -> None:
    """One source of truth: with no option given, the command's config is the dataclasses' defaults."""
    scan = _subparsers()["scan"].parse_args(["d", "-o", "o"])
    assert config_from_args(scan) == ScanConfig(OutputConfig(Path("o")))
    check = _subparsers()["check"].parse_args(["example.org"])
    assert check_config(check, CheckTarget("example.org"), Path("o")) == ScanConfig(
        OutputConfig(Path("o"), rows_per_file=1000), probe=ProbeConfig(per_ip_interval=0.02),
        max_domains_in_flight=16)
    server = check_config(check, CheckTarget("mx.example.org", server=True, port=2525), Path("o"))
    assert server.probe.port == 2525 and not server.policy_checks


def test_options_reach_their_fields() -> None:
    args = _subparsers()["scan"].parse_args([
        "d", "-o", "o", "--resolver", "127.0.0.1", "--resolver", "127.0.0.2:5353", "--no-sni-checks",
        "--no-policy", "--throttle-retry", "--enum-retry", "1", "3", "--concurrency", "7", "--dns-failure-window",
        "50", "--exclude", "x.txt", "--summaries-in-memory", "9", "--commit-interval", "2"])
    config = config_from_args(args)
    assert config.dns.servers == ("127.0.0.1", "127.0.0.2:5353")
    assert not config.probe.sni_checks and not config.policy_checks
    assert config.probe.throttle_retry_delays == () and config.probe.enum_retry_delays == (1.0, 3.0)
    assert config.probe.max_connections == config.probe.workers == 7
    assert config.health.dns_window == 50 and config.safety.exclude_file == Path("x.txt")
    assert config.probe.summaries_in_memory == 9 and config.output.flush_interval == 2.0
    assert "enum_retry_delays" in ProbeConfig.__dataclass_fields__
    assert "probe.enum_retry_delays" in result_settings(config)  # it can change what a scan finds


def test_the_api_does_not_mutate_the_parsed_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = build_parser().parse_args(["check", "example.org"])
    monkeypatch.setattr("scanner.api.build_parser", lambda: _Fixed(parsed))
    args = _namespace(["check", "example.org"], {"per_ip_interval": 0, "resolver": "127.0.0.1"})
    assert args.per_ip_interval == 0 and args.resolver == ["127.0.0.1"]
    assert parsed.per_ip_interval == 0.02 and parsed.resolver == []
    with pytest.raises(CommandError, match="unknown option 'nonsense'"):
        _namespace(["check", "example.org"], {"nonsense": 1})


class _Fixed:
    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args

    def parse_args(self, argv: list[str]) -> argparse.Namespace:
        return self._args


def test_ehlo_localhost_refused_for_public_targets(domains: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """This machine's name used by default, not an FQDN, public targets: refuse (README "Scanning responsibly")."""
    monkeypatch.setattr("scanner.config.socket.getfqdn", lambda: "localhost")
    code = main(["scan", str(domains), "-o", str(tmp_path / "out"), "--resolver", "127.0.0.1:9", "--no-progress"])
    assert code == ExitCode.USAGE
    assert "--ehlo-name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_is_fqdn() -> None:
    assert is_fqdn("scanner.example.org") and is_fqdn("mx.example.org.")
    assert not any(is_fqdn(n) for n in ("localhost", "box", "box.localdomain", "a..b", "host.local"))


# --------------------------------------------------------------------------
# Exit codes of missing files and bad paths
# --------------------------------------------------------------------------


def test_missing_files_exit_no_input(domains: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _scan(tmp_path / "absent.txt", tmp_path) == ExitCode.NO_INPUT
    assert main(["report", str(tmp_path / "absent")]) == ExitCode.NO_INPUT
    assert _scan(domains, tmp_path, "--exclude", str(tmp_path / "absent")) == ExitCode.NO_INPUT
    assert _scan(domains, tmp_path, "--ca-file", str(tmp_path / "absent.pem")) == ExitCode.NO_INPUT
    assert main(["check", "example.org", "--ca-file", str(tmp_path / "absent.pem")]) == ExitCode.NO_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 5 and "Traceback" not in err
    assert "error: --exclude: no such file: " in err and "error: --ca-file: no such file: " in err


def test_log_file_that_cannot_be_opened_is_one_line(domains: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert _scan(domains, tmp_path, "--log-file", str(tmp_path / "no" / "dir" / "x.log")) == ExitCode.CANT_CREATE
    assert capsys.readouterr().err.count("\n") == 1


def test_readme_exit_code_table_lists_exactly_the_enum() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `?(\d+)`? \| `(\w+)` \|", section, flags=re.MULTILINE)
    assert [(int(n), name) for n, name in rows] == [(int(c), c.name) for c in ExitCode]


# --------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------


def test_json_log_lines_and_log_file(domains: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "scan.log"
    assert _scan(domains, tmp_path, "--concurrency", "0", "--log-format", "json", "--log-file", str(log)) == 2
    line = json.loads(capsys.readouterr().err)
    assert line["level"] == "error" and line["message"].startswith("--concurrency ")
    assert line["logger"] == "scanner.cli" and line["time"].endswith("+00:00")
    assert json.loads(log.read_text(encoding="utf-8")) == line


def test_quiet_verbose_and_text_log_file(domains: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Messages go through logging: info by default, hidden by -q; the log file has time stamps."""
    (tmp_path / "out").mkdir()
    prepare_output_dir(tmp_path / "out", overwrite=False)
    mark_complete(tmp_path / "out")
    log = tmp_path / "scan.log"
    assert _scan(domains, tmp_path, "--log-file", str(log)) == ExitCode.OK
    assert capsys.readouterr().err.startswith("info: ") and "already holds a complete scan" in log.read_text()
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+\+00:00 info: ", log.read_text(encoding="utf-8"))
    assert _scan(domains, tmp_path, "-q") == ExitCode.OK
    assert capsys.readouterr().err == ""


def test_log_messages_from_the_network_stay_one_inert_line() -> None:
    record = logging.LogRecord("scanner.probing", logging.WARNING, __file__, 1, "%s throttled",
                               ("mx\x1b[2J\r\nfake line",), None)
    assert "\x1b" not in TextFormatter(timestamps=False).format(record)
    assert "\n" not in TextFormatter(timestamps=False).format(record)
    assert json.loads(JsonFormatter().format(record))["message"] == "mx\\x1b[2J\\x0d\\x0afake line throttled"


# --------------------------------------------------------------------------
# Progress: gzip totals, rates, ETA
# --------------------------------------------------------------------------


def test_gzip_total_counted_or_estimated(tmp_path: Path) -> None:
    """gzip input had no total (no ETA); small files are counted, big ones estimated (and say so)."""
    path = tmp_path / "d.txt.gz"
    lines = [f"d{i}.example.org\n" for i in range(200_000)] + ["# comment\n", "\n"]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(lines)
    assert input_total(path) == InputTotal(200_000, "counted")
    estimate = input_total(path, gzip_count_limit=0)
    assert estimate is not None and estimate.how == "estimated"
    assert abs(estimate.lines - 200_000) < 200_000 * 0.1
    assert input_total("-") is None


def test_rate_ignores_lines_of_an_earlier_attempt_and_gives_an_eta() -> None:
    stats = ScanStats(started=time.monotonic() - 10)
    stats.resumed, stats.domains_done = 900_000, 100
    text = _rate_text(stats, InputTotal(1_000_100, "counted"))
    assert text.startswith("10 dom/s")  # 100 new rows in 10 s, not 90,010
    assert "ETA" in text and "estimated" not in text
    assert "(estimated total)" in _rate_text(stats, InputTotal(1_000_100, "estimated"))


# --------------------------------------------------------------------------
# check: rendering and exit codes on synthetic rows
# --------------------------------------------------------------------------


def _hostile_result(grade: str | None = "F") -> CheckResult:
    domain: dict[str, Any] = {
        "domain": "evil.example", "grade": grade, "starttls": "none", "forced_tls_safe": False, "status": "ok",
        "status_detail": "[bold]x[/]", "mta_sts_txt": None, "forced_tls_reasons": ["mx[/]\x1b]0;owned\x07"],
        "recommendations": ["enable_starttls", "publish_tlsrpt"], "starttls_ipv4": "none",
        "starttls_ipv6": "not_applicable", "not_covered_count": 0, "dane_delivery": "unknown",
        "dane_delivery_reasons": ["[/]mx.evil.example: \x1b[2Jno answer"],
    }
    link = {"mx_rank": 0, "address": "192.0.2.1", "probe_id": "p1", "mx_host": "[/]mx.evil.example",
            "mx_preference": 10, "host_status": "ok", "host_detail": "", "grade_rules": ["no_starttls"],
            "cert_name_match": None, "dane_verdict": None, "grade": grade, "cert_source": "probe",
            "cert_sha256": None, "cert_valid": None}
    probe = {"status": "no_starttls", "failure_class": "smtp_5xx",
             "failure_detail": "502 [/] \x1b[31mred\x1b[0m " + "averyveryverylongword " * 6,
             "cert_trust": None, "cert_sha256": None, "enum_mode": None, "inconsistent_facts": []}
    return CheckResult(domain, [link], {"p1": probe})


def test_check_output_escapes_network_text_and_fits_80_columns() -> None:
    """``[/]`` crashed rich's markup parser; escape sequences reached the terminal; words were cut."""
    buffer = StringIO()
    render_check(_hostile_result(), Console(file=buffer, width=80, force_terminal=False))
    out = buffer.getvalue()
    assert "\x1b" not in out and "\x07" not in out
    assert "[/]mx.evil.example" in out and "502 [/]" in out and "\\x1b[31mred" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "averyveryverylongword" in out.split()  # no word cut in half
    assert RECOMMENDATIONS["enable_starttls"] in " ".join(out.split())  # the text, not only the code


def test_check_exit_code_order() -> None:
    result = _hostile_result()
    assert check_exit_code(result) == ExitCode.OK
    assert check_exit_code(result, Grade.C) == ExitCode.CHECK_GRADE_BELOW
    assert check_exit_code(result, Grade.F) == ExitCode.OK
    result.probes["p1"]["status"] = "timeout"
    assert check_exit_code(result, Grade.C) == ExitCode.CHECK_UNTESTABLE
    for status, code in (("dns_nxdomain", ExitCode.CHECK_NO_MAIL_HOST), ("null_mx", ExitCode.CHECK_NO_MAIL_HOST),
                         ("dns_servfail", ExitCode.UNAVAILABLE), ("invalid_input", ExitCode.USAGE)):
        result.domain["status"] = status
        assert check_exit_code(result) == code


def _readme_option_rows() -> list[tuple[list[str], list[str]]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("| option | default | meaning |")
    rows = []
    for line in text[start:text.index("\n\n", start)].splitlines()[2:]:
        option, default = line.split(" | ")[:2]
        rows.append((re.findall(r"--[a-z0-9-]+", option), [d.strip() for d in default.split(",")]))
    return rows


def test_readme_option_table_lists_every_scan_option_with_its_default() -> None:
    """The README's option table stays true: every option of ``scan``, and each numeric default as parsed."""
    scan = _subparsers()["scan"]
    actions = {o: a for a in scan._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    rows = _readme_option_rows()
    assert {flag for flags, _ in rows for flag in flags} == set(actions)
    compared = 0
    for flags, defaults in rows:
        if len(flags) != len(defaults):
            continue
        for flag, text in zip(flags, defaults, strict=True):
            words = text.removesuffix(" s").split()
            if not all(re.fullmatch(r"[0-9.]+", w) for w in words):
                continue
            default = actions[flag].default
            expected = [float(w) for w in words] if isinstance(default, list) else float(words[0])
            assert default == expected, f"README says {flag} defaults to {text}, the option to {default}"
            compared += 1
    assert compared >= 20
