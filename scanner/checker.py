"""``smtp-tls-survey check TARGET``: one domain through the same engine as a scan, shown to a person.

(Named ``checker`` so that ``scanner.check`` stays the API function, never shadowed by a submodule.)

The domain is scanned exactly like a line of a survey (``scanner.pipeline.Scan``, posture enumeration,
policies, grading), its rows collected in memory (``scanner.output.sink.MemorySink``) in the dataset's
types; this module only takes those rows and lays them out:
each MX in priority order with its addresses, STARTTLS, versions, cipher and certificate verdicts,
grade and recommendations, then the domain's grade, policies and forced-TLS verdict.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scanner.config import ConfigError, parse_host_port
from scanner.exit_codes import ExitCode
from scanner.grading import RECOMMENDATIONS, Grade
from scanner.input import normalize_domain
from scanner.logs import CONTROLS
from scanner.logs import inert as clean  # network text for the terminal (rendering also disables markup)
from scanner.status import DomainStatus, ProbeStatus, StarttlsVerdict

__all__ = ["CheckResult", "CheckTarget", "Tables", "check_exit_code", "check_rows", "clean", "parse_target",
           "render_check", "to_json"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The rows of a one-domain scan (as in the dataset), with typed views of the main answers."""

    domain: dict[str, Any]
    mx: list[dict[str, Any]]  # MX links in priority order
    probes: dict[str, dict[str, Any]]  # probe_id → probe row

    @property
    def status(self) -> DomainStatus:
        return DomainStatus(self.domain["status"])

    @property
    def grade(self) -> Grade | None:
        return Grade(self.domain["grade"]) if self.domain["grade"] else None

    @property
    def starttls(self) -> StarttlsVerdict:
        return StarttlsVerdict(self.domain["starttls"])

    @property
    def recommendations(self) -> dict[str, str]:
        """Recommendation code → text (schemas/grading.md §6)."""
        return {code: RECOMMENDATIONS.get(code, code) for code in self.domain["recommendations"]}


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """What ``check`` was asked: a domain (its MX, policies, grade) or one server given directly.

    For a server, ``name`` is the name sent as SNI and matched against the certificate (a host name
    or ``--sni``), ``address`` the IP address when one was given (else ``name`` is resolved) and
    ``port`` the port when one was given.
    """

    name: str
    server: bool = False
    address: str | None = None
    port: int | None = None


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _name(text: str, what: str) -> str:
    try:
        return normalize_domain(text)
    except ValueError as exc:
        raise ValueError(f"{what} {clean(text)[:80]!r} is not a valid domain name: {exc}") from exc


def parse_target(text: str, sni: str | None = None) -> CheckTarget:
    """``DOMAIN``, ``HOST:PORT``, ``IP``, ``IP:PORT`` or ``[IPv6]:PORT``; ``ValueError`` says why not."""
    if CONTROLS.search(text):
        raise ValueError(f"target {clean(text)[:80]!r} contains control characters (a newline?)")
    sni_name = _name(sni, "--sni") if sni is not None else None
    bracketed, address = text.startswith("["), _ip(text)
    if not bracketed and address is None and text.count(":") != 1:
        if sni_name is not None:
            raise ValueError("--sni applies to a server target (HOST:PORT or IP), not to a domain")
        return CheckTarget(_name(text, "domain"))
    if address is not None:
        return CheckTarget(sni_name or address, server=True, address=address)
    try:
        host, port = parse_host_port(text, 0)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    address = _ip(host)
    if bracketed and (address is None or ":" not in address):
        raise ValueError(f"{clean(text)!r}: brackets hold an IPv6 address")
    name = sni_name or address or _name(host, "host")
    return CheckTarget(name, server=True, address=address, port=port or None)


# Domain statuses meaning "there is no mail host to test" (exit CHECK_NO_MAIL_HOST).
_NO_MAIL_HOST = frozenset({DomainStatus.DNS_NXDOMAIN, DomainStatus.DNS_NO_MAIL_HOST, DomainStatus.NULL_MX,
                           DomainStatus.MX_NO_ADDRESS})
# The resolver failed: nothing is known about the domain (exit UNAVAILABLE; run again later).
_DNS_FAILED = frozenset({DomainStatus.DNS_SERVFAIL, DomainStatus.DNS_TIMEOUT, DomainStatus.DNS_REFUSED,
                         DomainStatus.DNS_ERROR})


def check_exit_code(result: CheckResult, fail_under: Grade | None = None) -> ExitCode:
    """The documented exit code of ``check`` (README "Exit codes"), worst condition first."""
    status = DomainStatus(result.domain["status"])
    if status is DomainStatus.INTERNAL_ERROR:
        return ExitCode.FAILED
    if status is DomainStatus.INVALID_INPUT:
        return ExitCode.USAGE
    if status in _NO_MAIL_HOST:
        return ExitCode.CHECK_NO_MAIL_HOST
    if status in _DNS_FAILED:
        return ExitCode.UNAVAILABLE
    if not any(ProbeStatus(p["status"]).is_definitive for p in result.probes.values()):
        return ExitCode.CHECK_UNTESTABLE  # also an excluded domain: nothing was tested
    grade = result.domain["grade"]
    if fail_under is not None and (grade is None or Grade(grade).rank < fail_under.rank):
        return ExitCode.CHECK_GRADE_BELOW
    return ExitCode.OK


class Tables(Protocol):
    """Where the rows of a one-domain scan are: the in-memory sink of ``check``, or a dataset (``load``)."""

    def table(self, name: str) -> pa.Table: ...


def check_rows(tables: Tables) -> CheckResult:
    """The rows of a one-domain scan, as a reader of the dataset sees them."""
    domains = tables.table("domains").to_pylist()
    if len(domains) != 1:
        raise ValueError(f"expected one domain row, found {len(domains)}")
    mx = sorted(tables.table("mx").to_pylist(), key=lambda r: (r["mx_rank"], r["address"] or ""))
    probes = {r["probe_id"]: r for r in tables.table("probes").to_pylist()}
    return CheckResult(domains[0], mx, probes)


def _yes_no(value: object, yes: str = "yes", no: str = "no", unknown: str = "unknown") -> str:
    return unknown if value is None else (yes if value else no)


def _cert_text(probe: dict[str, Any], link: dict[str, Any]) -> str:
    source = link.get("cert_source")
    if source in ("not_checked", "session_failed"):
        return f"not checked with this name as SNI ({source})"
    if link.get("cert_sha256") and link["cert_sha256"] != probe["cert_sha256"]:
        # Another certificate than the probe's: the one presented for this name (SNI) or the worst of
        # disagreeing backends; its details are in the sessions table.
        return (f"{source}: leaf {link['cert_sha256'][:16]}..., valid {_yes_no(link['cert_valid'])}, "
                f"name {link['cert_name_match']}")
    if probe["cert_trust"] is None:
        return "no certificate"
    days = probe["cert_days_to_expiry"]
    expiry = f"expired {-days} days ago" if days is not None and days < 0 else f"expires in {days} days"
    name = {"san": "name ok", "common_name": "name ok (CN only)", "mismatch": "NAME MISMATCH"}.get(
        link["cert_name_match"] or "", "name not checked")
    return f"{probe['cert_trust']}, {expiry}, {name}; {probe['cert_subject_cn'] or '-'} by {probe['cert_issuer_cn']}"


def _tls_text(probe: dict[str, Any]) -> str:
    if probe["status"] != "starttls_ok":
        detail = f" ({probe['failure_class']}: {probe['failure_detail']})" if probe["failure_class"] else ""
        return f"{probe['status']}{detail}"[:160]
    return f"STARTTLS ok, {probe['tls_version']} {probe['tls_cipher']}"


def _enum_text(probe: dict[str, Any]) -> str:
    if probe["enum_mode"] is None:
        return "-"
    weak = ", ".join(probe["weak_classes"] or []) or "none"
    return (f"versions {' '.join(probe['versions_accepted'] or []) or 'none'}; weak suites: {weak}; "
            f"NIST r1 {_yes_no(probe['nist_r1'])}, r2 {_yes_no(probe['nist_r2'])}; "
            f"server order {_yes_no(probe['server_order'])}; {probe['enum_sessions']} sessions")


def _kx_text(probe: dict[str, Any]) -> str:
    """Key exchange and hygiene (schemas/tables.md, probe columns kx_groups ... fallback_scsv)."""
    if probe["enum_mode"] is None:
        return "-"
    groups = " ".join(probe["kx_groups"] or []) or "none found"
    if probe["kx_groups_complete"] is False:
        groups += " (partial)"
    if probe["dh_bits"] is not None:
        dh = f"DH {probe['dh_bits']} bits" + (f" ({probe['dh_group']})" if probe["dh_group"] else "")
    else:
        dh = {False: "no DHE", None: "DH unknown"}.get(probe["dhe_accepted"], "DH unknown")
    flags = [(name, probe[column]) for name, column in (
        ("secure renegotiation", "secure_renegotiation"), ("compression", "tls_compression"),
        ("EMS", "extended_master_secret"), ("ETM", "encrypt_then_mac"), ("heartbeat", "heartbeat"),
        ("OCSP stapling", "ocsp_stapling"), ("fallback SCSV", "fallback_scsv"))]
    shown = ", ".join(f"{name} {_yes_no(value)}" for name, value in flags if value is not None)
    return f"groups {groups} (preferred {probe['kx_preferred_group'] or '-'}); {dh}" + (f"; {shown}" if shown else "")


def _link_fields(link: dict[str, Any], probe: dict[str, Any] | None) -> list[tuple[str, str]]:
    if probe is None:
        return [("address", link["address"] or f"{link['host_status']}: {link['host_detail']}")]
    rules = ", ".join(link["grade_rules"])
    grade = f"{link['grade'] or '-'}" + (f" ({rules})" if rules else "")
    fields = [("TLS", _tls_text(probe)), ("certificate", _cert_text(probe, link)),
              ("enumeration", _enum_text(probe)), ("key exchange", _kx_text(probe)),
              ("DANE", link["dane_verdict"] or "-"), ("grade", grade)]
    if probe.get("inconsistent_facts"):
        fields.append(("inconsistent", "sessions disagreed on " + ", ".join(probe["inconsistent_facts"])))
    return fields


def _mx_table(result: CheckResult) -> Table:
    """One block per MX address, label and value side by side: words wrap whole in 80 columns."""
    table = Table(show_header=False, box=box.SIMPLE, title="MX hosts in priority order", padding=(0, 1))
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")  # fold only splits a single word longer than the column
    for link in result.mx:
        probe = result.probes.get(link["probe_id"] or "")
        where = f" {link['address']}" if link["address"] else ""
        table.add_row(Text(f"MX {link['mx_preference']}"), Text(clean(f"{link['mx_host']}{where}"), style="bold"))
        for label, value in _link_fields(link, probe):
            table.add_row(Text(label), Text(clean(value)))
        table.add_section()
    return table


def _line(console: Console, text: str, style: str = "") -> None:
    console.print(Text(clean(text), style=style), markup=False, highlight=False)


def render_check(result: CheckResult, console: Console) -> None:
    """The result for a person. Everything from the network goes through ``clean`` and no markup."""
    d = result.domain
    grade = d["grade"] or "not graded"
    families = (f" (IPv4: {d['starttls_ipv4']}, IPv6: {d['starttls_ipv6']})"
                if d["not_covered_count"] or d["starttls_ipv6"] != "not_applicable" else "")
    _line(console, f"{d['domain']}: grade {grade}  ·  STARTTLS on MX: {d['starttls']}{families}  ·  "
                   f"forced TLS: {_yes_no(d['forced_tls_safe'], 'safe', 'NOT safe')}  ·  status {d['status']}"
                   + (f" ({d['status_detail']})" if d["status_detail"] else ""), "bold")
    if result.mx:
        console.print(_mx_table(result))
    if d["mta_sts_txt"] is not None:
        _line(console,
              f"MTA-STS: {d['mta_sts_mode'] or 'no valid policy'}"
              + (f" (the fetched policy says {d['mta_sts_fetched_mode']}, but no sender applies it)"
                 if d["mta_sts_fetched_mode"] and not d["mta_sts_active"] else "")
              + (f" (id {d['mta_sts_id']}, max_age {d['mta_sts_max_age']})" if d["mta_sts_active"] else "")
              + (f"; MX not covered: {', '.join(d['mta_sts_unmatched_mx'])}" if d["mta_sts_unmatched_mx"] else "")
              + (f"; MX failing the policy: {', '.join(d['mta_sts_mx_fail'])}" if d["mta_sts_mx_fail"] else "")
              + (f"; errors: {', '.join(d['mta_sts_errors'])}" if d["mta_sts_errors"] else ""))
        _line(console, f"TLS-RPT: {d['tlsrpt_status']}  ·  DANE valid: {_yes_no(d['dane_valid'])}")
    if d["dane_delivery"] is not None:
        _line(console, f"Would a DANE sender deliver: {d['dane_delivery']}"
                       + (f" ({'; '.join(d['dane_delivery_reasons'])})" if d["dane_delivery_reasons"] else ""))
    if d["forced_tls_reasons"]:
        _line(console, "Forced TLS: " + "; ".join(d["forced_tls_reasons"]))
    if d["recommendations"]:
        _line(console, "Recommendations:", "bold")
        for code in d["recommendations"]:
            _line(console, f"- {RECOMMENDATIONS.get(code, code)} [{code}]")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def to_json(result: CheckResult) -> str:
    """Machine form: the same rows as the dataset (certificates base64 DER)."""
    return json.dumps(_jsonable({"domain": result.domain, "mx": result.mx, "probes": list(result.probes.values())}),
                      indent=2)


def temporary_input(domain: str) -> tuple[tempfile.TemporaryDirectory[str], Path, Path]:
    """A temporary directory holding a one-line input file and the dataset directory."""
    workdir = tempfile.TemporaryDirectory(prefix="smtp-tls-check-")
    base = Path(workdir.name)
    (base / "input.txt").write_text(domain + "\n", encoding="utf-8")
    return workdir, base / "input.txt", base / "out"
