"""The one configuration object of a scan, built once (by the CLI or a test) and passed down.

Every knob is a field here, never a module global or a free dict. Validation happens in
``__post_init__`` so that a bad value fails at the edge with a clear message, before any packet.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RESULT_NEUTRAL",
    "ConfigError",
    "DnsConfig",
    "HealthConfig",
    "OutputConfig",
    "ProbeConfig",
    "SafetyConfig",
    "ScanConfig",
    "check_ehlo_name",
    "is_fqdn",
    "parse_host_port",
    "result_settings",
    "settings_differences",
]


# Field metadata of settings that cannot change what a scan measures: speed, memory and bookkeeping
# knobs. They may differ between the attempts of one scan (resume) and between scans that are compared
# (report --baseline, series). Every other field is "result-relevant": one source of truth for both.
RESULT_NEUTRAL: Mapping[str, Any] = {"result_neutral": True}


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and why.

    ``setting`` is the field's dotted path (``probe.max_connections``) when one field is at fault, so
    that a front end can name the option its user typed (the CLI maps it to ``--concurrency``);
    ``reason`` is the message without the name.
    """

    def __init__(self, message: str, setting: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.reason = reason or message


# Upper bounds on sizes that allocate per unit (tasks, queue slots, sockets): far above any useful
# value, low enough that a typo cannot exhaust memory before the first packet (a million probe
# workers cost gigabytes). 65,535 is also about the most sockets one process can usefully hold.
MAX_CONNECTIONS = 65_535
MAX_WORKERS = 65_535
MAX_DOMAINS_IN_FLIGHT = 1_000_000


def _bad(setting: str, reason: str) -> ConfigError:
    return ConfigError(f"{setting} {reason}", setting, reason)


def _finite(setting: str, value: float) -> None:
    """Timeouts and intervals: a NaN compares false with everything and slips through every bound."""
    if not math.isfinite(value):
        raise _bad(setting, f"must be a finite number (got {value})")


def _positive(setting: str, value: float) -> None:
    _finite(setting, value)
    if value <= 0:
        raise _bad(setting, f"must be > 0 (got {value})")


def _non_negative(setting: str, value: float) -> None:
    _finite(setting, value)
    if value < 0:
        raise _bad(setting, f"must be >= 0 (got {value})")


def _count(setting: str, value: int, upper: int) -> None:
    if not 1 <= value <= upper:
        raise _bad(setting, f"must be between 1 and {upper:,} (got {value:,})")


def check_ehlo_name(name: str) -> None:
    """RFC 5321 §4.1.1.1: EHLO takes a domain or an address literal, ASCII only (§2.3.5, §4.1.2).

    A name with spaces, controls or non-ASCII characters would be sent on the wire as is and make
    the greeting a malformed command (or inject a second one after a CR LF).
    """
    if not name or len(name) > 255:
        raise _bad("probe.ehlo_name", f"must be 1-255 characters (got {len(name)})")
    if any(not 33 <= ord(c) <= 126 for c in name):
        raise _bad("probe.ehlo_name", f"must be printable ASCII without spaces (got {name!r})")


def is_fqdn(name: str) -> bool:
    """A fully qualified name a server can look up: at least two labels and not localhost."""
    labels = name.rstrip(".").lower().split(".")
    return len(labels) >= 2 and all(labels) and labels[-1] not in ("localhost", "localdomain", "local")


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Parse ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ConfigError(f"unbalanced bracket in {text!r}")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # bare host name, IPv4 or IPv6 address without port
        host, port_text = text, ""
    if not host:
        raise ConfigError(f"no host in {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"bad port in {text!r}")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """DNS stage settings.

    ``servers`` are "ip[:port]" strings; empty means the system resolver configuration (resolv.conf).
    """

    servers: tuple[str, ...] = ()
    timeout: float = 3.0  # per try, seconds
    tries: int = 2  # each query is sent this many times in all, each try waiting ``timeout``
    qps: float = field(default=2000.0, metadata=RESULT_NEUTRAL)  # global queries-per-second limit (token bucket)
    concurrency: int = field(default=500, metadata=RESULT_NEUTRAL)  # queries in flight at once
    workers: int = field(default=256, metadata=RESULT_NEUTRAL)  # domains being resolved at once
    # Bounds on what one domain can make us do: MX hosts resolved (in preference order) and addresses
    # probed (across those hosts, in order). A domain publishing 100 MX hosts of 100 addresses each
    # would otherwise cost 10,000 probes. Senders stop far earlier (Postfix tries at most 5 addresses,
    # smtp_mx_address_limit; Exim 5, hosts_max_try); these defaults still cover every host a large
    # provider publishes (5 MX hosts with A and AAAA is 10 addresses). The row says when a cap applied.
    max_mx_hosts: int = 10
    max_mx_addresses: int = 20

    def __post_init__(self) -> None:
        _positive("dns.timeout", self.timeout)
        _positive("dns.qps", self.qps)
        _count("dns.tries", self.tries, 10)
        _count("dns.concurrency", self.concurrency, MAX_CONNECTIONS)
        _count("dns.workers", self.workers, MAX_WORKERS)
        _count("dns.max_mx_hosts", self.max_mx_hosts, MAX_WORKERS)
        _count("dns.max_mx_addresses", self.max_mx_addresses, MAX_WORKERS)
        for server in self.servers:
            try:
                host, _ = parse_host_port(server, 53)
                ipaddress.ip_address(host)
            except ValueError as exc:  # ConfigError is a ValueError too
                raise _bad("dns.servers", f"must be an IP address[:port], got {server!r}") from exc


def default_ehlo_name() -> str:
    """An honest EHLO name: this machine's fully qualified name (RFC 5321 §4.1.1.1)."""
    return socket.getfqdn() or "localhost"


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """SMTP/TLS probe settings and politeness limits."""

    port: int = 25
    ehlo_name: str = field(default_factory=default_ehlo_name)
    connect_timeout: float = 10.0
    # RFC 5321 §4.5.3.2 lets a server take 5 minutes for the greeting; greylisting MTAs (postscreen,
    # greet_pause) delay 10–30 s, so the default waits longer than that before calling it a tarpit.
    banner_timeout: float = 30.0
    command_timeout: float = 15.0  # EHLO, STARTTLS, QUIT replies
    tls_timeout: float = 15.0
    probe_deadline: float = 90.0  # hard cap on one probe, all phases and its enumeration sessions included
    max_connections: int = field(default=200, metadata=RESULT_NEUTRAL)  # probes in flight at once, globally
    per_ip_concurrency: int = 1
    per_ip_interval: float = 1.0  # minimum seconds between two connection starts to one address
    per_prefix_concurrency: int = 8  # connections at once into one /24 (IPv4) or /48 (IPv6)
    # Back-off before retrying an address that throttled us (421, greeting timeout, early drop);
    # one retry per delay, then the row records the throttling.
    throttle_retry_delays: tuple[float, ...] = (10.0, 60.0)
    workers: int = field(default=200, metadata=RESULT_NEUTRAL)  # probe worker tasks (>= max_connections is pointless)
    # Protocol/cipher enumeration after a successful STARTTLS: "off", "posture" (7-12 sessions per
    # address) or "full" (every accepted suite per version and the server's order).
    enumeration: str = "posture"
    # With posture mode, this share of addresses (chosen by a hash of the address, so the choice is the
    # same in every attempt of a scan) gets full enumeration: a sample for suite-level statistics.
    full_sample: float = 0.0
    # Finished probe summaries kept in memory (a few KiB each, the chain included); older ones are
    # spilled to disk (scanner.probe_cache), so memory does not grow with the number of addresses.
    summaries_in_memory: int = field(default=25_000, metadata=RESULT_NEUTRAL)
    # Certificates chosen by SNI (scanner.sni): one no-SNI session per TLS address, and one handshake-only
    # session per further MX host name of the address, at most ``sni_sessions_per_address`` of them; after
    # ``sni_same_run`` names in a row got the very certificate presented without SNI, the server is taken
    # to ignore SNI and no more sessions are opened for it.
    sni_checks: bool = True
    sni_sessions_per_address: int = 50
    sni_same_run: int = 3
    # Contradictions between sessions of one address (scanner.consistency): re-ask this many times.
    recheck_limit: int = 2
    # Address families to probe: "auto" (a route lookup at start, scanner.net.families), "on", "off".
    ipv4: str = "auto"
    ipv6: str = "auto"

    def __post_init__(self) -> None:
        for family in ("ipv4", "ipv6"):
            if getattr(self, family) not in ("auto", "on", "off"):
                raise _bad(f"probe.{family}", f"must be auto, on or off (got {getattr(self, family)!r})")
        if self.ipv4 == self.ipv6 == "off":
            raise _bad("probe.ipv6", "off together with --ipv4 off leaves nothing to probe")
        if not 0 < self.port < 65536:
            raise _bad("probe.port", f"must be between 1 and 65535 (got {self.port})")
        for name in ("connect_timeout", "banner_timeout", "command_timeout", "tls_timeout", "probe_deadline"):
            _positive(f"probe.{name}", getattr(self, name))
        for delay in self.throttle_retry_delays:
            _non_negative("probe.throttle_retry_delays", delay)
        _non_negative("probe.per_ip_interval", self.per_ip_interval)
        _count("probe.max_connections", self.max_connections, MAX_CONNECTIONS)
        _count("probe.workers", self.workers, MAX_WORKERS)
        _count("probe.per_ip_concurrency", self.per_ip_concurrency, MAX_CONNECTIONS)
        _count("probe.per_prefix_concurrency", self.per_prefix_concurrency, MAX_CONNECTIONS)
        _count("probe.summaries_in_memory", self.summaries_in_memory, 10_000_000)
        if not 0.0 <= self.full_sample <= 1.0:  # also false for NaN
            raise _bad("probe.full_sample", f"must be between 0 and 1 (got {self.full_sample})")
        if self.enumeration not in ("off", "posture", "full"):
            raise _bad("probe.enumeration", f"must be off, posture or full (got {self.enumeration!r})")
        if self.sni_sessions_per_address < 0:
            raise _bad("probe.sni_sessions_per_address", f"must be >= 0 (got {self.sni_sessions_per_address})")
        if self.recheck_limit < 0:
            raise _bad("probe.recheck_limit", f"must be >= 0 (got {self.recheck_limit})")
        _count("probe.sni_same_run", self.sni_same_run, MAX_WORKERS)
        check_ehlo_name(self.ehlo_name)


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    """What the scanner refuses to touch."""

    allow_private: bool = False  # probe loopback/private/reserved addresses (tests and labs only)
    exclude_file: Path | None = None  # opt-out list: CIDRs and domain suffixes, one per line


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """When the scan concludes that *our* side is broken and stops (README: "When our side is broken").

    Over the last ``*_window`` outcomes, a share of failures at or above ``*_threshold`` stops intake,
    commits and exits with ExitCode.UNAVAILABLE; the same command resumes. DNS failures are timeouts,
    SERVFAIL, REFUSED and other resolver errors per query; probe failures are ``no_route`` and
    ``network_error`` per probe. The defaults are far above what the Internet's own mess produces
    (a few percent), so only a dead resolver or a dead uplink trips them. Speed/bookkeeping: neutral.
    """

    dns_window: int = field(default=1000, metadata=RESULT_NEUTRAL)
    dns_threshold: float = field(default=0.9, metadata=RESULT_NEUTRAL)
    probe_window: int = field(default=500, metadata=RESULT_NEUTRAL)
    probe_threshold: float = field(default=0.9, metadata=RESULT_NEUTRAL)

    def __post_init__(self) -> None:
        _count("health.dns_window", self.dns_window, MAX_DOMAINS_IN_FLIGHT)
        _count("health.probe_window", self.probe_window, MAX_DOMAINS_IN_FLIGHT)
        for name in ("dns_threshold", "probe_threshold"):
            value = getattr(self, name)
            _finite(f"health.{name}", value)
            if not 0.0 < value <= 1.0:
                raise _bad(f"health.{name}", f"must be > 0 and <= 1 (got {value})")


@dataclass(frozen=True, slots=True)
class OutputConfig:
    out_dir: Path = field(metadata=RESULT_NEUTRAL)
    # rows (all tables) buffered before a segment is committed
    rows_per_file: int = field(default=200_000, metadata=RESULT_NEUTRAL)
    row_group_size: int = field(default=20_000, metadata=RESULT_NEUTRAL)
    # seconds: buffered rows are written at least this often
    flush_interval: float = field(default=30.0, metadata=RESULT_NEUTRAL)

    def __post_init__(self) -> None:
        _count("output.rows_per_file", self.rows_per_file, 100_000_000)
        if not 1 <= self.row_group_size <= self.rows_per_file:
            raise _bad("output.row_group_size", f"must be between 1 and rows_per_file (got {self.row_group_size})")
        _positive("output.flush_interval", self.flush_interval)


@dataclass(frozen=True, slots=True)
class ScanConfig:
    output: OutputConfig
    dns: DnsConfig = field(default_factory=DnsConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    ca_file: Path | None = None  # trust store replacing certifi's bundle
    # domains resolved and waiting for their probes
    max_domains_in_flight: int = field(default=5000, metadata=RESULT_NEUTRAL)
    policy_checks: bool = True  # MTA-STS, TLS-RPT and TLSA per domain (after its probes)
    # seconds in-flight domains may still finish after a stop request (Ctrl-C)
    stop_grace: float = field(default=20.0, metadata=RESULT_NEUTRAL)

    def __post_init__(self) -> None:
        _count("max_domains_in_flight", self.max_domains_in_flight, MAX_DOMAINS_IN_FLIGHT)
        _non_negative("stop_grace", self.stop_grace)


def result_settings(config: Any, prefix: str = "") -> dict[str, Any]:
    """The result-relevant settings of a config dataclass, flattened to ``section.field`` keys.

    Values are JSON-safe (paths and other objects as strings, tuples as lists), so the mapping can be
    stored in the run record and compared with one read back from an older scan.
    """
    out: dict[str, Any] = {}
    for f in fields(config):
        if f.metadata.get("result_neutral"):
            continue
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value) and not isinstance(value, type):
            out.update(result_settings(value, f"{key}."))
        elif isinstance(value, (tuple, list)):
            out[key] = [v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for v in value]
        else:
            out[key] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return out


def settings_differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two ``result_settings`` mappings, one line per setting."""
    lines = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key, "(absent)"), theirs.get(key, "(absent)")
        if a != b:
            lines.append(f"{key}: {b!r} -> {a!r}")
    return lines
