"""Pure MX planning: ordering, null MX, implicit MX, IP literals."""

from __future__ import annotations

import dataclasses

from scanner.dns.records import DomainDns, HostResolution, MailHost, MxRecord, is_ip_literal, plan_mx
from scanner.status import DomainStatus, HostStatus, MxSource


def test_sorted_by_preference_then_name_and_deduplicated() -> None:
    plan = plan_mx([MxRecord(20, "b.example."), MxRecord(10, "Z.example"), MxRecord(10, "a.example"),
                    MxRecord(30, "a.example")])
    assert plan.source is MxSource.MX
    assert [(r.preference, r.exchange) for r in plan.hosts] == [(10, "a.example"), (10, "z.example"),
                                                                (20, "b.example")]


def test_null_mx_alone() -> None:
    assert plan_mx([MxRecord(0, ".")]).source is MxSource.NULL_MX
    assert plan_mx([MxRecord(0, "")]).source is MxSource.NULL_MX


def test_null_mx_mixed_is_flagged_and_ignored() -> None:
    plan = plan_mx([MxRecord(0, "."), MxRecord(10, "mx.example")])
    assert plan.source is MxSource.MX and plan.null_mx_mixed
    assert [r.exchange for r in plan.hosts] == ["mx.example"]


def test_no_records_means_implicit() -> None:
    assert plan_mx([]).source is MxSource.IMPLICIT


def test_ip_literals() -> None:
    assert is_ip_literal("192.0.2.1") and is_ip_literal("[2001:db8::1]") and is_ip_literal("2001:db8::1")
    assert not is_ip_literal("mx.example") and not is_ip_literal("192.0.2.1.example")


def test_timed_keeps_every_other_field() -> None:
    host = MailHost("mx.example.net", 5, HostResolution("mx.example.net", HostStatus.OK, ("192.0.2.1",)))
    values: dict[str, object] = {"domain": "example.com", "status": DomainStatus.OK, "mx_source": MxSource.MX,
                                 "hosts": (host,), "detail": "d", "null_mx_mixed": True, "elapsed_ms": 1.0,
                                 "capped": True}
    assert set(values) == {f.name for f in dataclasses.fields(DomainDns)}  # a new field must be added here
    original = DomainDns(**values)  # type: ignore[arg-type]
    assert original.timed(7.5) == dataclasses.replace(original, elapsed_ms=7.5)
