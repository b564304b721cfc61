"""Command line: parse arguments into one ``ScanConfig``, run the scan, show progress and a summary.

Exit codes are ``scanner.exit_codes.ExitCode`` (README "Exit codes"). Conventions (README "Usage"):
no abbreviated options, every default in ``--help``, errors name the option the user typed, messages
through ``logging`` (``--verbose``/``--quiet``/``--log-file``/``--log-format json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from scanner.certs import TrustStore, TrustStoreError
from scanner.checker import (
    CheckResult,
    check_exit_code,
    check_rows,
    parse_target,
    render_check,
    temporary_input,
    to_json,
)
from scanner.cluster import ClusterUnavailable, require_ray
from scanner.config import (
    ConfigError,
    DnsConfig,
    HealthConfig,
    OutputConfig,
    ProbeConfig,
    SafetyConfig,
    ScanConfig,
    is_fqdn,
)
from scanner.derived import EXPORT_DIR, REPORT_DIR, SERIES_DIR, remove_derived
from scanner.dns.lookup import ServerTarget
from scanner.exit_codes import ExitCode
from scanner.grading import Grade
from scanner.input import InputError, InputTotal, check_input, input_total, is_stream_source
from scanner.logs import command_logging, log_level
from scanner.net.addresses import ExcludeList, ExcludeListError
from scanner.output.lock import OutputLock, OutputLocked
from scanner.output.parquet import STATE_DIR, DamagedOutputError, OutputDirError, prepare_output_dir
from scanner.output.rows import TABLES
from scanner.pipeline import Scan, ScanFailed, ScanStats, load_trust_store
from scanner.preflight import PreflightError, check_output_writable, check_resolvers, check_routes
from scanner.resume import ResumeState, load_resume_state, scan_is_complete
from scanner.version import __version__

if TYPE_CHECKING:
    from scanner.report import ReportFiles

__all__ = ["FLAGS", "CommandError", "build_parser", "check_result", "main"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Config field (``ConfigError.setting``) → the option that sets it: errors name what the user typed.
FLAGS: dict[str, str] = {
    "dns.servers": "--resolver", "dns.timeout": "--dns-timeout", "dns.tries": "--dns-tries", "dns.qps": "--dns-qps",
    "dns.concurrency": "--dns-concurrency", "dns.workers": "--dns-workers",
    "probe.port": "--port", "probe.ehlo_name": "--ehlo-name", "probe.connect_timeout": "--connect-timeout",
    "probe.banner_timeout": "--banner-timeout", "probe.command_timeout": "--command-timeout",
    "probe.tls_timeout": "--tls-timeout", "probe.probe_deadline": "--probe-deadline",
    "probe.max_connections": "--concurrency", "probe.workers": "--concurrency",
    "probe.per_ip_concurrency": "--per-ip-concurrency", "probe.per_ip_interval": "--per-ip-interval",
    "probe.per_prefix_concurrency": "--per-prefix-concurrency", "probe.throttle_retry_delays": "--throttle-retry",
    "probe.enumeration": "--enumerate", "probe.full_sample": "--full-sample",
    "probe.summaries_in_memory": "--summaries-in-memory", "output.rows_per_file": "--rows-per-file",
    "output.row_group_size": "--rows-per-file", "output.flush_interval": "--commit-interval",
    "max_domains_in_flight": "--max-in-flight",
    "dns.max_mx_hosts": "--max-mx-hosts", "dns.max_mx_addresses": "--max-mx-addresses",
    "probe.sni_checks": "--no-sni-checks", "probe.sni_sessions_per_address": "--sni-cap",
    "probe.sni_same_run": "--sni-same-run", "probe.recheck_limit": "--recheck-limit",
    "probe.ipv4": "--ipv4", "probe.ipv6": "--ipv6",
    "health.dns_window": "--dns-failure-window", "health.dns_threshold": "--dns-failure-threshold",
    "health.probe_window": "--probe-failure-window", "health.probe_threshold": "--probe-failure-threshold",
}

# ``check`` is one person waiting for one domain, not a survey: a short pause between the 7-12
# sessions to one address (at most 50 connection starts a second, one at a time) instead of the
# survey's 1 s, which made a three-MX check take 7.5 s. README "Usage" documents it.
CHECK_PER_IP_INTERVAL = 0.02
SURVEY_PER_IP_INTERVAL = 1.0
# Without a terminal (a log file, CI), a plain status line this often (seconds), zmap-style.
STATUS_EVERY = 5.0


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every default in --help: "(default: ...)" after each option's help, unless the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """No abbreviations: ``--conc 5`` is an error, never a guess at ``--concurrency`` (an abbreviated
    option once started a scan against the system resolver). Usage errors exit 2 (``ExitCode.USAGE``)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(allow_abbrev=False, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="smtp-tls-survey", description="Survey how well inbound mail servers do TLS (STARTTLS, certificates)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    scan = sub.add_parser("scan", help="scan a list of domains into a Parquet dataset")
    scan.add_argument("domains", help="file of domains (text, Tranco CSV, .gz of either) or '-' for stdin")
    scan.add_argument("-o", "--out", required=True, type=Path, help="output directory for the dataset")
    scan.add_argument("--overwrite", action="store_true", help="replace a previous scan in the output directory")
    _add_engine_options(scan, SURVEY_PER_IP_INTERVAL)
    misc = scan.add_argument_group("run")
    misc.add_argument("--max-in-flight", type=int, default=5000, help="domains waiting for probes at once")
    misc.add_argument("--rows-per-file", type=int, default=200_000,
                      help="rows buffered before a segment (one part file per table) is committed")
    misc.add_argument("--commit-interval", type=float, default=30.0,
                      help="seconds between commits: at most this much work is redone after a crash")
    misc.add_argument("--summaries-in-memory", type=int, default=25_000,
                      help="finished probe summaries kept in memory; older ones are spilled to disk")
    misc.add_argument("--no-progress", action="store_true",
                      help="no live progress bar (on a terminal) and no status lines (otherwise)")
    misc.add_argument("--vantage", metavar="LABEL",
                      help="where this scan runs from (e.g. 'hetzner-fsn1'), recorded in the run record")
    cluster = scan.add_argument_group("scaling out", "run the scan on several processes or machines (needs Ray: "
                                      "pip install 'smtp-tls-survey[ray]'; see README, Scaling out)")
    cluster.add_argument("--workers", type=int, default=0, metavar="N",
                         help="worker processes (with --cluster: default one per CPU of the cluster; without: "
                              "start Ray on this machine with N workers)")
    cluster.add_argument("--cluster", metavar="ADDRESS",
                         help="join a running Ray cluster (ray start --head), e.g. 10.0.0.1:6379")
    health = scan.add_argument_group(
        "our side is broken", "stop (exit 69, resumable) when nearly every DNS query or probe fails on our side")
    defaults = HealthConfig()
    health.add_argument("--dns-failure-window", type=int, default=defaults.dns_window, metavar="QUERIES",
                        help="DNS queries in the sliding window")
    health.add_argument("--dns-failure-threshold", type=float, default=defaults.dns_threshold, metavar="SHARE",
                        help="share of timeouts, SERVFAIL, REFUSED and errors in the window that stops the scan")
    health.add_argument("--probe-failure-window", type=int, default=defaults.probe_window, metavar="PROBES",
                        help="probes in the sliding window")
    health.add_argument("--probe-failure-threshold", type=float, default=defaults.probe_threshold, metavar="SHARE",
                        help="share of no_route and network_error probes in the window that stops the scan")
    report = sub.add_parser("report", help="population report (HTML, Markdown, JSON) of a scan's dataset, or a "
                                           "series report of several scans")
    report.add_argument("out", type=Path, nargs="+",
                        help="the scan's output directory; two or more: a series report (ordered by scan start)")
    report.add_argument("--baseline", type=Path, help="an older scan to compare with")
    report.add_argument("--allow-different-settings", action="store_true",
                        help="compare scans whose verdict-relevant settings differ (the report says so at the top)")
    report.add_argument("--dest", type=Path,
                        help="where to write the report files (default: OUT/report; a series: the latest OUT/series)")
    report.add_argument("--json", action="store_true", help="also print the figures as JSON on stdout")
    _add_log_options(report)
    export = sub.add_parser("export", help="export a scan's tables as JSON Lines or CSV")
    export.add_argument("out", type=Path, help="the scan's output directory")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="one file per table")
    export.add_argument("--table", action="append", default=[], choices=list(TABLES),
                        help="table to export (repeatable) (default: all)")
    export.add_argument("--certs", choices=("base64", "pem"), default="base64",
                        help="certificates as base64 DER or PEM text")
    export.add_argument("--dest", type=Path, help="directory for the files (default: OUT/export)")
    _add_log_options(export)
    check = sub.add_parser("check", help="check one domain, or one server, and show the result to a person (or --json)")
    check.add_argument("domain", metavar="TARGET",
                       help="a domain (its MX hosts), or one server: HOST:PORT, IP, IP:PORT or [IPv6]:PORT")
    check.add_argument("--sni", metavar="NAME",
                       help="with a server target: the name to send (SNI) and to match against the certificate "
                            "(default: HOST, or none for an IP)")
    check.add_argument("--json", action="store_true", help="print the rows as JSON instead of tables")
    check.add_argument("--fail-under", type=Grade, choices=list(Grade), metavar="GRADE",
                       help=f"exit {int(ExitCode.CHECK_GRADE_BELOW)} when the domain's grade is worse than GRADE "
                            f"({', '.join(g.value for g in Grade)}) (default: no grade fails)")
    _add_engine_options(check, CHECK_PER_IP_INTERVAL)
    return parser


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    logs = parser.add_argument_group("messages")
    logs.add_argument("-v", "--verbose", action="count", default=0, help="more messages (repeat for debug)")
    logs.add_argument("-q", "--quiet", action="count", default=0, help="fewer messages: warnings only (-qq: errors)")
    logs.add_argument("--log-file", type=Path, help="also write the messages to this file, with time stamps")
    logs.add_argument("--log-format", choices=("text", "json"), default="text",
                      help="json: one JSON object per line (time, level, logger, message), for pipelines")


def _add_engine_options(parser: argparse.ArgumentParser, per_ip_interval: float) -> None:
    """Options shared by ``scan`` and ``check``: both run the same engine."""
    _add_dns_options(parser.add_argument_group("DNS"))
    _add_probe_options(parser.add_argument_group("probing"), per_ip_interval)
    safety = parser.add_argument_group("safety and trust")
    safety.add_argument("--ca-file", type=Path, help="PEM trust store replacing certifi's bundle (default: certifi)")
    safety.add_argument("--allow-private", action="store_true",
                        help="probe loopback/private/reserved addresses (labs and tests only)")
    safety.add_argument("--exclude", type=Path,
                        help="opt-out file: CIDRs and domain suffixes, one per line (default: none)")
    parser.add_argument("--no-policy", action="store_true", help="skip MTA-STS, TLS-RPT and DANE checks")
    parser.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio event loop")
    _add_log_options(parser)


def _add_dns_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--resolver", action="append", default=[], metavar="IP[:PORT]",
                       help="DNS resolver to query (repeatable) (default: the system's)")
    group.add_argument("--dns-qps", type=float, default=2000.0, help="DNS queries per second, global")
    group.add_argument("--dns-timeout", type=float, default=3.0, help="seconds per DNS try")
    group.add_argument("--dns-tries", type=int, default=2, help="tries per DNS query")
    group.add_argument("--dns-concurrency", type=int, default=500, help="DNS queries in flight")
    group.add_argument("--dns-workers", type=int, default=256, help="domains resolved at once")
    group.add_argument("--max-mx-hosts", type=int, default=10,
                       help="MX hosts resolved per domain, in preference order (the row says when more exist)")
    group.add_argument("--max-mx-addresses", type=int, default=20,
                       help="addresses probed per domain, across its MX hosts in order (the row says when capped)")


def _add_probe_options(group: argparse._ArgumentGroup, per_ip_interval: float) -> None:
    group.add_argument("--port", type=int, default=25, help="SMTP port to probe")
    group.add_argument("--ehlo-name",
                       help="fully qualified name sent in EHLO (default: this machine's FQDN; required when "
                            "that is localhost or a single label and the targets are public)")
    group.add_argument("--concurrency", type=int, default=200, help="probe connections in flight, global")
    group.add_argument("--per-ip-concurrency", type=int, default=1, help="connections at once per address")
    group.add_argument("--per-ip-interval", type=float, default=per_ip_interval,
                       help="minimum seconds between connections to one address")
    group.add_argument("--per-prefix-concurrency", type=int, default=8,
                       help="connections at once into one /24 (IPv4) or /48 (IPv6)")
    group.add_argument("--throttle-retry", type=float, nargs="*", default=[10.0, 60.0], metavar="SECONDS",
                       help="back-off delays before retrying a throttled address (none: no retry)")
    group.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for TCP connect")
    group.add_argument("--banner-timeout", type=float, default=30.0,
                       help="seconds to wait for the 220 greeting (greylisting MTAs pause 10-30 s)")
    group.add_argument("--command-timeout", type=float, default=15.0,
                       help="seconds to wait for the reply to EHLO, STARTTLS, QUIT")
    group.add_argument("--tls-timeout", type=float, default=15.0, help="seconds for the TLS handshake")
    group.add_argument("--probe-deadline", type=float, default=90.0,
                       help="seconds from the start of an address's STARTTLS probe to the end of its enumeration "
                            "and re-asks; the no-SNI handshake and further names' SNI handshakes are bounded by "
                            "their own timeouts instead")
    group.add_argument("--enumerate", choices=("off", "posture", "full"), default="posture",
                       help="protocol/cipher enumeration per address: posture (7-12 sessions), full, or off")
    group.add_argument("--full-sample", type=float, default=0.0, metavar="FRACTION",
                       help="with posture mode, enumerate this share of addresses in full mode (e.g. 0.01)")
    group.add_argument("--no-sni-checks", action="store_true",
                       help="judge every MX name of an address on the probe's certificate (no SNI sessions)")
    group.add_argument("--sni-cap", type=int, default=50, metavar="N",
                       help="extra handshake-only SNI sessions per address (further names: not_checked)")
    group.add_argument("--sni-same-run", type=int, default=3, metavar="N",
                       help="after N further names in a row got the certificate presented without SNI, take the "
                            "server to ignore SNI and open no more SNI sessions to it")
    group.add_argument("--recheck-limit", type=int, default=2, metavar="N",
                       help="re-asks of a question two sessions of one address answered differently")
    for family in ("ipv4", "ipv6"):
        group.add_argument(f"--{family}", choices=("auto", "on", "off"), default="auto",
                           help=f"probe {family} addresses: auto (if this host has a route; a lookup, no packet), "
                                "on or off")


def flag_error(exc: ConfigError) -> str:
    """The message of a config error, naming the option the user typed (``--concurrency``)."""
    flag = FLAGS.get(exc.setting or "")
    return f"{flag} {exc.reason}" if flag else str(exc)


def check_ehlo_responsibility(args: argparse.Namespace, config: ScanConfig) -> None:
    """RFC 5321 §4.1.1.1: the EHLO name is how a receiving MTA, and its postmaster, knows who connects.

    A public server sees ``localhost`` or a bare host name as an anonymous (or forged) client and may
    block the scanner's address; the operator then cannot tell who to contact. So: a warning when the
    name is not a fully qualified domain, and a refusal when this machine's own name is used that way
    against public targets (without ``--allow-private`` every target is public) - pass ``--ehlo-name``.
    """
    name = config.probe.ehlo_name
    if is_fqdn(name):
        return
    if args.ehlo_name is None and not args.allow_private:
        raise ConfigError(f"this machine's name {name!r} is not a fully qualified domain name: pass --ehlo-name "
                          "with a name that resolves to this scanner and says who runs it (README \"Scanning "
                          "responsibly\")")
    _log.warning("EHLO name %r is not a fully qualified domain name: servers may refuse or block the scanner",
                 name)


def config_from_args(args: argparse.Namespace) -> ScanConfig:
    probe_kwargs: dict[str, Any] = {
        "port": args.port, "connect_timeout": args.connect_timeout, "banner_timeout": args.banner_timeout,
        "command_timeout": args.command_timeout, "tls_timeout": args.tls_timeout,
        "probe_deadline": args.probe_deadline, "max_connections": args.concurrency,
        "per_ip_concurrency": args.per_ip_concurrency, "per_ip_interval": args.per_ip_interval,
        "workers": args.concurrency, "enumeration": args.enumerate, "full_sample": args.full_sample,
        "per_prefix_concurrency": args.per_prefix_concurrency, "throttle_retry_delays": tuple(args.throttle_retry),
        "summaries_in_memory": getattr(args, "summaries_in_memory", 25_000),
        "sni_checks": not args.no_sni_checks, "sni_sessions_per_address": args.sni_cap,
        "sni_same_run": args.sni_same_run,
        "recheck_limit": args.recheck_limit,
        "ipv4": args.ipv4, "ipv6": args.ipv6,
    }
    if args.ehlo_name is not None:
        probe_kwargs["ehlo_name"] = args.ehlo_name
    defaults = HealthConfig()  # ``check`` has no such options: one domain never fills a window
    health = HealthConfig(
        dns_window=getattr(args, "dns_failure_window", defaults.dns_window),
        dns_threshold=getattr(args, "dns_failure_threshold", defaults.dns_threshold),
        probe_window=getattr(args, "probe_failure_window", defaults.probe_window),
        probe_threshold=getattr(args, "probe_failure_threshold", defaults.probe_threshold),
    )
    return ScanConfig(
        health=health,
        output=OutputConfig(args.out, rows_per_file=args.rows_per_file,
                            row_group_size=min(20_000, args.rows_per_file),
                            flush_interval=getattr(args, "commit_interval", 30.0)),
        dns=DnsConfig(servers=tuple(args.resolver), timeout=args.dns_timeout, tries=args.dns_tries,
                      qps=args.dns_qps, concurrency=args.dns_concurrency, workers=args.dns_workers,
                      max_mx_hosts=args.max_mx_hosts, max_mx_addresses=args.max_mx_addresses),
        probe=ProbeConfig(**probe_kwargs),
        safety=SafetyConfig(allow_private=args.allow_private, exclude_file=args.exclude),
        ca_file=args.ca_file,
        max_domains_in_flight=args.max_in_flight,
        policy_checks=not args.no_policy,
    )


def _rate_text(stats: ScanStats, total: InputTotal | None) -> str:
    """Rows/s of this attempt (lines done by an earlier attempt are not work done now) and the ETA."""
    new = stats.rows_done - stats.resumed
    rate = new / max(stats.elapsed(), 1e-9)
    text = f"{rate:,.0f} dom/s"
    if total is not None and rate > 0 and new > 0:
        remaining = max(0, total.lines - stats.rows_done)
        eta = remaining / rate
        text += f" · ETA {_duration(eta)}" + (" (estimated total)" if total.how == "estimated" else "")
    return text


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _counters_text(stats: ScanStats) -> str:
    return (f"probes {stats.probes_done:,}/{stats.probes_requested:,} ({stats.probes_in_flight} in flight) · "
            f"dns q {stats.dns_queries:,} · errors dns {stats.dns_failures:,} probe {stats.probe_failures:,} "
            f"bug {stats.internal_errors}")


class _ProgressView:
    """Live bar on a terminal: done/total (when known), rate, ETA, probes in flight, errors."""

    def __init__(self, console: Console, total: InputTotal | None) -> None:
        self._progress = Progress(
            TextColumn("[bold]scan"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=console, transient=False,
        )
        self._total = total
        self._task: TaskID = self._progress.add_task("scan", total=total.lines if total else None, info="")

    def __enter__(self) -> _ProgressView:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, stats: ScanStats) -> None:
        info = f"{_rate_text(stats, self._total)} · {_counters_text(stats)}"
        self._progress.update(self._task, completed=stats.rows_done, info=info)


class _StatusLines:
    """Without a terminal: one plain log line every ``every`` seconds, so a long scan's log shows progress."""

    def __init__(self, total: InputTotal | None, every: float) -> None:
        self._total = total
        self._every = every
        self._last = time.monotonic()

    def __enter__(self) -> _StatusLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, stats: ScanStats) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        of = f"/{self._total.lines:,}" + (" (estimated)" if self._total.how == "estimated" else "") \
            if self._total else ""
        _log.info("status: %s%s rows · %s · %s", f"{stats.rows_done:,}", of, _rate_text(stats, self._total),
                  _counters_text(stats))


def _run_loop(coro: Coroutine[Any, Any, ScanStats], use_uvloop: bool) -> ScanStats:
    if use_uvloop:
        try:
            import uvloop  # noqa: PLC0415 - optional accelerator
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def print_summary(console: Console, scan: Scan, stats: ScanStats) -> None:
    """The whole scan (every attempt, from the scan record), then what this attempt did."""
    totals = scan.record.totals()
    mail, attempts = totals.with_mail_hosts, len(scan.record.attempts)
    share = f"{100 * totals.starttls_all / mail:.1f}%" if mail else "n/a"
    console.print(f"[bold]{totals.starttls_all} of {mail} mail domains ({share}) accept STARTTLS on every MX[/bold]"
                  + (f" (over {attempts} attempts)" if attempts > 1 else ""))
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(totals.verdicts.items()))
    console.print(f"scan: {totals.domain_rows:,} rows (domains {totals.domains:,}, invalid {totals.invalid_lines:,}, "
                  f"duplicates {totals.duplicate_lines:,}); probes {totals.probes:,}; verdicts: {verdicts}")
    tally = scan.input_tally
    console.print(f"this attempt ({scan.attempt}): input {tally.physical:,} lines = {stats.rows_done:,} rows "
                  f"(scanned {stats.domains_done:,}, invalid {stats.invalid:,}, duplicates {stats.duplicates:,}, "
                  f"excluded {stats.excluded:,}, done in an earlier attempt {stats.resumed:,}) + {tally.skipped:,} "
                  f"blank or comment lines; internal errors {stats.internal_errors}")
    new = stats.rows_done - stats.resumed
    console.print(f"probes {stats.probes_done:,}; DNS queries {stats.dns_queries:,}; "
                  f"{stats.elapsed():.1f}s ({new / max(stats.elapsed(), 1e-9):,.0f} domains/s in this attempt)")
    console.print(f"dataset: {scan.config.output.out_dir} (scan id {scan.scan_id})"
                  + ("" if scan.completed else " [yellow]NOT COMPLETE: partial dataset[/yellow]"))


def _resume_hint(source: str) -> str:
    return ("run the same command again to resume" if source != "-"
            else "a scan read from stdin cannot be resumed: pass the input as a file")


class CommandError(Exception):
    """A command cannot run: ``str(exc)`` is the one-line message, ``exit_code`` the documented code."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _engine_setup(args: argparse.Namespace) -> tuple[ScanConfig, ExcludeList, TrustStore]:
    """Config, opt-out list and trust store of ``scan``/``check``; ``CommandError`` names the option at fault."""
    for flag, path in (("--exclude", args.exclude), ("--ca-file", args.ca_file)):
        if path is not None and not Path(path).is_file():
            raise CommandError(f"{flag}: no such file: {path}", ExitCode.NO_INPUT)
    try:
        config = config_from_args(args)
        check_ehlo_responsibility(args, config)
        exclude = ExcludeList.from_file(args.exclude) if args.exclude else ExcludeList()
        return config, exclude, load_trust_store(config)
    except ConfigError as exc:
        raise CommandError(flag_error(exc), ExitCode.USAGE) from exc
    except ExcludeListError as exc:
        raise CommandError(f"--exclude: {exc}", ExitCode.DATA_ERROR) from exc
    except TrustStoreError as exc:
        raise CommandError(f"--ca-file: {exc}", ExitCode.CONFIG) from exc


def run_scan(args: argparse.Namespace, console: Console) -> int:
    """Scan, or resume the interrupted scan in the output directory (same command, same settings).

    The output directory is locked for the scan's whole life (``scanner.output.lock``): a second scan
    into it refuses with one line naming the holder (the kernel releases the lock however we end).
    """
    lock = OutputLock(args.out)
    try:
        return _run_scan_locked(args, console, lock)
    finally:
        lock.release()


def _run_scan_locked(args: argparse.Namespace, console: Console, lock: OutputLock) -> int:
    try:
        _check_cluster_options(args)
        setup = scan_setup(args, lock)
    except CommandError as exc:
        _log.error("%s", exc)
        return exc.exit_code
    if setup is None:
        _log.info("%s already holds a complete scan; use --overwrite to scan again", args.out)
        return ExitCode.OK
    config, exclude, trust, resume = setup
    if resume.attempt > 1 or resume.done_lines.count:
        _log.info("resuming: attempt %d; %s input lines and %s probes already written are kept (removed %d "
                  "uncommitted files)", resume.attempt, f"{resume.done_lines.count:,}", f"{len(resume.probes):,}",
                  resume.removed_files)
    if is_stream_source(args.domains):
        _log.warning("reading domains from %s: if this scan is interrupted it cannot be resumed (a stream is read "
                     "once; pass the input as a file to be able to resume)",
                     "stdin" if str(args.domains) == "-" else f"a stream ({args.domains})")
    try:
        scan = _make_scan(args, config, trust, exclude, resume)
    except CommandError as exc:
        _log.error("%s", exc)
        return exc.exit_code
    view = _progress_view(args, console)
    try:
        if view is None:
            stats = _run_loop(scan.run(), not args.no_uvloop)
        else:
            with view:
                stats = _run_loop(scan.run(view.update), not args.no_uvloop)
    except KeyboardInterrupt:  # Ctrl-C outside the scan's own handlers (start-up, shutdown)
        console.print(f"interrupted: everything committed is kept; {_resume_hint(str(args.domains))}",
                      soft_wrap=True)
        return ExitCode.INTERRUPTED
    except ScanFailed as exc:
        _log.error("%s", exc)
        _log.error("the scan stopped; everything committed so far is kept: fix the cause and run the same "
                   "command again to resume")
        return exc.exit_code
    except InputError as exc:  # the input became unreadable part-way: what was read is scanned and kept
        print_summary(console, scan, scan.stats)
        _log.error("%s", exc)
        _log.error("the lines read before the error are scanned and kept (see run.json: input_error)")
        return ExitCode.DATA_ERROR
    if scan.abandoned:  # a second Ctrl-C: one line, no summary
        console.print(f"{scan.stop_message}; {_resume_hint(str(args.domains))}", soft_wrap=True)
        return ExitCode.INTERRUPTED
    print_summary(console, scan, stats)
    if scan.breakdown is not None:
        stdin = " But a scan read from stdin cannot be resumed." if str(args.domains) == "-" else ""
        console.print(f"[red]stopped:[/red] {scan.stop_message}{stdin}")
        return ExitCode.UNAVAILABLE
    if not scan.completed:
        _log.warning("%s; %s", scan.stop_message, _resume_hint(str(args.domains)))
        return ExitCode.INTERRUPTED
    return ExitCode.OK


def _check_cluster_options(args: argparse.Namespace) -> None:
    """--workers/--cluster make sense and Ray is installed: checked before anything else is done."""
    if not args.workers and not args.cluster:
        return
    if args.workers < 0 or (args.workers == 0 and not args.cluster):
        raise CommandError("--workers: give a number of workers >= 1", ExitCode.USAGE)
    try:
        require_ray()
    except ClusterUnavailable as exc:
        raise CommandError(str(exc), ExitCode.CONFIG) from exc


def _make_scan(args: argparse.Namespace, config: ScanConfig, trust: TrustStore, exclude: ExcludeList,
               resume: ResumeState) -> Scan:
    """The scan in this process, or (--workers/--cluster) its driver for workers on Ray (scanner.cluster)."""
    if not args.workers and not args.cluster:
        return Scan(config, args.domains, trust, exclude, resume=resume, vantage=args.vantage)
    from scanner.cluster.driver import ClusterScan  # noqa: PLC0415 (imports Ray, an optional extra)

    scan = ClusterScan(config, args.domains, trust, exclude, resume, args.vantage, args.workers, args.cluster)
    try:
        scan.connect()
    except ClusterUnavailable as exc:
        raise CommandError(str(exc), ExitCode.UNAVAILABLE) from exc
    return scan


def scan_setup(args: argparse.Namespace,
               lock: OutputLock) -> tuple[ScanConfig, ExcludeList, TrustStore, ResumeState] | None:
    """Everything a scan needs before it reads input, for the CLI and ``scanner.scan`` alike: the input
    is readable, the options are valid, the output directory is ours (``lock``, held until the caller
    releases it: a second scan into it refuses), writable, the resolvers answer, and the state of
    earlier attempts. None when the output already holds a complete scan (and no ``--overwrite``).
    Raises ``CommandError`` with the documented exit code; nothing is created before the options are valid.
    """
    try:
        check_input(args.domains)
    except InputError as exc:
        raise CommandError(str(exc), ExitCode.NO_INPUT) from exc
    config, exclude, trust = _engine_setup(args)
    out = config.output.out_dir
    try:
        lock.acquire()
    except OutputLocked as exc:
        raise CommandError(str(exc), ExitCode.TEMP_FAIL) from exc
    except OutputDirError as exc:
        raise CommandError(str(exc), ExitCode.CANT_CREATE) from exc
    if scan_is_complete(out) and not args.overwrite:
        return None
    _preflight(config, args.overwrite)
    return config, exclude, trust, _load_resume(out, config, args.domains, trust)


def _preflight(config: ScanConfig, overwrite: bool) -> None:
    """Before the input is read: the output is writable and every resolver answers (scanner.preflight)."""
    try:
        prepare_output_dir(config.output.out_dir, overwrite)
        if overwrite:
            remove_derived(config.output.out_dir)  # a report of the previous scan must not pass for this one's
        check_output_writable(config.output.out_dir, STATE_DIR)
        check_routes(config.probe, lab=config.safety.allow_private)
        asyncio.run(check_resolvers(config.dns))
    except OutputDirError as exc:
        raise CommandError(str(exc), ExitCode.CANT_CREATE) from exc
    except PreflightError as exc:
        raise CommandError(str(exc), exc.exit_code) from exc


def _load_resume(out: Path, config: ScanConfig, source: str, trust: TrustStore) -> ResumeState:
    """What earlier attempts committed: a damaged dataset is DATA_ERROR, another scan's settings CONFIG."""
    try:
        return load_resume_state(out, config, source, trust)
    except DamagedOutputError as exc:
        raise CommandError(str(exc), ExitCode.DATA_ERROR) from exc
    except OutputDirError as exc:
        raise CommandError(str(exc), ExitCode.CONFIG) from exc


def _progress_view(args: argparse.Namespace, console: Console) -> _ProgressView | _StatusLines | None:
    if args.no_progress:
        return None
    total = input_total(args.domains)
    if total is not None and total.how == "estimated":
        _log.info("input total estimated from the compressed size: about %s lines", f"{total.lines:,}")
    return _ProgressView(console, total) if console.is_terminal else _StatusLines(total, STATUS_EVERY)


def check_result(args: argparse.Namespace, console: Console | None = None) -> CheckResult:
    """One domain (or one server) through the scan engine into a temporary dataset, read back.

    Raises ``CommandError`` for a bad target or option (nothing is sent then).
    """
    try:
        target = parse_target(args.domain, args.sni)
    except ValueError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from exc
    if target.port is not None:
        args.port = target.port
    workdir, source, out = temporary_input(target.name)
    with workdir:
        args.out, args.rows_per_file, args.max_in_flight = out, 1000, 16
        if target.server:
            args.no_policy = True  # MTA-STS, TLS-RPT and DANE belong to a domain, not to one server
        config, exclude, trust = _engine_setup(args)
        try:
            prepare_output_dir(out, overwrite=False)
        except OutputDirError as exc:
            raise CommandError(str(exc), ExitCode.CANT_CREATE) from exc
        server = ServerTarget(target.name, target.address) if target.server else None
        scan = Scan(config, source, trust, exclude, server=server)
        with console.status(f"checking {target.name} ...") if console else contextlib.nullcontext():
            _run_loop(scan.run(), not args.no_uvloop)
        # The scan's own SIGINT handler turns Ctrl-C into a stop, and a breakdown drops the domain's rows:
        # either way there is no result to show.
        if scan.breakdown is not None:
            raise CommandError(scan.stop_message, ExitCode.UNAVAILABLE)
        if not scan.completed:
            raise CommandError(scan.stop_message or "interrupted", ExitCode.INTERRUPTED)
        return check_rows(out)


def run_check(args: argparse.Namespace, console: Console) -> int:
    """``check``: the result shown to a person (or as JSON), and its exit code for scripts."""
    try:
        result = check_result(args, console)
    except (CommandError, ScanFailed) as exc:
        _log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    if args.json:
        print(to_json(result))
    else:
        render_check(result, Console())
    return check_exit_code(result, args.fail_under)


def run_report(args: argparse.Namespace, console: Console) -> int:
    """DuckDB over the dataset → report.html, report.md, report.json (scanner.report); several datasets →
    series.html, series.md, series.json."""
    from scanner.report import ReportError, build_report, write_domains_sidecar, write_report  # noqa: PLC0415

    for what, path in [*(("scan", out) for out in args.out), ("--baseline", args.baseline)]:
        if path is not None and not Path(path).is_dir():
            _log.error("%s: no such scan directory: %s", what, path)
            return ExitCode.NO_INPUT
    if len(args.out) > 1:
        if args.baseline is not None:
            _log.error("--baseline compares one scan; a series compares its own scans")
            return ExitCode.USAGE
        return _run_series_report(args, console)
    out = args.out[0]
    dest = args.dest or out / REPORT_DIR
    try:
        report = build_report(out, baseline=args.baseline, allow_different_settings=args.allow_different_settings)
    except ReportError as exc:
        _log.error("%s", exc)
        return exc.exit_code
    try:
        files = write_report(report, dest)
        write_domains_sidecar(out, report.drill, dest)  # the domains not inline in the page's drill-down
    except ReportError as exc:
        _log.error("--dest: %s" if exc.exit_code is ExitCode.CANT_CREATE else "%s", exc)
        return exc.exit_code
    except OSError as exc:
        _log.error("--dest: cannot write the report into %s: %s", dest, exc.strerror or exc)
        return ExitCode.CANT_CREATE
    return _announce(files, "report", args.json, console)


def _announce(files: ReportFiles, what: str, json_out: bool, console: Console) -> int:
    if json_out:
        print(files.json.read_text(encoding="utf-8"))
    console.print(f"{what} written: {files.html}, {files.markdown}, {files.json}")
    return ExitCode.OK


def _run_series_report(args: argparse.Namespace, console: Console) -> int:
    from scanner.report import ReportError, build_series, write_series  # noqa: PLC0415 - DuckDB: only here

    try:
        series = build_series(args.out, allow_different_settings=args.allow_different_settings)
    except ReportError as exc:
        _log.error("%s", exc)
        return exc.exit_code
    dest = args.dest or Path(series.scans[-1].out_dir) / SERIES_DIR
    try:
        files = write_series(series, dest)
    except ReportError as exc:
        _log.error("%s", exc)
        return exc.exit_code
    except OSError as exc:
        _log.error("--dest: cannot write the series report into %s: %s", dest, exc.strerror or exc)
        return ExitCode.CANT_CREATE
    return _announce(files, "series report", args.json, console)


def run_export(args: argparse.Namespace, console: Console) -> int:
    """One ``<table>.jsonl`` / ``.csv`` per table (scanner.export)."""
    from scanner.dataset import DatasetError  # noqa: PLC0415
    from scanner.export import CertEncoding, ExportError, ExportFormat, export_dataset  # noqa: PLC0415

    if not Path(args.out).is_dir():
        _log.error("no such scan directory: %s", args.out)
        return ExitCode.NO_INPUT
    dest = args.dest or args.out / EXPORT_DIR
    try:
        written = export_dataset(args.out, dest, ExportFormat(args.format), args.table, CertEncoding(args.certs))
    except (ExportError, DatasetError) as exc:
        _log.error("%s", exc)
        return ExitCode.DATA_ERROR
    except OSError as exc:
        _log.error("--dest: cannot write the export into %s: %s", dest, exc.strerror or exc)
        return ExitCode.CANT_CREATE
    console.print("exported: " + ", ".join(f"{t} {n:,} rows" for t, n in written.items()) + f" into {dest}")
    return ExitCode.OK


def _run_command(args: argparse.Namespace, console: Console) -> int:
    if args.command == "scan":
        return run_scan(args, console)
    if args.command == "report":
        return run_report(args, console)
    if args.command == "export":
        return run_export(args, console)
    return run_check(args, console)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        with command_logging(log_level(args.verbose, args.quiet), args.log_format, args.log_file):
            return int(_run_command(args, console))
    except OSError as exc:  # the log file itself cannot be opened: nothing ran
        print(f"smtp-tls-survey: error: --log-file: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.CANT_CREATE


if __name__ == "__main__":
    sys.exit(main())
