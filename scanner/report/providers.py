"""MX host name → provider: the registered domain (eTLD+1) under the Public Suffix List.

The list is the copy shipped inside the ``publicsuffixlist`` package (MPL-2.0, refreshed with each
release), never fetched at run time. Only the ICANN section is used: private-section suffixes such as
hosting platforms would split one operator's MX fleet into one "provider" per customer, while the
operator (e.g. ``google.com`` for ``aspmx.l.google.com``) is what a concentration table is about.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from publicsuffixlist import PublicSuffixList

__all__ = ["IP_LITERAL", "ProviderMapper"]

# Label for MX "hosts" that are address literals (RFC 5321 §5.1 forbids them; the scanner keeps them).
IP_LITERAL: Final = "(IP literal)"


class ProviderMapper:
    """Maps host names to providers; build one per report (parsing the list takes ~50 ms)."""

    def __init__(self) -> None:
        # accept_unknown: a name under a TLD missing from the list (e.g. a private or test TLD) still
        # gets "label.tld" as its registered domain, as browsers treat unknown TLDs.
        self._psl = PublicSuffixList(accept_unknown=True, only_icann=True)

    def provider(self, host: str) -> str:
        name = host.strip().rstrip(".").lower()
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            return IP_LITERAL
        registered = self._psl.privatesuffix(name)
        # A host that is itself a public suffix (or empty) has no registered domain: keep the name.
        return registered if registered else name

    def map(self, hosts: Iterable[str]) -> dict[str, str]:
        return {host: self.provider(host) for host in hosts}
