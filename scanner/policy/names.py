"""Host names as the policy checks compare them: lower-case A-labels without the trailing dot.

One normaliser for MTA-STS (policy host, MX patterns, RFC 8461 §3.2 and §4.1), TLS-RPT (report URI
hosts, RFC 8460 §3) and DANE (TLSA owner names and reference identifiers, RFC 7672 §3.2.3).
"""

from __future__ import annotations

import re
from typing import Final

import idna

__all__ = ["LABEL_RE", "normalize_host"]

# RFC 5321 §4.1.2 sub-domain: Let-dig [Ldh-str]; a DNS label is at most 63 octets (RFC 1035 §2.3.4).
LABEL_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_host(name: str) -> str | None:
    """Lower-case A-label form without the trailing dot, or None if it cannot be one."""
    host = name.strip().removesuffix(".")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            return None
    host = host.lower()
    return host if host and all(host.split(".")) else None
