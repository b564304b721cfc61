"""``smtp-tls-survey check DOMAIN``: one domain through the same engine as a scan, shown to a person.

The domain is scanned exactly like a line of a survey (``scanner.pipeline.Scan``, posture enumeration,
policies, grading) into a temporary dataset; this module only reads those rows back and lays them out:
each MX in priority order with its addresses, STARTTLS, versions, cipher and certificate verdicts,
grade and recommendations, then the domain's grade, policies and forced-TLS verdict.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from scanner.dataset import load

__all__ = ["CheckResult", "check_rows", "render_check", "to_json"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    domain: dict[str, Any]
    mx: list[dict[str, Any]]  # MX links in priority order
    probes: dict[str, dict[str, Any]]  # probe_id → probe row


def check_rows(out_dir: Path) -> CheckResult:
    """The rows of a one-domain scan."""
    dataset = load(out_dir)
    domains = dataset.domains.to_pylist()
    if len(domains) != 1:
        raise ValueError(f"expected one domain row, found {len(domains)}")
    mx = sorted(dataset.mx.to_pylist(), key=lambda r: (r["mx_rank"], r["address"] or ""))
    probes = {r["probe_id"]: r for r in dataset.probes.to_pylist()}
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
            f"server order {_yes_no(probe['server_order'])}; {_kx_text(probe)}; {probe['enum_sessions']} sessions")


def _kx_text(probe: dict[str, Any]) -> str:
    """Key exchange and hygiene (schemas/tables.md, probe columns kx_groups ... fallback_scsv)."""
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


def render_check(result: CheckResult, console: Console) -> None:
    d = result.domain
    grade = d["grade"] or "not graded"
    families = (f" (IPv4: {d['starttls_ipv4']}, IPv6: {d['starttls_ipv6']})"
                if d["not_covered_count"] or d["starttls_ipv6"] != "not_applicable" else "")
    console.print(f"[bold]{d['domain']}[/bold]: grade [bold]{grade}[/bold]  ·  STARTTLS on MX: {d['starttls']}"
                  f"{families}  ·  "
                  f"forced TLS: {_yes_no(d['forced_tls_safe'], 'safe', 'NOT safe')}  ·  status {d['status']}"
                  + (f" ({d['status_detail']})" if d["status_detail"] else ""))
    table = Table(show_lines=True, title="MX hosts in priority order")
    for column in ("pref", "host / address", "TLS", "certificate", "enumeration", "DANE", "grade"):
        table.add_column(column, overflow="fold")
    for link in result.mx:
        probe = result.probes.get(link["probe_id"] or "")
        host = f"{link['mx_host']}\n{link['address'] or link['host_status'] + ': ' + link['host_detail']}"
        if probe is None:
            table.add_row(str(link["mx_preference"]), host, "-", "-", "-", "-", "-")
            continue
        rules = ", ".join(link["grade_rules"])
        if probe.get("inconsistent_facts"):
            rules += ("\n" if rules else "") + "inconsistent: " + ", ".join(probe["inconsistent_facts"])
        table.add_row(str(link["mx_preference"]), host, _tls_text(probe), _cert_text(probe, link),
                      _enum_text(probe), link["dane_verdict"] or "-",
                      f"{link['grade'] or '-'}" + (f"\n{rules}" if rules else ""))
    console.print(table)
    if d["mta_sts_txt"] is not None:
        console.print(
            f"MTA-STS: {d['mta_sts_mode'] or 'no valid policy'}"
            + (f" (the fetched policy says {d['mta_sts_fetched_mode']}, but no sender applies it)"
               if d["mta_sts_fetched_mode"] and not d["mta_sts_active"] else "")
            + (f" (id {d['mta_sts_id']}, max_age {d['mta_sts_max_age']})" if d["mta_sts_active"] else "")
            + (f"; MX not covered: {', '.join(d['mta_sts_unmatched_mx'])}" if d["mta_sts_unmatched_mx"] else "")
            + (f"; MX failing the policy: {', '.join(d['mta_sts_mx_fail'])}" if d["mta_sts_mx_fail"] else "")
            + (f"; errors: {', '.join(d['mta_sts_errors'])}" if d["mta_sts_errors"] else "")
        )
        console.print(f"TLS-RPT: {d['tlsrpt_status']}  ·  DANE valid: {_yes_no(d['dane_valid'])}")
    if d["dane_delivery"] is not None:
        console.print(f"Would a DANE sender deliver: {d['dane_delivery']}"
                      + (f" ({'; '.join(d['dane_delivery_reasons'])})" if d["dane_delivery_reasons"] else ""))
    if d["forced_tls_reasons"]:
        console.print("Forced TLS: " + "; ".join(d["forced_tls_reasons"]))
    if d["recommendations"]:
        console.print("Recommendations: " + ", ".join(d["recommendations"]))


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
