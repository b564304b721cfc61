"""SNI decisions and session contradictions (scanner.sni, scanner.consistency), with scripted sessions."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scanner.certs import CertificateInfo, ChainVerdict, KeyType, TrustStatus, TrustStore, check_chain
from scanner.consistency import Answer, contradictions, worst_verdict
from scanner.output.probe_rows import build_session_row, session_summary, session_summary_from_row
from scanner.records import ProbeSummary, TlsInfo
from scanner.smtp.session import skipped_result
from scanner.sni import (
    ASKED_ONCE_LIMIT,
    AddressCheck,
    SessionOutcome,
    SniState,
    check_address,
    decide_name,
    first_come_share,
    note_name,
)
from scanner.status import CertSource, FailureClass, ProbeStatus, SessionFact, SessionKind
from worlds.ca import TestCA

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def leaf(name: str) -> CertificateInfo:
    return CertificateInfo(subject=f"CN={name}", subject_cn=name, san_dns=(name,), san_ip=(), issuer="CN=ca",
                           issuer_cn="ca", serial="01", not_before=datetime(2026, 1, 1, tzinfo=UTC),
                           not_after=datetime(2027, 1, 1, tzinfo=UTC), key_type=KeyType.EC, key_bits=256,
                           signature_algorithm="ecdsa-with-SHA256", sha256=f"sha-{name}", self_issued=False)


def verdict(name: str, trust: TrustStatus = TrustStatus.TRUSTED) -> ChainVerdict:
    return ChainVerdict((leaf(name),), (), trust, "", False, False, trust is TrustStatus.SELF_SIGNED, 200)


def outcome(kind: SessionKind, sni: str | None, cert: str | None, starttls: bool = True,
            trust: TrustStatus = TrustStatus.TRUSTED) -> SessionOutcome:
    base = skipped_result(FailureClass.INTERNAL)
    if cert is None:
        status = ProbeStatus.STARTTLS_OK if starttls else ProbeStatus.NO_STARTTLS
        result = dataclasses.replace(base, status=status, starttls_advertised=starttls)
        return SessionOutcome("192.0.2.1", kind, sni, result, None, NOW)
    tls = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", 128, (cert.encode(),), True)
    result = dataclasses.replace(base, status=ProbeStatus.STARTTLS_OK, starttls_advertised=True, tls=tls)
    return SessionOutcome("192.0.2.1", kind, sni, result, verdict(cert, trust), NOW)


def run_script(answers: Iterator[tuple[str | None, bool]], asked: list[tuple[SessionKind, str | None]]):  # type: ignore[no-untyped-def]
    async def run(kind: SessionKind, sni: str | None) -> SessionOutcome:
        asked.append((kind, sni))
        cert, starttls = next(answers)
        return outcome(kind, sni, cert, starttls)

    return run


async def _ignore(_o: SessionOutcome, _f: frozenset[SessionFact]) -> None:
    return None


def check_with(answers: list[tuple[str | None, bool]], probe_cert: str | None = "mx1",
               probe_starttls: bool = True) -> tuple[AddressCheck, list[tuple[SessionKind, str | None]]]:
    probe_verdict = verdict(probe_cert) if probe_cert else None
    check = AddressCheck("mx1", Answer("mx1", probe_starttls, f"sha-{probe_cert}" if probe_cert else None),
                         probe_verdict)
    asked: list[tuple[SessionKind, str | None]] = []
    asyncio.run(check_address(check, run_script(iter(answers), asked), _ignore, recheck_limit=2))
    return check, asked


def test_contradictions_compare_certificates_only_for_the_same_question() -> None:
    first = Answer("a", True, "x")
    assert contradictions([first], Answer("b", True, "y")) == frozenset()  # other SNI: selection, not conflict
    assert contradictions([first], Answer("a", True, "y")) == {SessionFact.CERTIFICATE}
    assert contradictions([first], Answer(None, False, None)) == {SessionFact.STARTTLS}
    assert contradictions([first], Answer("a", None, None)) == frozenset()  # nothing said, nothing contradicted


def test_worst_certificate_is_untrusted_then_wrong_name() -> None:
    good, other, rogue = verdict("mx1"), verdict("mx9"), verdict("mx1", TrustStatus.SELF_SIGNED)
    assert worst_verdict([good, other], "mx1") is other
    assert worst_verdict([good, other, rogue], "mx1") is rogue
    assert worst_verdict([good], "mx1") is good


def test_same_certificate_without_sni_costs_one_session() -> None:
    check, asked = check_with([("mx1", True)])
    assert asked == [(SessionKind.NO_SNI, None)]
    assert check.selects is False and not check.facts and check.no_sni_sha256 == "sha-mx1"


def test_sni_selection_is_confirmed_by_asking_both_questions_again() -> None:
    check, asked = check_with([("default", True), ("default", True), ("mx1", True)])
    assert asked == [(SessionKind.NO_SNI, None), (SessionKind.RECHECK, None), (SessionKind.RECHECK, "mx1")]
    assert check.selects is True and not check.facts


def test_alternating_backends_are_not_sni_selection() -> None:
    # Round robin over two backends: probe A, no-SNI B, no-SNI again A -> the same question, two answers.
    check, asked = check_with([("other", True), ("mx1", True), ("other", True), ("mx1", True), ("other", True)])
    assert check.facts == {SessionFact.CERTIFICATE}
    assert check.selects is None
    assert len(asked) == 3 + 2  # the disambiguation, then recheck_limit re-asks
    worst = check.worst_probe_verdict()
    assert worst is not None and worst.leaf is not None and worst.leaf.sha256 == "sha-other"


def test_starttls_missing_in_the_next_session_is_a_contradiction() -> None:
    check, asked = check_with([(None, False), ("mx1", True), (None, False)])
    assert check.facts == {SessionFact.STARTTLS}
    assert check.rechecks == 2 and len(asked) == 3


def state(selects: bool | None, no_sni: str = "sha-mx1") -> SniState:
    return SniState("mx1", "sha-mx1", no_sni, selects)


def test_name_decisions_only_when_they_can_change_the_verdict() -> None:
    probe = verdict("mx1")
    # One certificate with and without SNI, and it names the host already: nothing to learn.
    assert decide_name(state(False), "mx1", probe, cap=5).source is CertSource.SAME_CERTIFICATE
    # It does not name the host: a session could turn a mismatch into a match.
    assert decide_name(state(False), "mx2", probe, cap=5).ask
    # The server selects by SNI: even a name the probe's certificate covers is asked.
    assert decide_name(state(True), "mx1", probe, cap=5).ask


def test_cap_is_taken_at_decision_time_and_never_gives_mismatch() -> None:
    s = state(True)
    assert decide_name(s, "a", verdict("mx1"), cap=1).ask
    later = decide_name(s, "b", verdict("mx1"), cap=1)
    assert (later.ask, later.source) == (False, CertSource.NOT_CHECKED)


def test_most_of_the_cap_goes_first_come_the_rest_to_names_asked_again() -> None:
    s = state(True)
    # cap 4: sessions at once for the first three names to ask, one kept ...
    assert [decide_name(s, name, verdict("mx1"), cap=4).ask for name in ("a", "b", "c")] == [True] * 3
    assert first_come_share(4) == 3 and s.extra == 3
    # ... then a one-off name waits for a second ask, unsettled: its answer must not be cached.
    once = decide_name(s, "one-off", verdict("mx1"), cap=4)
    assert (once.ask, once.source, once.settled) == (False, CertSource.NOT_CHECKED, False)
    busy = decide_name(s, "busy", verdict("mx1"), cap=4)
    assert not busy.ask and not busy.settled
    # A second domain asks for the busy name: it takes a kept session, even after more one-off names.
    assert not decide_name(s, "another", verdict("mx1"), cap=4).ask
    again = decide_name(s, "busy", verdict("mx1"), cap=4)
    assert (again.ask, again.source) == (True, CertSource.OWN_SNI)
    assert "busy" not in s.asked_once and s.extra == 4
    # The cap is used up: every later answer is settled, and nothing is kept for second asks.
    final = decide_name(s, "one-off", verdict("mx1"), cap=4)
    assert (final.ask, final.source, final.settled) == (False, CertSource.NOT_CHECKED, True)
    assert not s.asked_once


def test_a_cap_of_one_has_no_kept_share_and_a_cap_of_zero_asks_nothing() -> None:
    assert [first_come_share(cap) for cap in (0, 1, 2, 5, 19, 20, 50)] == [0, 1, 1, 4, 18, 18, 45]
    s = state(True)
    assert decide_name(s, "a", verdict("mx1"), cap=1).ask
    assert decide_name(s, "b", verdict("mx1"), cap=1).settled
    nothing = decide_name(state(True), "a", verdict("mx1"), cap=0)
    assert (nothing.ask, nothing.source, nothing.settled) == (False, CertSource.NOT_CHECKED, True)


def test_names_asked_once_are_remembered_within_a_bound() -> None:
    s = state(True)
    assert decide_name(s, "first", verdict("mx1"), cap=2).ask
    names = [f"n{i}" for i in range(ASKED_ONCE_LIMIT + 1)]
    for name in names:
        assert not decide_name(s, name, verdict("mx1"), cap=2).ask
    assert len(s.asked_once) == ASKED_ONCE_LIMIT and names[0] not in s.asked_once  # the oldest went first
    assert not decide_name(s, names[0], verdict("mx1"), cap=2).ask  # forgotten: a first ask again
    assert decide_name(s, names[-1], verdict("mx1"), cap=2).ask


def test_names_in_a_row_with_the_same_certificate_show_a_server_that_ignores_sni() -> None:
    s = state(False)
    for name in ("a", "b", "c"):
        assert decide_name(s, name, verdict("mx1"), cap=50).ask
        note_name(s, outcome(SessionKind.SNI, name, "mx1"), same_run=3)
    assert s.ignores
    assert decide_name(s, "d", verdict("mx1"), cap=50).source is CertSource.SAME_CERTIFICATE
    assert s.extra == 3


def test_another_certificate_for_a_name_proves_selection() -> None:
    s = state(False)
    note_name(s, outcome(SessionKind.SNI, "mx2", "mx2"), same_run=3)
    assert s.selects is True and not s.ignores


def test_link_view_takes_the_session_certificate_and_keeps_the_probe_facts() -> None:
    base = ProbeSummary(probe_id="192.0.2.1|25", status=ProbeStatus.STARTTLS_OK, leaf=leaf("mx1"), chain=(b"mx1",),
                        cert_trust=TrustStatus.TRUSTED, cert_expired=False, cert_self_signed=False,
                        plaintext_after_starttls=False, enumeration=None, sni="mx1")
    view = session_summary(base, outcome(SessionKind.SNI, "mx2", "mx2"), frozenset())
    assert view.leaf is not None and view.leaf.sha256 == "sha-mx2" and view.chain == (b"mx2",)
    assert (view.cert_source, view.sni, view.status) == (CertSource.OWN_SNI, "mx2", ProbeStatus.STARTTLS_OK)
    failed = session_summary(base, outcome(SessionKind.SNI, "mx2", None, starttls=False),
                             frozenset({SessionFact.STARTTLS}))
    assert failed.leaf is None and failed.cert_source is CertSource.SESSION_FAILED
    assert failed.inconsistent == ("starttls",)


def test_sni_session_rows_rebuild_the_link_view_on_resume(tmp_path: Path) -> None:
    """A further name's session is read back from its ``sessions`` row, never opened again."""
    ca = TestCA(tmp_path / "ca")
    issued = ca.issue(["mx2.example.test"])
    trust = TrustStore.from_pem_bytes(ca.ca_file.read_bytes())
    chain = tuple(c.public_bytes(serialization.Encoding.DER)
                  for c in x509.load_pem_x509_certificates(issued.cert_file.read_bytes()))
    now = datetime.now(UTC)
    tls = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", 128, chain, True)
    result = dataclasses.replace(skipped_result(FailureClass.INTERNAL), status=ProbeStatus.STARTTLS_OK,
                                 starttls_advertised=True, tls=tls)
    live = SessionOutcome("192.0.2.1", SessionKind.SNI, "mx2.example.test", result, check_chain(chain, trust, now),
                          now)
    row = build_session_row("scan", 1, 25, live, "sha-mx1", frozenset())
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    values = {k: v.value if isinstance(v, Enum) else v for k, v in values.items()}
    base = ProbeSummary(probe_id="192.0.2.1|25", status=ProbeStatus.STARTTLS_OK, leaf=leaf("mx1"), chain=(b"mx1",),
                        cert_trust=TrustStatus.TRUSTED, cert_expired=False, cert_self_signed=False,
                        plaintext_after_starttls=False, enumeration=None, sni="mx1")
    resumed = session_summary_from_row(values, base, trust)
    fresh = session_summary(base, live, frozenset())
    assert resumed == fresh
    assert resumed.cert_trust is TrustStatus.TRUSTED and resumed.cert_source is CertSource.OWN_SNI
    assert row.probe_id == "192.0.2.1|25" and row.same_as_probe is False
