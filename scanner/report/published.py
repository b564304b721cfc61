"""Published population figures the report sets beside its own (shared/reference/standards.md §5).

Each value keeps the confidence tag standards.md gives it: [V] verified in a primary source, [S] from a
secondary source or an abstract, [M] from memory. Populations, years and units differ from ours (Alexa
or zone-file lists, whole IPv4 space, mail volume at Gmail), so these rows are context for the reader,
not a pass/fail target. Tuples of frozen dataclasses: read-only.
"""

from __future__ import annotations

from typing import Final

from scanner.report.model import PublishedValue

__all__ = ["CERTIFICATES", "DANE", "INJECTION", "MTA_STS", "STARTTLS"]

_DURUMERIC = "Durumeric et al., IMC 2015"
_GOOGLE = "Google, Email encryption in transit"
_HOLZ = "Holz et al., NDSS 2016"
_MAYER = "Mayer et al., ARES 2016"
_TATANG = "Tatang, Flume & Holz, DIMVA 2021"
_ASHIQ = "Ashiq, Fiebig & Chung, 2025"
_LEE = "Lee et al., USENIX Security 2020"
_PODDEBNIAK = "Poddebniak et al., USENIX Security 2021"

STARTTLS: Final = (
    PublishedValue(_DURUMERIC, "[S]", "long tail of >700,000 SMTP servers (Alexa Top Million MX, 2015)", 0.35,
                   "35% successfully configure encryption", "abstract"),
    PublishedValue(_GOOGLE, "[S]", "mail arriving at Gmail from other providers, 2013", 0.33,
                   "33% encrypted", "mail volume, not servers"),
    PublishedValue(_GOOGLE, "[S]", "mail arriving at Gmail from other providers, 2015", 0.61,
                   "61% encrypted", "mail volume, not servers"),
    PublishedValue(_GOOGLE, "[S]", "Gmail traffic, around 2023", 0.90, "around 90% TLS-protected",
                   "mail volume; cited by a 2023 IEEE paper"),
)

CERTIFICATES: Final = (
    PublishedValue(_MAYER, "[S]", "SMTP hosts, whole IPv4 space, 2015", 0.65,
                   "~65% present self-signed certificates", "third-party note, unverified"),
    PublishedValue(_HOLZ, "[S]", "SMTP/IMAP/POP3 servers, IPv4-wide scans, 2015", None,
                   "weak authentication dominates (certificates not verifiable, self-signed)",
                   "per-port percentages are not in the stored excerpts"),
)

MTA_STS: Final = (
    PublishedValue(_TATANG, "[S]", "1.76 million scanned domains", 0.000124, "0.0124% use MTA-STS", "abstract"),
    PublishedValue(_ASHIQ, "[S]", "domains with an MTA-STS record (68K, four TLDs)", 0.296,
                   "29.6% misconfigured", "abstract; venue to verify"),
    PublishedValue(_ASHIQ, "[S]", "domains with an MTA-STS record (68K, four TLDs)", 0.032,
                   "3.2% would see delivery failures from enforcing senders", "abstract; venue to verify"),
    PublishedValue("third-party note", "[S]", ".com domains", 0.0007, "~0.07% publish MTA-STS", "unverified"),
)

DANE: Final = (
    PublishedValue(_LEE, "[S]", "TLSA records, SLDs of .com/.net/.org/.nl/.se, 24 months", 0.1417,
                   "14.17% do not match the server certificate", "abstract; unit is TLSA records"),
    PublishedValue(_LEE, "[S]", "TLSA records, SLDs of .com/.net/.org/.nl/.se, 24 months", 0.36,
                   "36% cannot be validated (missing or incorrect DNSSEC)", "abstract; unit is TLSA records"),
)

INJECTION: Final = (
    PublishedValue(_PODDEBNIAK, "[V]", "mail servers, Internet-wide scan", 0.02,
                   "≈320,000 mail servers (2%) vulnerable to STARTTLS command injection",
                   "abstract; our figure only flags bytes sent after the 220 (a symptom, not the exploit)"),
)
