"""Pure assembly of a domain's rows from its DNS result and its addresses' probe summaries.

The domain verdict rule (``starttls_verdict``) is the heart of the headline figure, so it is kept
small and table-tested: an address that could not be tested never counts as "no STARTTLS".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from scanner.certs import NameMatch, match_hostname
from scanner.dns.lookup import DomainDns
from scanner.input import InputLine
from scanner.output.rows import DomainRow, MxRow
from scanner.probing import ProbeSummary, probe_id
from scanner.status import DomainStatus, MxSource, ProbeStatus, StarttlsVerdict

__all__ = ["Tally", "build_domain_rows", "input_problem_row", "starttls_verdict"]


@dataclass(frozen=True, slots=True)
class Tally:
    verdict: StarttlsVerdict
    answered: int  # addresses with a definitive answer
    ok: int  # addresses that completed STARTTLS + handshake
    untested: int

    @property
    def all_ok(self) -> bool | None:
        if self.verdict is StarttlsVerdict.ALL:
            return True
        if self.verdict in (StarttlsVerdict.SOME, StarttlsVerdict.NONE):
            return False
        return None

    @property
    def any_ok(self) -> bool | None:
        if self.ok:
            return True
        if self.verdict is StarttlsVerdict.NONE:
            return False
        return None


def starttls_verdict(statuses: Sequence[ProbeStatus]) -> Tally:
    """Aggregate per-address probe statuses into the domain's STARTTLS verdict.

    - no addresses → not_applicable;
    - every address answered → all / some / none by how many completed STARTTLS;
    - some could not be tested → "some" if one answered with TLS and another answered without
      (already decided), otherwise "incomplete": the untested ones could change the answer.
    """
    answered = [s for s in statuses if s.is_definitive]
    ok = sum(1 for s in answered if s.tls_ok)
    untested = len(statuses) - len(answered)
    if not statuses:
        verdict = StarttlsVerdict.NOT_APPLICABLE
    elif untested == 0 and ok == len(answered):
        verdict = StarttlsVerdict.ALL
    elif untested == 0 and ok == 0:
        verdict = StarttlsVerdict.NONE
    elif untested == 0 or 0 < ok < len(answered):
        verdict = StarttlsVerdict.SOME
    else:
        verdict = StarttlsVerdict.INCOMPLETE
    return Tally(verdict, len(answered), ok, untested)


def _mx_rows(
    scan_id: str, dns: DomainDns, summaries: Mapping[str, ProbeSummary], port: int
) -> tuple[list[MxRow], list[bool]]:
    rows: list[MxRow] = []
    cert_checks: list[bool] = []
    for rank, host in enumerate(dns.hosts):
        res = host.resolution
        common = {
            "scan_id": scan_id, "domain": dns.domain, "mx_host": host.name, "mx_preference": host.preference,
            "mx_rank": rank, "host_status": res.status, "host_detail": res.detail, "host_cnames": list(res.cnames),
        }
        if not res.addresses:
            rows.append(MxRow(**common, address=None, ip_version=None, port=None, probe_id=None,  # type: ignore[arg-type]
                              probe_status=None, cert_name_match=None, cert_valid=None))
            continue
        for address in res.addresses:
            summary = summaries[address]
            match: NameMatch | None = match_hostname(summary.leaf, host.name) if summary.leaf else None
            valid = None
            if summary.status is ProbeStatus.STARTTLS_OK:
                valid = summary.chain_trusted_and_current and match in (NameMatch.SAN, NameMatch.COMMON_NAME)
                cert_checks.append(valid)
            rows.append(MxRow(
                **common,  # type: ignore[arg-type]
                address=address, ip_version=ipaddress.ip_address(address).version, port=port,
                probe_id=probe_id(address, port), probe_status=summary.status,
                cert_name_match=match.value if match else None, cert_valid=valid,
            ))
    return rows, cert_checks


def build_domain_rows(
    scan_id: str,
    line: InputLine,
    dns: DomainDns,
    summaries: Mapping[str, ProbeSummary],
    port: int,
    finished_at: datetime,
) -> tuple[DomainRow, list[MxRow]]:
    """The domain row and its MX link rows. ``summaries`` maps every address in ``dns`` to its probe."""
    mx_rows, cert_checks = _mx_rows(scan_id, dns, summaries, port)
    tally = starttls_verdict([s.status for s in summaries.values()])
    row = DomainRow(
        scan_id=scan_id,
        domain=dns.domain,
        input_line=line.line_no,
        input_raw=line.raw,
        status=dns.status,
        status_detail=dns.detail,
        duplicate_of_line=None,
        mx_source=dns.mx_source,
        mx_count=len(dns.hosts),
        mx_hosts=[h.name for h in dns.hosts],
        null_mx_mixed=dns.null_mx_mixed,
        address_count=len(summaries),
        probed_count=tally.answered,
        starttls_ok_count=tally.ok,
        untested_count=tally.untested,
        starttls=tally.verdict,
        starttls_all=tally.all_ok,
        starttls_any=tally.any_ok,
        certs_valid_all=all(cert_checks) if cert_checks else None,
        dns_ms=dns.elapsed_ms,
        finished_at=finished_at,
    )
    return row, mx_rows


def input_problem_row(
    scan_id: str,
    line: InputLine,
    status: DomainStatus,
    detail: str,
    finished_at: datetime,
    duplicate_of_line: int | None = None,
) -> DomainRow:
    """A domain row for a line that was not scanned: invalid, duplicate, excluded, or a bug."""
    return DomainRow(
        scan_id=scan_id,
        domain=line.domain,
        input_line=line.line_no,
        input_raw=line.raw,
        status=status,
        status_detail=detail,
        duplicate_of_line=duplicate_of_line,
        mx_source=MxSource.NONE,
        mx_count=0,
        mx_hosts=[],
        null_mx_mixed=False,
        address_count=0,
        probed_count=0,
        starttls_ok_count=0,
        untested_count=0,
        starttls=StarttlsVerdict.NOT_APPLICABLE,
        starttls_all=None,
        starttls_any=None,
        certs_valid_all=None,
        dns_ms=None,
        finished_at=finished_at,
    )
