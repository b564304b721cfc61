"""Command line: parse arguments into one ``ScanConfig``, run the scan, show progress and a summary.

Exit codes: 0 scan completed (or already complete); 1 the scan could not run (bad input file, trust
store, output directory holding a scan with other settings); 2 usage or configuration error; 130
interrupted (everything committed is kept: the same command resumes the scan).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from scanner import __version__
from scanner.certs import TrustStoreError
from scanner.check import check_rows, render_check, temporary_input, to_json
from scanner.config import ConfigError, DnsConfig, OutputConfig, ProbeConfig, SafetyConfig, ScanConfig
from scanner.dataset import DatasetError
from scanner.derived import EXPORT_DIR, REPORT_DIR, SERIES_DIR, remove_derived
from scanner.export import CertEncoding, ExportError, ExportFormat, export_dataset
from scanner.input import InputError, count_lines
from scanner.net.addresses import ExcludeList, ExcludeListError
from scanner.output.parquet import OutputDirError, prepare_output_dir
from scanner.output.rows import TABLES
from scanner.pipeline import Scan, ScanStats, load_trust_store
from scanner.report import (
    ReportError,
    ReportFiles,
    build_report,
    build_series,
    write_domains_sidecar,
    write_report,
    write_series,
)
from scanner.resume import load_resume_state, scan_is_complete

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smtp-tls-survey", description="Survey how well inbound mail servers do TLS (STARTTLS, certificates)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    scan = sub.add_parser("scan", help="scan a list of domains into a Parquet dataset")
    scan.add_argument("domains", help="file of domains (text, Tranco CSV, .gz of either) or '-' for stdin")
    scan.add_argument("-o", "--out", required=True, type=Path, help="output directory for the dataset")
    scan.add_argument("--overwrite", action="store_true", help="replace a previous scan in the output directory")
    _add_engine_options(scan)
    misc = scan.add_argument_group("run")
    misc.add_argument("--max-in-flight", type=int, default=5000, help="domains waiting for probes at once")
    misc.add_argument("--rows-per-file", type=int, default=200_000,
                      help="rows buffered before a segment (one part file per table) is committed")
    misc.add_argument("--commit-interval", type=float, default=30.0,
                      help="seconds between commits: at most this much work is redone after a crash")
    misc.add_argument("--summaries-in-memory", type=int, default=25_000,
                      help="finished probe summaries kept in memory; older ones are spilled to disk")
    misc.add_argument("--no-progress", action="store_true", help="no live progress bar")
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
    export = sub.add_parser("export", help="export a scan's tables as JSON Lines or CSV")
    export.add_argument("out", type=Path, help="the scan's output directory")
    export.add_argument("--format", choices=[f.value for f in ExportFormat], default="jsonl")
    export.add_argument("--table", action="append", default=[], choices=list(TABLES),
                        help="table to export (repeatable; default: all)")
    export.add_argument("--certs", choices=[c.value for c in CertEncoding], default="base64",
                        help="certificates as base64 DER or PEM text")
    export.add_argument("--dest", type=Path, help="directory for the files (default: OUT/export)")
    check = sub.add_parser("check", help="check one domain and show the result to a person (or --json)")
    check.add_argument("domain", help="the domain to check")
    check.add_argument("--json", action="store_true", help="print the rows as JSON instead of tables")
    _add_engine_options(check)
    return parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``scan`` and ``check``: both run the same engine."""
    _add_dns_options(parser.add_argument_group("DNS"))
    _add_probe_options(parser.add_argument_group("probing"))
    safety = parser.add_argument_group("safety and trust")
    safety.add_argument("--ca-file", type=Path, help="PEM trust store replacing certifi's bundle")
    safety.add_argument("--allow-private", action="store_true",
                        help="probe loopback/private/reserved addresses (labs and tests only)")
    safety.add_argument("--exclude", type=Path, help="opt-out file: CIDRs and domain suffixes, one per line")
    parser.add_argument("--no-policy", action="store_true", help="skip MTA-STS, TLS-RPT and DANE checks")
    parser.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio event loop")


def _add_dns_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--resolver", action="append", default=[], metavar="IP[:PORT]",
                       help="DNS resolver to query (repeatable); default: the system's")
    group.add_argument("--dns-qps", type=float, default=2000.0, help="DNS queries per second, global")
    group.add_argument("--dns-timeout", type=float, default=3.0, help="seconds per DNS try")
    group.add_argument("--dns-tries", type=int, default=2, help="tries per DNS query")
    group.add_argument("--dns-concurrency", type=int, default=500, help="DNS queries in flight")
    group.add_argument("--dns-workers", type=int, default=256, help="domains resolved at once")


def _add_probe_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--port", type=int, default=25, help="SMTP port to probe")
    group.add_argument("--ehlo-name", help="name sent in EHLO (default: this machine's FQDN)")
    group.add_argument("--concurrency", type=int, default=200, help="probe connections in flight, global")
    group.add_argument("--per-ip-concurrency", type=int, default=1, help="connections at once per address")
    group.add_argument("--per-ip-interval", type=float, default=1.0,
                       help="minimum seconds between connections to one address")
    group.add_argument("--per-prefix-concurrency", type=int, default=8,
                       help="connections at once into one /24 (IPv4) or /48 (IPv6)")
    group.add_argument("--throttle-retry", type=float, nargs="*", default=[10.0, 60.0], metavar="SECONDS",
                       help="back-off delays before retrying a throttled address (none: no retry)")
    group.add_argument("--connect-timeout", type=float, default=10.0)
    group.add_argument("--banner-timeout", type=float, default=30.0)
    group.add_argument("--command-timeout", type=float, default=15.0)
    group.add_argument("--tls-timeout", type=float, default=15.0)
    group.add_argument("--probe-deadline", type=float, default=90.0, help="hard cap on one probe, seconds")
    group.add_argument("--enumerate", choices=("off", "posture", "full"), default="posture",
                       help="protocol/cipher enumeration per address: posture (7-12 sessions), full, or off")
    group.add_argument("--full-sample", type=float, default=0.0, metavar="FRACTION",
                       help="with posture mode, enumerate this share of addresses in full mode (e.g. 0.01)")


def config_from_args(args: argparse.Namespace) -> ScanConfig:
    probe_kwargs: dict[str, Any] = {
        "port": args.port, "connect_timeout": args.connect_timeout, "banner_timeout": args.banner_timeout,
        "command_timeout": args.command_timeout, "tls_timeout": args.tls_timeout,
        "probe_deadline": args.probe_deadline, "max_connections": args.concurrency,
        "per_ip_concurrency": args.per_ip_concurrency, "per_ip_interval": args.per_ip_interval,
        "workers": args.concurrency, "enumeration": args.enumerate, "full_sample": args.full_sample,
        "per_prefix_concurrency": args.per_prefix_concurrency, "throttle_retry_delays": tuple(args.throttle_retry),
        "summaries_in_memory": getattr(args, "summaries_in_memory", 25_000),
    }
    if args.ehlo_name:
        probe_kwargs["ehlo_name"] = args.ehlo_name
    return ScanConfig(
        output=OutputConfig(args.out, rows_per_file=args.rows_per_file,
                            row_group_size=min(20_000, args.rows_per_file),
                            flush_interval=getattr(args, "commit_interval", 30.0)),
        dns=DnsConfig(servers=tuple(args.resolver), timeout=args.dns_timeout, tries=args.dns_tries,
                      qps=args.dns_qps, concurrency=args.dns_concurrency, workers=args.dns_workers),
        probe=ProbeConfig(**probe_kwargs),
        safety=SafetyConfig(allow_private=args.allow_private, exclude_file=args.exclude),
        ca_file=args.ca_file,
        max_domains_in_flight=args.max_in_flight,
        policy_checks=not args.no_policy,
    )


class _ProgressView:
    """Live bar: done/total (when known), domains/s, probes in flight, errors."""

    def __init__(self, console: Console, total: int | None) -> None:
        self._progress = Progress(
            TextColumn("[bold]scan"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=console, transient=False,
        )
        self._task: TaskID = self._progress.add_task("scan", total=total, info="")

    def __enter__(self) -> _ProgressView:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, stats: ScanStats) -> None:
        rate = stats.rows_done / max(stats.elapsed(), 1e-9)
        info = (f"{rate:,.0f} dom/s · probes {stats.probes_done:,}/{stats.probes_requested:,} "
                f"({stats.probes_in_flight} in flight) · dns q {stats.dns_queries:,} · "
                f"errors dns {stats.dns_failures:,} probe {stats.probe_failures:,} bug {stats.internal_errors}")
        self._progress.update(self._task, completed=stats.rows_done, info=info)


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
    mail = stats.with_mail_hosts
    share = f"{100 * stats.starttls_all / mail:.1f}%" if mail else "n/a"
    console.print(f"[bold]{stats.starttls_all} of {mail} mail domains ({share}) accept STARTTLS on every MX[/bold]")
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(stats.verdicts.items()))
    tally = scan.input_tally
    console.print(f"input: {tally.physical:,} lines = {stats.rows_done:,} rows (scanned {stats.domains_done:,}, "
                  f"invalid {stats.invalid:,}, duplicates {stats.duplicates:,}, excluded {stats.excluded:,}, "
                  f"done in an earlier attempt {stats.resumed:,}) + {tally.skipped:,} blank or comment lines")
    console.print(f"verdicts: {verdicts}; internal errors {stats.internal_errors}")
    console.print(f"probes {stats.probes_done:,}; DNS queries {stats.dns_queries:,}; "
                  f"{stats.elapsed():.1f}s ({stats.rows_done / max(stats.elapsed(), 1e-9):,.0f} domains/s)")
    console.print(f"dataset: {scan.config.output.out_dir} (scan id {scan.scan_id})"
                  + ("" if scan.completed else " [yellow]INTERRUPTED: partial dataset[/yellow]"))


def run_scan(args: argparse.Namespace, console: Console) -> int:
    """Scan, or resume the interrupted scan in the output directory (same command, same settings)."""
    try:
        config = config_from_args(args)
        exclude = ExcludeList.from_file(args.exclude) if args.exclude else ExcludeList()
        trust = load_trust_store(config)
        if str(args.domains) != "-" and not Path(args.domains).is_file():
            raise InputError(f"no such input file: {args.domains}")
        out = config.output.out_dir
        if scan_is_complete(out) and not args.overwrite:
            console.print(f"{out} already holds a complete scan; use --overwrite to scan again")
            return EXIT_OK
        prepare_output_dir(out, args.overwrite)
        if args.overwrite:
            remove_derived(out)  # a report of the previous scan must not pass for one of this scan
        resume = load_resume_state(out, config, args.domains, trust)
    except (ConfigError, ExcludeListError) as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        return EXIT_USAGE
    except (TrustStoreError, InputError, OutputDirError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_FAILED
    if resume.attempt > 1 or resume.done_lines.count:
        console.print(f"resuming: {resume.done_lines.count:,} input lines and {len(resume.probes):,} probes already "
                      f"written are kept (removed {resume.removed_files} uncommitted files)")
    scan = Scan(config, args.domains, trust, exclude, resume=resume)
    total = None if args.no_progress else count_lines(args.domains)
    try:
        if args.no_progress:
            stats = _run_loop(scan.run(), not args.no_uvloop)
        else:
            with _ProgressView(console, total) as view:
                stats = _run_loop(scan.run(view.update), not args.no_uvloop)
    except KeyboardInterrupt:  # a second Ctrl-C: in-flight work abandoned, committed rows are safe
        stats = scan.stats
    except InputError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_FAILED
    print_summary(console, scan, stats)
    if not scan.completed:
        console.print("interrupted: everything committed so far is kept; run the same command again to resume")
        return EXIT_INTERRUPTED
    return EXIT_OK


def run_check(args: argparse.Namespace, console: Console) -> int:
    """One domain through the scan engine, into a temporary dataset, then shown (scanner.check)."""
    workdir, source, out = temporary_input(args.domain)
    with workdir:
        args.out, args.rows_per_file, args.max_in_flight = out, 1000, 16
        try:
            config = config_from_args(args)
            exclude = ExcludeList.from_file(args.exclude) if args.exclude else ExcludeList()
            trust = load_trust_store(config)
            prepare_output_dir(out, overwrite=False)
        except (ConfigError, ExcludeListError) as exc:
            console.print(f"[red]configuration error:[/red] {exc}")
            return EXIT_USAGE
        except (TrustStoreError, OutputDirError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            return EXIT_FAILED
        scan = Scan(config, source, trust, exclude)
        try:
            with console.status(f"checking {args.domain} ..."):
                _run_loop(scan.run(), not args.no_uvloop)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        result = check_rows(out)
    if args.json:
        print(to_json(result))
    else:
        # Piped output stays one record per line (greppable) instead of rich's 80-column wrap.
        render_check(result, Console() if sys.stdout.isatty() else Console(width=200))
    return EXIT_OK


def run_report(args: argparse.Namespace, console: Console) -> int:
    """DuckDB over the dataset → report.html, report.md, report.json (scanner.report); several datasets →
    series.html, series.md, series.json."""
    if len(args.out) > 1:
        if args.baseline is not None:
            console.print("[red]usage error:[/red] --baseline compares one scan; a series compares its own scans")
            return EXIT_USAGE
        return _run_series_report(args, console)
    out = args.out[0]
    dest = args.dest or out / REPORT_DIR
    try:
        report = build_report(out, baseline=args.baseline,
                              allow_different_settings=args.allow_different_settings)
        files = write_report(report, dest)
        write_domains_sidecar(out, report.drill, dest)  # the domains not inline in the page's drill-down
    except ReportError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_FAILED
    return _announce(files, "report", args.json, console)


def _announce(files: ReportFiles, what: str, json_out: bool, console: Console) -> int:
    if json_out:
        print(files.json.read_text(encoding="utf-8"))
    console.print(f"{what} written: {files.html}, {files.markdown}, {files.json}")
    return EXIT_OK


def run_export(args: argparse.Namespace, console: Console) -> int:
    """One ``<table>.jsonl`` / ``.csv`` per table (scanner.export)."""
    dest = args.dest or args.out / EXPORT_DIR
    try:
        written = export_dataset(args.out, dest, ExportFormat(args.format), args.table, CertEncoding(args.certs))
    except (ExportError, DatasetError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_FAILED
    console.print("exported: " + ", ".join(f"{t} {n:,} rows" for t, n in written.items()) + f" into {dest}")
    return EXIT_OK


def _run_series_report(args: argparse.Namespace, console: Console) -> int:
    try:
        series = build_series(args.out, allow_different_settings=args.allow_different_settings)
        files = write_series(series, args.dest or Path(series.scans[-1].out_dir) / SERIES_DIR)
    except ReportError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_FAILED
    return _announce(files, "series report", args.json, console)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    if args.command == "scan":
        return run_scan(args, console)
    if args.command == "report":
        return run_report(args, console)
    if args.command == "check":
        return run_check(args, console)
    if args.command == "export":
        return run_export(args, console)
    return EXIT_USAGE  # pragma: no cover - argparse enforces the sub-command


if __name__ == "__main__":
    sys.exit(main())
