"""Sliding windows that tell "our side is broken" from "the Internet is messy" (scanner.health)."""

from __future__ import annotations

from scanner.config import HealthConfig
from scanner.health import Breakdown, FailureWindow, HealthWatch
from scanner.status import DnsOutcome, FailureClass


def test_window_trips_only_when_full_and_at_the_threshold() -> None:
    window = FailureWindow(10, 0.9)
    assert not any(window.add(True) for _ in range(9))  # 9 of 9 failed, but the window is not full yet
    assert window.add(True)  # 10 of 10
    window = FailureWindow(10, 0.9)
    outcomes = [False] * 2 + [True] * 8  # 80%: below 90%
    assert not any(window.add(failed) for failed in outcomes)
    assert window.add(True)  # slides: the oldest success leaves, 9 of the last 10 failed
    assert window.failures == 9 and window.seen == 11


def test_scattered_failures_never_trip() -> None:
    window = FailureWindow(100, 0.5)
    assert not any(window.add(i % 3 == 0) for i in range(10_000))  # a third failing: the Internet's mess


def test_watch_reports_the_first_breakdown_once() -> None:
    seen: list[Breakdown] = []
    watch = HealthWatch(HealthConfig(dns_window=5, dns_threshold=0.8, probe_window=4, probe_threshold=1.0),
                        seen.append)
    for _ in range(3):
        watch.dns(DnsOutcome.NXDOMAIN, "")  # an answer about the name: not a failure
        watch.probe(FailureClass.TIMEOUT, "")  # the far side's silence: not ours
    assert not seen
    for _ in range(8):
        watch.dns(DnsOutcome.TIMEOUT, "MX example.org: timeout")
        watch.probe(FailureClass.NO_ROUTE, "no route to host")
    assert len(seen) == 1 and seen[0].kind == "dns" and seen[0].failures >= 4
    message = seen[0].describe("resolver 127.0.0.1:5353")
    assert "resolver 127.0.0.1:5353" in message and "same command" in message and "NOT complete" in message
    assert watch.breakdown is seen[0]


def test_probe_window_names_the_network_not_the_resolver() -> None:
    seen: list[Breakdown] = []
    watch = HealthWatch(HealthConfig(probe_window=3, probe_threshold=1.0), seen.append)
    watch.probe(FailureClass.NO_ROUTE, "")
    watch.probe(None, "")  # a probe that worked
    watch.probe(FailureClass.NETWORK_ERROR, "")
    assert not seen
    watch.probe(FailureClass.NO_ROUTE, "[Errno 101] Network is unreachable")
    watch.probe(FailureClass.NO_ROUTE, "[Errno 101] Network is unreachable")
    assert len(seen) == 1 and seen[0].kind == "probe"
    message = seen[0].describe("resolver 127.0.0.1:53")
    assert "no route" in message and "this host's network" in message and "Network is unreachable" in message
