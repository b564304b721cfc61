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
from types import MappingProxyType
from typing import Any

__all__ = [
    "ENUMERATION_MODES",
    "ENUM_RETRY_DELAYS",
    "FAMILY_MODES",
    "RESULT_NEUTRAL",
    "ConfigError",
    "DnsConfig",
    "HealthConfig",
    "Option",
    "OutputConfig",
    "ProbeConfig",
    "SafetyConfig",
    "ScanConfig",
    "check_ehlo_name",
    "is_fqdn",
    "option",
    "parse_host_port",
    "result_settings",
    "settings_differences",
]


# Field metadata of settings that cannot change what a scan measures: speed, memory and bookkeeping
# knobs. They may differ between the attempts of one scan (resume) and between scans that are compared
# (report --baseline, series). Every other field is "result-relevant": one source of truth for both.
RESULT_NEUTRAL: Mapping[str, Any] = {"result_neutral": True}


@dataclass(frozen=True, slots=True)
class Option:
    """How a person sets a field: its command-line flag and help line (``scanner.options`` adds it).

    The type, default and action come from the field itself. ``follows`` names another field of the
    same section whose option also sets this one (``--concurrency`` sets ``max_connections`` and
    ``workers``); such a field has no flag of its own.
    """

    flag: str
    help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    follows: str | None = None


def option(flag: str = "", help: str = "", *, metavar: str | None = None,
           choices: tuple[str, ...] | None = None, follows: str | None = None,
           neutral: bool = False) -> Mapping[str, Any]:
    """Field metadata: the field's ``Option``, and ``RESULT_NEUTRAL`` when ``neutral``."""
    meta: dict[str, Any] = {"option": Option(flag, help, metavar, choices, follows)}
    if neutral:
        meta.update(RESULT_NEUTRAL)
    return MappingProxyType(meta)


ENUMERATION_MODES = ("off", "posture", "full")
# Back-off before re-asking an enumeration question whose session was untestable (scanner.tls.probe).
ENUM_RETRY_DELAYS: tuple[float, ...] = (2.0, 8.0)
FAMILY_MODES = ("auto", "on", "off")


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

    servers: tuple[str, ...] = field(default=(), metadata=option(
        "--resolver", "DNS resolver to query (repeatable) (default: the system's)", metavar="IP[:PORT]"))
    # each query is sent ``tries`` times in all, each try waiting ``timeout``
    timeout: float = field(default=3.0, metadata=option("--dns-timeout", "seconds per DNS try"))
    tries: int = field(default=2, metadata=option("--dns-tries", "tries per DNS query"))
    # a token bucket
    qps: float = field(default=2000.0, metadata=option("--dns-qps", "DNS queries per second, global", neutral=True))
    concurrency: int = field(default=500, metadata=option("--dns-concurrency", "DNS queries in flight", neutral=True))
    workers: int = field(default=256, metadata=option("--dns-workers", "domains resolved at once", neutral=True))
    # Bounds on what one domain can make us do: MX hosts resolved (in preference order) and addresses
    # probed (across those hosts, in order). A domain publishing 100 MX hosts of 100 addresses each
    # would otherwise cost 10,000 probes. Senders stop far earlier (Postfix tries at most 5 addresses,
    # smtp_mx_address_limit; Exim 5, hosts_max_try); these defaults still cover every host a large
    # provider publishes (5 MX hosts with A and AAAA is 10 addresses). The row says when a cap applied.
    max_mx_hosts: int = field(default=10, metadata=option(
        "--max-mx-hosts", "MX hosts resolved per domain, in preference order (the row says when more exist)"))
    max_mx_addresses: int = field(default=20, metadata=option(
        "--max-mx-addresses", "addresses probed per domain, across its MX hosts in order (the row says when capped)"))

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

    port: int = field(default=25, metadata=option("--port", "SMTP port to probe"))
    ehlo_name: str = field(default_factory=default_ehlo_name, metadata=option(
        "--ehlo-name", "fully qualified name sent in EHLO (default: this machine's FQDN; required when that is "
                       "localhost or a single label and the targets are public)"))
    connect_timeout: float = field(default=10.0, metadata=option("--connect-timeout",
                                                                 "seconds to wait for TCP connect"))
    # RFC 5321 §4.5.3.2 lets a server take 5 minutes for the greeting; greylisting MTAs (postscreen,
    # greet_pause) delay 10–30 s, so the default waits longer than that before calling it a tarpit.
    banner_timeout: float = field(default=30.0, metadata=option(
        "--banner-timeout", "seconds to wait for the 220 greeting (greylisting MTAs pause 10-30 s)"))
    command_timeout: float = field(default=15.0, metadata=option(
        "--command-timeout", "seconds to wait for the reply to EHLO, STARTTLS, QUIT"))
    tls_timeout: float = field(default=15.0, metadata=option("--tls-timeout", "seconds for the TLS handshake"))
    # hard cap on one probe, all phases and its enumeration sessions included
    probe_deadline: float = field(default=90.0, metadata=option(
        "--probe-deadline", "seconds from the start of an address's STARTTLS probe to the end of its enumeration "
                            "and re-asks; the no-SNI handshake and further names' SNI handshakes are bounded by "
                            "their own timeouts instead"))
    max_connections: int = field(default=200, metadata=option(
        "--concurrency", "probe connections in flight, global", neutral=True))
    per_ip_concurrency: int = field(default=1, metadata=option("--per-ip-concurrency",
                                                               "connections at once per address"))
    per_ip_interval: float = field(default=1.0, metadata=option(
        "--per-ip-interval", "minimum seconds between connections to one address"))
    per_prefix_concurrency: int = field(default=8, metadata=option(
        "--per-prefix-concurrency", "connections at once into one /24 (IPv4) or /48 (IPv6)"))
    # Back-off before retrying an address that throttled us (421, greeting timeout, early drop);
    # one retry per delay, then the row records the throttling.
    throttle_retry_delays: tuple[float, ...] = field(default=(10.0, 60.0), metadata=option(
        "--throttle-retry", "back-off delays before retrying a throttled address (none: no retry)",
        metavar="SECONDS"))
    # Back-off before re-asking an enumeration question whose session was untestable (reset, dropped,
    # timed out: often a rate limit), one retry per delay (scanner.tls.probe.drive_plan). Result-relevant:
    # fewer retries leave more questions untestable (enum_complete false).
    enum_retry_delays: tuple[float, ...] = field(default=ENUM_RETRY_DELAYS, metadata=option(
        "--enum-retry", "back-off delays before re-asking an enumeration question whose session failed "
                        "(none: no retry)", metavar="SECONDS"))
    # probe worker tasks: one per connection (more is pointless), so the same option sets both
    workers: int = field(default=200, metadata=option(follows="max_connections", neutral=True))
    # Protocol/cipher enumeration after a successful STARTTLS: "off", "posture" (7-12 sessions per
    # address) or "full" (every accepted suite per version and the server's order).
    enumeration: str = field(default="posture", metadata=option(
        "--enumerate", "protocol/cipher enumeration per address: posture (7-12 sessions), full, or off",
        choices=ENUMERATION_MODES))
    # With posture mode, this share of addresses (chosen by a hash of the address, so the choice is the
    # same in every attempt of a scan) gets full enumeration: a sample for suite-level statistics.
    full_sample: float = field(default=0.0, metadata=option(
        "--full-sample", "with posture mode, enumerate this share of addresses in full mode (e.g. 0.01)",
        metavar="FRACTION"))
    # Finished probe summaries kept in memory (a few KiB each, the chain included); older ones are
    # spilled to disk (scanner.probe_cache), so memory does not grow with the number of addresses.
    summaries_in_memory: int = field(default=25_000, metadata=option(
        "--summaries-in-memory", "finished probe summaries kept in memory; older ones are spilled to disk",
        neutral=True))
    # Certificates chosen by SNI (scanner.sni): one no-SNI session per TLS address, and one handshake-only
    # session per further MX host name of the address, at most ``sni_sessions_per_address`` of them (a
    # tenth kept for names asked again, scanner.sni.decide_name); after
    # ``sni_same_run`` names in a row got the very certificate presented without SNI, the server is taken
    # to ignore SNI and no more sessions are opened for it.
    sni_checks: bool = field(default=True, metadata=option(
        "--no-sni-checks", "judge every MX name of an address on the probe's certificate (no SNI sessions)"))
    sni_sessions_per_address: int = field(default=50, metadata=option(
        "--sni-cap", "extra handshake-only SNI sessions per address, a tenth of them kept for names a second domain "
                     "asks for (names without one: not_checked)", metavar="N"))
    sni_same_run: int = field(default=3, metadata=option(
        "--sni-same-run", "after N further names in a row got the certificate presented without SNI, take the "
                          "server to ignore SNI and open no more SNI sessions to it", metavar="N"))
    # Contradictions between sessions of one address (scanner.consistency): re-ask this many times.
    recheck_limit: int = field(default=2, metadata=option(
        "--recheck-limit", "re-asks of a question two sessions of one address answered differently", metavar="N"))
    # Address families to probe: "auto" (a route lookup at start, scanner.net.families), "on", "off".
    ipv4: str = field(default="auto", metadata=option(
        "--ipv4", "probe ipv4 addresses: auto (if this host has a route; a lookup, no packet), on or off",
        choices=FAMILY_MODES))
    ipv6: str = field(default="auto", metadata=option(
        "--ipv6", "probe ipv6 addresses: auto (if this host has a route; a lookup, no packet), on or off",
        choices=FAMILY_MODES))

    def __post_init__(self) -> None:
        for family in ("ipv4", "ipv6"):
            if getattr(self, family) not in FAMILY_MODES:
                raise _bad(f"probe.{family}", f"must be auto, on or off (got {getattr(self, family)!r})")
        if self.ipv4 == self.ipv6 == "off":
            raise _bad("probe.ipv6", "off together with --ipv4 off leaves nothing to probe")
        if not 0 < self.port < 65536:
            raise _bad("probe.port", f"must be between 1 and 65535 (got {self.port})")
        for name in ("connect_timeout", "banner_timeout", "command_timeout", "tls_timeout", "probe_deadline"):
            _positive(f"probe.{name}", getattr(self, name))
        for name in ("throttle_retry_delays", "enum_retry_delays"):
            for delay in getattr(self, name):
                _non_negative(f"probe.{name}", delay)
        _non_negative("probe.per_ip_interval", self.per_ip_interval)
        _count("probe.max_connections", self.max_connections, MAX_CONNECTIONS)
        _count("probe.workers", self.workers, MAX_WORKERS)
        _count("probe.per_ip_concurrency", self.per_ip_concurrency, MAX_CONNECTIONS)
        _count("probe.per_prefix_concurrency", self.per_prefix_concurrency, MAX_CONNECTIONS)
        _count("probe.summaries_in_memory", self.summaries_in_memory, 10_000_000)
        if not 0.0 <= self.full_sample <= 1.0:  # also false for NaN
            raise _bad("probe.full_sample", f"must be between 0 and 1 (got {self.full_sample})")
        if self.enumeration not in ENUMERATION_MODES:
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

    allow_private: bool = field(default=False, metadata=option(
        "--allow-private", "probe loopback/private/reserved addresses (labs and tests only)"))
    exclude_file: Path | None = field(default=None, metadata=option(
        "--exclude", "opt-out file: CIDRs and domain suffixes, one per line (default: none)"))


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """When the scan concludes that *our* side is broken and stops (README: "When our side is broken").

    Over the last ``*_window`` outcomes, a share of failures at or above ``*_threshold`` stops intake,
    commits and exits with ExitCode.UNAVAILABLE; the same command resumes. DNS failures are timeouts,
    SERVFAIL, REFUSED and other resolver errors per query; probe failures are ``no_route`` and
    ``network_error`` per probe. The defaults are far above what the Internet's own mess produces
    (a few percent), so only a dead resolver or a dead uplink trips them. Speed/bookkeeping: neutral.
    """

    dns_window: int = field(default=1000, metadata=option(
        "--dns-failure-window", "DNS queries in the sliding window", metavar="QUERIES", neutral=True))
    dns_threshold: float = field(default=0.9, metadata=option(
        "--dns-failure-threshold", "share of timeouts, SERVFAIL, REFUSED and errors in the window that stops the "
                                   "scan", metavar="SHARE", neutral=True))
    probe_window: int = field(default=500, metadata=option(
        "--probe-failure-window", "probes in the sliding window", metavar="PROBES", neutral=True))
    probe_threshold: float = field(default=0.9, metadata=option(
        "--probe-failure-threshold", "share of no_route and network_error probes in the window that stops the "
                                     "scan", metavar="SHARE", neutral=True))

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
    rows_per_file: int = field(default=200_000, metadata=option(
        "--rows-per-file", "rows buffered before a segment (one part file per table) is committed", neutral=True))
    # rows per Parquet row group, at most (never more than a segment holds: see ``row_group``)
    row_group_size: int = field(default=20_000, metadata=RESULT_NEUTRAL)
    # seconds: buffered rows are written at least this often
    flush_interval: float = field(default=30.0, metadata=option(
        "--commit-interval", "seconds between commits: at most this much work is redone after a crash", neutral=True))

    def __post_init__(self) -> None:
        _count("output.rows_per_file", self.rows_per_file, 100_000_000)
        _count("output.row_group_size", self.row_group_size, 100_000_000)
        _positive("output.flush_interval", self.flush_interval)

    @property
    def row_group(self) -> int:
        """The row group size used: a smaller segment than ``row_group_size`` is one row group."""
        return min(self.row_group_size, self.rows_per_file)


@dataclass(frozen=True, slots=True)
class ScanConfig:
    output: OutputConfig
    dns: DnsConfig = field(default_factory=DnsConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    ca_file: Path | None = field(default=None, metadata=option(
        "--ca-file", "PEM trust store replacing certifi's bundle (default: certifi)"))
    # domains resolved and waiting for their probes
    max_domains_in_flight: int = field(default=5000, metadata=option(
        "--max-in-flight", "domains waiting for probes at once", neutral=True))
    # MTA-STS, TLS-RPT and TLSA per domain (after its probes)
    policy_checks: bool = field(default=True, metadata=option(
        "--no-policy", "skip MTA-STS, TLS-RPT and DANE checks"))
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
