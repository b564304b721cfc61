"""MX host name → provider: the registered domain (eTLD+1) under the Public Suffix List.

The list is the copy shipped inside the ``publicsuffixlist`` package (MPL-2.0, refreshed with each
release), never fetched at run time. Only the ICANN section is used: private-section suffixes such as
hosting platforms would split one operator's MX fleet into one "provider" per customer, while the
operator (e.g. ``google.com`` for ``aspmx.l.google.com``) is what a concentration table is about.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import ipaddress
from collections.abc import Iterable
from typing import Final

from publicsuffixlist import PublicSuffixList

from scanner.names import host_key

__all__ = ["IP_LITERAL", "ProviderMapper", "psl_version"]

# Label for MX "hosts" that are address literals (RFC 5321 §5.1 forbids them; the scanner keeps them).
IP_LITERAL: Final = "(IP literal)"


def psl_version() -> str:
    """Which Public Suffix List decides the providers: the package version and the list's own VERSION and
    COMMIT header lines (stored in the run record, so a provider column can be reproduced)."""
    package = importlib.metadata.version("publicsuffixlist")
    header: dict[str, str] = {}
    data = importlib.resources.files("publicsuffixlist").joinpath("public_suffix_list.dat")
    with data.open("r", encoding="utf-8") as stream:
        for _, line in zip(range(40), stream, strict=False):  # the header is in the first lines
            key, sep, value = line.removeprefix("//").strip().partition(": ")
            if sep and key in ("VERSION", "COMMIT"):
                header[key] = value.strip()
    listed = " ".join(f"{k.lower()} {v}" for k, v in sorted(header.items(), reverse=True))
    return f"publicsuffixlist {package}" + (f" (list {listed})" if listed else "")


class ProviderMapper:
    """Maps host names to providers; build one per report (parsing the list takes ~50 ms)."""

    def __init__(self, memo: int = 50_000) -> None:
        # accept_unknown: a name under a TLD missing from the list (e.g. a private or test TLD) still
        # gets "label.tld" as its registered domain, as browsers treat unknown TLDs.
        self._psl = PublicSuffixList(accept_unknown=True, only_icann=True)
        # A scan asks for the same provider hosts once per domain behind them: remember the answers
        # (bounded, oldest dropped first, so a long tail of self-hosted names cannot grow it).
        self._memo: dict[str, str] = {}
        self._memo_size = max(1, memo)

    def provider(self, host: str) -> str:
        known = self._memo.get(host)
        if known is not None:
            return known
        answer = self._provider(host)
        if len(self._memo) >= self._memo_size:
            del self._memo[next(iter(self._memo))]  # dicts keep insertion order: this is the oldest
        self._memo[host] = answer
        return answer

    def _provider(self, host: str) -> str:
        name = host_key(host)
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            return IP_LITERAL
        registered = self._psl.privatesuffix(name)
        # A host that is itself a public suffix (or empty) has no registered domain: keep the name.
        return registered if registered else name

    def first(self, hosts: Iterable[str]) -> str | None:
        """Provider of the first host (the domain's most preferred MX), None without hosts."""
        for host in hosts:
            return self.provider(host)
        return None

    def map(self, hosts: Iterable[str]) -> dict[str, str]:
        return {host: self.provider(host) for host in hosts}
