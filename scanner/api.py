"""The Python API beside the command line, for notebooks and scripts: ``scan`` and ``check``.

Options are the command line's, with underscores (``per_ip_interval=0``, ``resolver=["127.0.0.1"]``,
``allow_private=True``) and the same defaults, validation and safety rules (``scan`` keeps the survey's
politeness defaults, ``check`` its own). A bad option raises ``CommandError`` naming the option, before
any packet. Both run their own event loop: from a notebook whose loop is running, call them in a
thread (``await asyncio.to_thread(scanner.check, "example.org")``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.checker import CheckResult
from scanner.cli import CommandError, build_parser, check_result, drive, scan_setup
from scanner.exit_codes import ExitCode
from scanner.output.lock import OutputLock
from scanner.pipeline import Scan, ScanStats

__all__ = ["CommandError", "ScanResult", "check", "scan"]


@dataclass(frozen=True, slots=True)
class ScanResult:
    out: Path  # the dataset: open it with ``scanner.load(out)``
    scan_id: str
    completed: bool
    stats: ScanStats


def _namespace(argv: list[str], options: dict[str, Any]) -> argparse.Namespace:
    """The command's parsed arguments with ``options`` in place of their defaults (a new namespace)."""
    parsed = vars(build_parser().parse_args(argv))
    unknown = [name for name in options if name not in parsed or name in ("command", "domain", "domains", "out")]
    if unknown:
        raise CommandError(f"unknown option {unknown[0]!r}", ExitCode.USAGE)
    given = {name: [value] if name == "resolver" and isinstance(value, str) else value
             for name, value in options.items()}
    return argparse.Namespace(**(parsed | given))


def scan(domains: str | Path | Iterable[str], out: str | Path, **options: Any) -> ScanResult:
    """Scan a file of domains (or an iterable of names, written to ``out``/input.txt) into ``out``.

    Resumes an interrupted scan in ``out`` like the command does; ``overwrite=True`` starts over.
    """
    out = Path(out)
    if not isinstance(domains, (str, Path)):
        out.mkdir(parents=True, exist_ok=True)
        source = out / "input.txt"
        source.write_text("".join(f"{d}\n" for d in domains), encoding="utf-8")
        domains = source
    args = _namespace(["scan", str(domains), "-o", str(out), "--no-progress"], options)
    if not Path(domains).is_file():
        raise CommandError(f"no such input file: {domains}", ExitCode.NO_INPUT)
    lock = OutputLock(out)  # acquired by scan_setup once the options are valid, as for the command
    try:
        setup = scan_setup(args, lock)
        if setup is None:
            raise CommandError(f"{out} already holds a complete scan; pass overwrite=True to scan again",
                               ExitCode.OK)
        config, exclude, trust, resume = setup
        job = Scan(config, domains, trust, exclude, resume=resume, vantage=args.vantage)
        stats = drive(job, not args.no_uvloop)
    finally:
        lock.release()
    return ScanResult(out, job.scan_id, job.completed, stats)


def check(target: str, **options: Any) -> CheckResult:
    """``smtp-tls-survey check TARGET``: the rows of the domain (or server), its MX and probes."""
    return check_result(_namespace(["check", target], options))
