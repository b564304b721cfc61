"""Domain mail-security policies: MTA-STS (RFC 8461), TLS-RPT (RFC 8460) and DANE TLSA (RFC 7672).

One module per check, each with a typed, frozen result. Parsing is pure and kept apart from I/O:
``parse_*`` / ``match_*`` / ``evaluate`` functions take text or bytes and never touch the network,
while the ``check_*`` / ``fetch_*`` / ``lookup_*`` coroutines do the DNS and HTTPS work.
"""

from __future__ import annotations

from scanner.policy.dane import (
    DaneResult,
    DaneVerdict,
    DnssecStatus,
    TlsaLookup,
    TlsaMatch,
    TlsaProblem,
    TlsaRecord,
    check_dane,
    lookup_tlsa,
    match_tlsa,
    parse_tlsa_text,
    tlsa_problem,
)
from scanner.policy.mta_sts import (
    FetchResult,
    MtaStsResult,
    MxVerdict,
    StsError,
    StsFailure,
    StsMode,
    StsPolicy,
    StsTxtResult,
    check_mta_sts,
    evaluate,
    fetch_policy,
    mx_matches,
    parse_policy,
    parse_sts_txt,
    policy_ssl_context,
)
from scanner.policy.tlsrpt import RuaUri, TlsRptResult, TlsRptStatus, check_tlsrpt, parse_tlsrpt

__all__ = [
    "DaneResult",
    "DaneVerdict",
    "DnssecStatus",
    "FetchResult",
    "MtaStsResult",
    "MxVerdict",
    "RuaUri",
    "StsError",
    "StsFailure",
    "StsMode",
    "StsPolicy",
    "StsTxtResult",
    "TlsRptResult",
    "TlsRptStatus",
    "TlsaLookup",
    "TlsaMatch",
    "TlsaProblem",
    "TlsaRecord",
    "check_dane",
    "check_mta_sts",
    "check_tlsrpt",
    "evaluate",
    "fetch_policy",
    "lookup_tlsa",
    "match_tlsa",
    "mx_matches",
    "parse_policy",
    "parse_sts_txt",
    "parse_tlsa_text",
    "parse_tlsrpt",
    "policy_ssl_context",
    "tlsa_problem",
]
