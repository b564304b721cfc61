"""PURE: do two sessions of one address contradict each other, and which answer is the worst?

A load balancer can put servers with different configurations behind one address, so two STARTTLS
sessions to it may get different answers. Mixing them (STARTTLS from one backend, the certificate of
another) would publish a server that does not exist. This module compares what sessions answered,
names the facts that disagree (``SessionFact``), and picks the worst of several certificates, so
that verdicts and grades can be based on the worst answer a sender may get. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scanner.certs import ChainVerdict, NameMatch, TrustStatus, match_hostname
from scanner.status import SessionFact

__all__ = ["Answer", "certificate_rank", "contradictions", "worst_verdict"]


@dataclass(frozen=True, slots=True)
class Answer:
    """What one session of an address said about the facts sessions can disagree on."""

    sni: str | None  # the question asked: same SNI, same expected certificate
    starttls: bool | None  # STARTTLS advertised (None: EHLO never answered, nothing said)
    cert_sha256: str | None  # leaf presented (None: no handshake)


def contradictions(earlier: Iterable[Answer], new: Answer) -> frozenset[SessionFact]:
    """Facts on which ``new`` disagrees with one of the ``earlier`` answers of the same address.

    STARTTLS is one fact per address whatever the SNI (it is offered before the ClientHello). A
    certificate is compared only with answers to the same question: the same SNI, or no SNI in both.
    """
    facts: set[SessionFact] = set()
    for old in earlier:
        if new.starttls is not None and old.starttls is not None and new.starttls != old.starttls:
            facts.add(SessionFact.STARTTLS)
        if (old.sni == new.sni and new.cert_sha256 is not None and old.cert_sha256 is not None
                and old.cert_sha256 != new.cert_sha256):
            facts.add(SessionFact.CERTIFICATE)
    return frozenset(facts)


def certificate_rank(verdict: ChainVerdict, host: str | None) -> int:
    """Higher is worse: 0 valid for ``host`` (RFC 8461 §4.2), 1 trusted but expired or another name,
    2 not trusted at all. Without a host name only trust and validity count."""
    leaf = verdict.leaf
    if leaf is None or verdict.trust not in (TrustStatus.TRUSTED, TrustStatus.EXPIRED):
        return 2
    if verdict.expired or verdict.not_yet_valid:
        return 1
    if host is not None and match_hostname(leaf, host) not in (NameMatch.SAN, NameMatch.COMMON_NAME):
        return 1
    return 0


def worst_verdict(verdicts: Sequence[ChainVerdict], host: str | None) -> ChainVerdict | None:
    """The worst of several certificates received for one question (the first on a tie)."""
    worst: ChainVerdict | None = None
    for verdict in verdicts:
        if worst is None or certificate_rank(verdict, host) > certificate_rank(worst, host):
            worst = verdict
    return worst
