"""Published population figures the report sets beside its own, each with a full citation.

Only figures checked against the publication itself are kept (authors, title, venue, year and where in
the paper the number is); figures whose source could not be checked were dropped rather than tagged.
Populations, years and units differ from ours (Alexa lists, zone files, Internet-wide scans), so these
rows are context for the reader, not a pass/fail target. Tuples of frozen dataclasses: read-only.
"""

from __future__ import annotations

from typing import Final

from scanner.report.model import Citation, PublishedValue

__all__ = ["DANE", "INJECTION", "STARTTLS"]

DURUMERIC_2015: Final = Citation(
    authors="Z. Durumeric, D. Adrian, A. Mirian, J. Kasten, E. Bursztein, N. Lidzborski, K. Thomas, V. Eranti, "
            "M. Bailey, J. A. Halderman",
    title="Neither Snow Nor Rain Nor MITM... An Empirical Analysis of Email Delivery Security",
    venue="ACM Internet Measurement Conference (IMC), pp. 27-39, doi:10.1145/2815675.2815695", year=2015,
    short="Durumeric et al., IMC 2015",
)
LEE_2020: Final = Citation(
    authors="H. Lee, A. Girish, R. van Rijswijk-Deij, T. Kwon, T. Chung",
    title="A Longitudinal and Comprehensive Study of the DANE Ecosystem in Email",
    venue="USENIX Security Symposium", year=2020, short="Lee et al., USENIX Security 2020",
)
PODDEBNIAK_2021: Final = Citation(
    authors="D. Poddebniak, F. Ising, H. Böck, S. Schinzel",
    title="Why TLS is better without STARTTLS: A Security Analysis of STARTTLS in the Email Context",
    venue="30th USENIX Security Symposium", year=2021, short="Poddebniak et al., USENIX Security 2021",
)
STARTTLS: Final = (
    PublishedValue(DURUMERIC_2015, "abstract", "long tail of over 700,000 SMTP servers (MX of the Alexa Top Million)",
                   0.35, "35% successfully configure encryption"),
)

DANE: Final = (
    PublishedValue(LEE_2020, "abstract", "TLSA records of second-level domains under .com/.net/.org/.nl/.se, 24 months",
                   0.1417, "14.17% are inconsistent with their certificates", "unit: TLSA records"),
    PublishedValue(LEE_2020, "abstract", "TLSA records of second-level domains under .com/.net/.org/.nl/.se, 24 months",
                   0.36, "36% cannot be validated (missing or incorrect DNSSEC records)", "unit: TLSA records"),
)

INJECTION: Final = (
    PublishedValue(PODDEBNIAK_2021, "abstract", "email servers, Internet-wide scan", 0.02,
                   "320,000 email servers (2%) vulnerable to command injection",
                   "our figure only flags bytes sent after the 220 to STARTTLS (a symptom, not the exploit)"),
)
