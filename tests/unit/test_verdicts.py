"""The domain STARTTLS verdict: untested addresses never count as "no STARTTLS"."""

from __future__ import annotations

import pytest

from scanner.status import ProbeStatus as P
from scanner.status import StarttlsVerdict as V
from scanner.verdicts import starttls_verdict

OK, NO, HS, TO, TH, UN, SK = (P.STARTTLS_OK, P.NO_STARTTLS, P.TLS_HANDSHAKE_FAILED, P.TIMEOUT, P.THROTTLED,
                              P.UNREACHABLE, P.SKIPPED_RESERVED_ADDRESS)


@pytest.mark.parametrize(
    ("statuses", "verdict", "all_ok", "any_ok"),
    [
        ([], V.NOT_APPLICABLE, None, None),
        ([OK], V.ALL, True, True),
        ([OK, OK], V.ALL, True, True),
        ([NO], V.NONE, False, False),
        ([HS, P.STARTTLS_REJECTED], V.NONE, False, False),
        ([OK, NO], V.SOME, False, True),
        ([OK, HS], V.SOME, False, True),
        ([TO], V.INCOMPLETE, None, None),
        ([TH, UN, SK], V.INCOMPLETE, None, None),
        ([OK, TO], V.INCOMPLETE, None, True),  # the timed-out one may or may not do TLS
        ([NO, TH], V.INCOMPLETE, None, None),  # a 421 is never read as "no STARTTLS"
        ([OK, NO, TO], V.SOME, False, True),  # already decided whatever the untested one does
        ([P.SMTP_REJECTED], V.INCOMPLETE, None, None),
    ],
)
def test_verdict_table(statuses: list[P], verdict: V, all_ok: bool | None, any_ok: bool | None) -> None:
    tally = starttls_verdict(statuses)
    assert (tally.verdict, tally.all_ok, tally.any_ok) == (verdict, all_ok, any_ok)
    assert tally.answered + tally.untested == len(statuses)
