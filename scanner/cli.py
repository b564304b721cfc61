"""Command line: parse arguments into one ``ScanConfig``, run the scan, show progress and a summary.

Exit codes are ``scanner.exit_codes.ExitCode`` (README "Exit codes"). Conventions (README "Usage"):
no abbreviated options, every default in ``--help``, errors name the option the user typed, messages
through ``logging`` (``--verbose``/``--quiet``/``--log-file``/``--log-format json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from scanner.certs import TrustStore, TrustStoreError
from scanner.checker import (
    CheckResult,
    CheckTarget,
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
from scanner.interrupts import StopSignals, ignore_late_signals
from scanner.logs import command_logging, log_level
from scanner.net.addresses import ExcludeList, ExcludeListError
from scanner.options import add_options, build, setting_flags
from scanner.output.lock import OutputLock, OutputLocked
from scanner.output.parquet import STATE_DIR, DamagedOutputError, OutputDirError, prepare_output_dir
from scanner.output.rows import TABLES
from scanner.output.sink import MemorySink
from scanner.pipeline import Scan, ScanFailed, ScanStats, load_trust_store
from scanner.preflight import PreflightError, check_output_writable, check_resolvers, check_routes
from scanner.resume import ResumeState, load_resume_state, scan_is_complete
from scanner.version import __version__

if TYPE_CHECKING:
    from scanner.report import ReportFiles

__all__ = ["FLAGS", "CommandError", "build_parser", "check_result", "main", "run"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Config field (``ConfigError.setting``) → the option that sets it: errors name what the user typed.
FLAGS: Mapping[str, str] = MappingProxyType(setting_flags())

# ``check`` is one person waiting for one domain, not a survey: a short pause between the 7-12
# sessions to one address (at most 50 connection starts a second, one at a time) instead of the
# survey's 1 s, which made a three-MX check take 7.5 s. README "Usage" documents it.
CHECK_PER_IP_INTERVAL = 0.02
# What ``check`` fixes instead of offering an option: one domain is one small segment, and a handful of
# domains in flight (a server target's own name, or the domain) is plenty.
CHECK_ROWS_PER_FILE = 1000
CHECK_MAX_IN_FLIGHT = 16
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
    _add_engine_options(scan, scan=True)
    misc = scan.add_argument_group("run")
    add_options(misc, ScanConfig, only={"max_domains_in_flight"})
    add_options(misc, OutputConfig)
    add_options(misc, ProbeConfig, only=_RUN_PROBE_OPTIONS)
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
    add_options(health, HealthConfig)
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
    _add_engine_options(check, scan=False)
    return parser


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    logs = parser.add_argument_group("messages")
    logs.add_argument("-v", "--verbose", action="count", default=0, help="more messages (repeat for debug)")
    logs.add_argument("-q", "--quiet", action="count", default=0, help="fewer messages: warnings only (-qq: errors)")
    logs.add_argument("--log-file", type=Path, help="also write the messages to this file, with time stamps")
    logs.add_argument("--log-format", choices=("text", "json"), default="text",
                      help="json: one JSON object per line (time, level, logger, message), for pipelines")


# Probe options of a survey's bookkeeping (the "run" group of ``scan``), which ``check`` does not offer.
_RUN_PROBE_OPTIONS = frozenset({"summaries_in_memory"})


def _add_engine_options(parser: argparse.ArgumentParser, scan: bool) -> None:
    """Options shared by ``scan`` and ``check``: both run the same engine (scanner.options adds them from
    the config fields). ``check`` keeps its own per-address interval (``CHECK_PER_IP_INTERVAL``)."""
    add_options(parser.add_argument_group("DNS"), DnsConfig)
    add_options(parser.add_argument_group("probing"), ProbeConfig, skip=_RUN_PROBE_OPTIONS,
                defaults=None if scan else {"per_ip_interval": CHECK_PER_IP_INTERVAL})
    safety = parser.add_argument_group("safety and trust")
    add_options(safety, ScanConfig, only={"ca_file"})
    add_options(safety, SafetyConfig)
    add_options(parser, ScanConfig, only={"policy_checks"})
    parser.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio event loop")
    _add_log_options(parser)


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
    """``scan``'s configuration: every field from its option (scanner.options), or its default."""
    return build(ScanConfig, args, output=build(OutputConfig, args, out_dir=args.out))


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


def drive(scan: Scan, use_uvloop: bool, on_tick: Callable[[ScanStats], None] | None = None,
          signals: StopSignals | None = None) -> ScanStats:
    """Run ``scan`` on its own event loop under the command's owner of Ctrl-C and SIGTERM
    (``scanner.interrupts``; one of its own when the caller has none): the first stops, the second abandons."""
    owner = signals or StopSignals()
    owner.attach(scan, lambda: _stop_notice(scan))
    with owner:
        return _run_loop(owner.run(scan.run(on_tick)), use_uvloop)


def _stop_notice(scan: Scan) -> str:
    return (f"stopping: {scan.stats.domains_in_flight} domains in flight get up to {scan.config.stop_grace:g} s "
            "to finish; press Ctrl-C again to abandon them (committed rows are kept either way)")


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


def _engine_setup(args: argparse.Namespace,
                  make_config: Callable[[], ScanConfig]) -> tuple[ScanConfig, ExcludeList, TrustStore]:
    """Config, opt-out list and trust store of ``scan``/``check``; ``CommandError`` names the option at fault."""
    for flag, path in (("--exclude", args.exclude), ("--ca-file", args.ca_file)):
        if path is not None and not Path(path).is_file():
            raise CommandError(f"{flag}: no such file: {path}", ExitCode.NO_INPUT)
    try:
        config = make_config()
        check_ehlo_responsibility(args, config)
        exclude_file = config.safety.exclude_file
        exclude = ExcludeList.from_file(exclude_file) if exclude_file else ExcludeList()
        return config, exclude, load_trust_store(config)
    except ConfigError as exc:
        raise CommandError(flag_error(exc), ExitCode.USAGE) from exc
    except ExcludeListError as exc:
        raise CommandError(f"--exclude: {exc}", ExitCode.DATA_ERROR) from exc
    except TrustStoreError as exc:
        raise CommandError(f"--ca-file: {exc}", ExitCode.CONFIG) from exc


def run_scan(args: argparse.Namespace, console: Console, signals: StopSignals) -> int:
    """Scan, or resume the interrupted scan in the output directory (same command, same settings).

    The output directory is locked for the scan's whole life (``scanner.output.lock``): a second scan
    into it refuses with one line naming the holder (the kernel releases the lock however we end).
    """
    lock = OutputLock(args.out)
    try:
        return _run_scan_locked(args, console, lock, signals)
    except KeyboardInterrupt:  # a second Ctrl-C before the scan existed (set-up, the resolver check)
        console.print(f"interrupted: everything committed is kept; {_resume_hint(str(args.domains))}",
                      soft_wrap=True)
        return ExitCode.INTERRUPTED
    finally:
        lock.release()


def _run_scan_locked(args: argparse.Namespace, console: Console, lock: OutputLock, signals: StopSignals) -> int:
    try:
        _check_cluster_options(args)
        setup = scan_setup(args, lock)
    except CommandError as exc:
        _log.error("%s", exc)
        return exc.exit_code
    if setup is None:
        _log.info("%s already holds a complete scan; use --overwrite to scan again", args.out)
        return ExitCode.OK
    if signals.received:  # Ctrl-C during the set-up: no scan started, nothing written
        console.print(f"interrupted: everything committed is kept; {_resume_hint(str(args.domains))}",
                      soft_wrap=True)
        return ExitCode.INTERRUPTED
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
            stats = drive(scan, not args.no_uvloop, signals=signals)
        else:
            with view:
                stats = drive(scan, not args.no_uvloop, view.update, signals)
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
    config, exclude, trust = _engine_setup(args, lambda: config_from_args(args))
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


def check_config(args: argparse.Namespace, target: CheckTarget, out: Path) -> ScanConfig:
    """``check``'s configuration: the engine options as given, with what one domain (or server) fixes."""
    fixed: dict[str, Any] = {"output": OutputConfig(out, rows_per_file=CHECK_ROWS_PER_FILE),
                             "max_domains_in_flight": CHECK_MAX_IN_FLIGHT}
    if target.server:
        fixed["policy_checks"] = False  # MTA-STS, TLS-RPT and DANE belong to a domain, not to one server
    config = build(ScanConfig, args, **fixed)
    if target.port is not None:  # HOST:PORT names the port, whatever --port says
        config = dataclasses.replace(config, probe=dataclasses.replace(config.probe, port=target.port))
    return config


def check_result(args: argparse.Namespace, console: Console | None = None,
                 signals: StopSignals | None = None) -> CheckResult:
    """One domain (or one server) through the scan engine; its rows are collected in memory.

    Raises ``CommandError`` for a bad target or option (nothing is sent then).
    """
    try:
        target = parse_target(args.domain, args.sni)
    except ValueError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from exc
    workdir, source, out = temporary_input(target.name)  # the input line, and the scan's work files
    with workdir:
        config, exclude, trust = _engine_setup(args, lambda: check_config(args, target, out))
        try:
            prepare_output_dir(out, overwrite=False)
        except OutputDirError as exc:
            raise CommandError(str(exc), ExitCode.CANT_CREATE) from exc
        if signals is not None and signals.received:  # Ctrl-C during the set-up
            raise CommandError("interrupted", ExitCode.INTERRUPTED)
        server = ServerTarget(target.name, target.address) if target.server else None
        rows = MemorySink()
        scan = Scan(config, source, trust, exclude, server=server, sink=rows)
        with console.status(f"checking {target.name} ...") if console else contextlib.nullcontext():
            drive(scan, not args.no_uvloop, signals=signals)
        # The command's signal owner turns Ctrl-C into a stop, and a breakdown drops the domain's rows:
        # either way there is no result to show.
        if scan.breakdown is not None:
            raise CommandError(scan.stop_message, ExitCode.UNAVAILABLE)
        if not scan.completed:
            raise CommandError(scan.stop_message or "interrupted", ExitCode.INTERRUPTED)
        return check_rows(rows)


def run_check(args: argparse.Namespace, console: Console, signals: StopSignals) -> int:
    """``check``: the result shown to a person (or as JSON), and its exit code for scripts."""
    try:
        result = check_result(args, console, signals)
    except (CommandError, ScanFailed) as exc:
        _log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C before the scan existed
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
    if args.command == "report":
        return run_report(args, console)
    if args.command == "export":
        return run_export(args, console)
    # The commands that scan own Ctrl-C and SIGTERM from their start to their last line (scanner.interrupts).
    with StopSignals() as signals:
        return run_scan(args, console, signals) if args.command == "scan" else run_check(args, console, signals)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        with command_logging(log_level(args.verbose, args.quiet), args.log_format, args.log_file):
            return int(_run_command(args, console))
    except OSError as exc:  # the log file itself cannot be opened: nothing ran
        print(f"smtp-tls-survey: error: --log-file: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.CANT_CREATE


def run() -> NoReturn:
    """The process entry (``smtp-tls-survey``, ``python -m scanner``): ``main``, then exit with its code.

    The command has said how it ended; a Ctrl-C that lands while the process ends (after the command's
    signal owner restored the handlers) would only turn that exit code into a death by SIGINT.
    """
    code = main()
    ignore_late_signals()
    sys.exit(code)


if __name__ == "__main__":
    run()
