"""What the policy stage fetches for one domain: facts only, the contract between its I/O and its judgement.

``scanner.policy.domain`` fetches a :class:`DomainPolicyFacts` (as soon as the domain's DNS is done,
beside its probes); ``scanner.policy.judge`` folds it with the domain's DNS and probe facts. Every
field is an immutable value (no socket, context or callable), so the facts can cross a process
boundary as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scanner.policy.dane import TlsaLookup
from scanner.policy.mta_sts import PolicyDocument
from scanner.policy.txt import TxtAnswer

__all__ = ["DomainPolicyFacts"]


@dataclass(frozen=True, slots=True)
class DomainPolicyFacts:
    """One domain's MTA-STS (RFC 8461), TLS-RPT (RFC 8460) and TLSA (RFC 7672) facts."""

    domain: str
    sts_txt: TxtAnswer  # _mta-sts.<domain> TXT (RFC 8461 §3.1)
    # https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 §3.3); None: not fetched, because no
    # TXT record begins with v=STSv1 (no HTTPS connection to every surveyed domain).
    sts_document: PolicyDocument | None
    tlsrpt_txt: TxtAnswer  # _smtp._tls.<domain> TXT (RFC 8460 §3)
    tlsa: Mapping[str, TlsaLookup | None]  # MX host → its TLSA lookup (None: not looked up, no explicit resolver)
