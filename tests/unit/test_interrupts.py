"""The command's one owner of Ctrl-C and SIGTERM (scanner.interrupts): no gap, and the second escalates."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from scanner.interrupts import StopSignals


class _Job:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_stop(self) -> None:
        self.calls.append("stop")

    def abandon(self) -> None:
        self.calls.append("abandon")


def _interrupt() -> None:
    os.kill(os.getpid(), signal.SIGINT)


async def _until(job: _Job, count: int) -> None:
    for _ in range(200):
        if len(job.calls) >= count:
            return
        await asyncio.sleep(0.01)


def test_first_signal_stops_the_second_abandons_later_ones_only_log(caplog: pytest.LogCaptureFixture) -> None:
    job = _Job()

    async def work() -> str:
        for expected in (1, 2, 2):
            _interrupt()
            await _until(job, expected)
        await asyncio.sleep(0.05)
        return "done"

    with StopSignals() as signals:
        signals.attach(job, lambda: "stopping: notice")
        assert asyncio.run(signals.run(work())) == "done"
    assert job.calls == ["stop", "abandon"]
    assert signals.received == 3
    assert "stopping: notice" in caplog.text and "abandoned" in caplog.text


def test_a_signal_while_the_loop_shuts_down_is_no_keyboard_interrupt() -> None:
    """The gap that made a second Ctrl-C a traceback: after the scan's work returned, before the loop closed."""
    job = _Job()

    async def work() -> None:
        return None

    async def teardown_gap() -> None:
        await asyncio.sleep(0)

    with StopSignals() as signals:
        signals.attach(job, lambda: "stopping")
        asyncio.run(signals.run(work()))
        _interrupt()  # after the loop: with the default handler, this raised KeyboardInterrupt
        asyncio.run(teardown_gap())
    assert job.calls == [] and signals.received == 1


def test_signals_before_the_loop_runs_apply_when_it_starts() -> None:
    job = _Job()

    async def work() -> list[str]:
        return list(job.calls)

    with StopSignals() as signals:
        _interrupt()  # during set-up, before the scan exists: kept
        signals.attach(job, lambda: "stopping")
        assert asyncio.run(signals.run(work())) == ["stop"]


def test_a_second_signal_before_the_scan_exists_interrupts_the_set_up(capsys: pytest.CaptureFixture[str]) -> None:
    async def setup() -> None:  # like the resolver check before a scan
        _interrupt()
        await asyncio.sleep(0.05)
        _interrupt()
        await asyncio.sleep(5)

    with StopSignals() as signals, pytest.raises(KeyboardInterrupt):
        asyncio.run(setup())
    assert signals.received == 2
    assert "Traceback" not in capsys.readouterr().err


def test_previous_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        assert signal.getsignal(signal.SIGINT) != before[0]
        with signals:  # re-entrant: the inner exit keeps the owner installed
            pass
        assert signal.getsignal(signal.SIGINT) != before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_process_whose_command_ended_ignores_late_signals() -> None:
    """``smtp-tls-survey`` after its last line: a late Ctrl-C must not turn exit 130 into a death by SIGINT."""
    from scanner.interrupts import ignore_late_signals

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        ignore_late_signals()
        _interrupt()  # nothing happens
        assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
