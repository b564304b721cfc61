"""The stage monitor: fill shares, full share and peaks from sampled gauges; loop lag."""

from __future__ import annotations

import asyncio
import time

from scanner.monitor import Gauge, StageMonitor


def test_fill_full_share_and_peak() -> None:
    values = iter([0, 5, 10, 10])
    current = {"v": 0}
    monitor = StageMonitor([Gauge("queue", lambda: current["v"], 10), Gauge("idle", lambda: 0, 4)])
    for value in values:
        current["v"] = value
        monitor.sample()
    queue, idle = monitor.summaries()
    assert (queue.mean_fill, queue.full_share, queue.peak) == (0.625, 0.5, 10)
    assert (idle.mean_fill, idle.full_share, idle.peak) == (0.0, 0.0, 0)
    doc = monitor.to_json()
    assert doc["samples"] == 4 and doc["stages"]["queue"]["mean_fill"] == 0.625
    assert doc["peak_rss_mb"] > 0


async def test_a_blocked_loop_shows_as_lag() -> None:
    monitor = StageMonitor([Gauge("g", lambda: 1, 1)], interval=0.01)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # noqa: ASYNC251 -- on purpose: a busy loop makes the monitor wake up late
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert monitor.lag_max >= 0.15
    assert monitor.summaries()[0].full_share == 1.0


def test_rss_series_records_progress_and_current_rss() -> None:
    done = {"rows": 0}
    monitor = StageMonitor([], progress=lambda: done["rows"], series_every=0.0)
    for rows in (10, 20):
        done["rows"] = rows
        monitor.sample()
    assert [point[1] for point in monitor.rss_series] == [10, 20]
    assert all(point[2] > 0 for point in monitor.rss_series)
    assert monitor.to_json()["rss_series"][1][1] == 20
