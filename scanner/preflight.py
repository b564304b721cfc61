"""Checks before a scan reads its input: the resolver answers, the output is writable, a route exists.

A scan that cannot resolve or cannot write would otherwise run to its end and record every domain as
a DNS failure (or lose every row): a "complete" dataset that measured nothing. Each check fails with a
message naming what is wrong and the exit code to end with (scanner.exit_codes); nothing has been
written to the dataset yet, so the same command, once the problem is fixed, starts (or resumes) the scan.
The trust store is checked where it is loaded (``scanner.pipeline.load_trust_store``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path

from scanner.config import DnsConfig, ProbeConfig
from scanner.dns.resolver import DnsResolver
from scanner.exit_codes import ExitCode
from scanner.net.families import Reachability, detect_families, has_route
from scanner.status import DnsOutcome

__all__ = ["PreflightError", "check_output_writable", "check_resolvers", "check_routes", "resolver_label"]

# A reply of any kind proves a DNS server listens; these outcomes mean nothing answered at all.
_SILENT = frozenset({DnsOutcome.TIMEOUT, DnsOutcome.ERROR})


class PreflightError(Exception):
    """A pre-scan check failed; ``exit_code`` is what the command ends with."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolver_label(dns: DnsConfig) -> str:
    """The resolvers as a person names them in a message."""
    if not dns.servers:
        return "the system resolver (/etc/resolv.conf)"
    return ("resolver " if len(dns.servers) == 1 else "resolvers ") + ", ".join(dns.servers)


async def _check_one(dns: DnsConfig, server: str | None) -> str | None:
    """None when ``server`` (None: the system's) answers a query, else what went wrong."""
    one = DnsConfig(servers=(server,) if server else (), timeout=dns.timeout, tries=dns.tries)
    resolver = DnsResolver(one)
    try:
        result = await resolver.answers()
    finally:
        await resolver.close()
    if result.outcome in _SILENT:
        return f"{resolver_label(one)} did not answer ({result.outcome.value}: {result.detail})"
    return None


async def check_resolvers(dns: DnsConfig) -> None:
    """Every configured resolver answers one query (each on its own: a client that moves on to the next
    server would hide a dead one)."""
    servers: tuple[str | None, ...] = dns.servers or (None,)
    problems = [p for p in await asyncio.gather(*(_check_one(dns, s) for s in servers)) if p]
    if problems:
        raise PreflightError(
            "; ".join(problems) + ". Nothing was scanned: every domain would have failed DNS. Fix the resolver "
            "(--resolver), then run the same command again.", ExitCode.UNAVAILABLE)


def check_output_writable(out_dir: Path, state_dir: str) -> None:
    """Create, write, fsync and delete a file where the scan keeps its state (the same filesystem as the data)."""
    probe = out_dir / state_dir / f".preflight-{os.getpid()}"
    try:
        with probe.open("wb") as fh:
            fh.write(b"preflight\n")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        raise PreflightError(f"the output directory {out_dir} is not writable: {exc}", ExitCode.CANT_CREATE) from exc


def check_routes(probe: ProbeConfig, lab: bool,
                 route: Callable[[socket.AddressFamily], tuple[bool, str]] = has_route) -> Reachability:
    """At least one address family this scan may probe has a route (a route lookup, no packet).

    A host with no route at all would mark every address ``skipped_family_unreachable`` and finish a
    "complete" scan that measured nothing: that is our side being broken (exit 69, resumable), not
    the Internet's state. A family forced on (``--ipv4 on``) is believed, and so is a lab scan
    (``lab``: ``--allow-private``, whose targets may need no route): the probe window then watches.
    """
    families = detect_families(probe.ipv4, probe.ipv6, route, lab)
    if not families.families:
        raise PreflightError(
            f"this host's network found no route for IPv4 or IPv6 ({families.detail}). Nothing was scanned: fix "
            "the network (or force a family with --ipv4 on / --ipv6 on), then run the same command again.",
            ExitCode.UNAVAILABLE)
    return families

