"""Shared lookups: one lookup for concurrent callers, failures forgotten, memory bounded."""

from __future__ import annotations

import asyncio

import pytest

from scanner.shared_lookups import SharedLookups


async def test_concurrent_callers_share_one_lookup() -> None:
    calls = 0
    gate = asyncio.Event()

    async def lookup() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "answer"

    memo: SharedLookups[str] = SharedLookups(10)
    waiting = [asyncio.create_task(memo.get("k", lookup)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == ["answer"] * 5
    assert calls == 1 and memo.known("k") == "answer"
    assert await memo.get("k", lookup) == "answer" and calls == 1


async def test_a_failure_is_not_remembered() -> None:
    async def broken() -> str:
        raise RuntimeError("boom")

    async def fine() -> str:
        return "ok"

    memo: SharedLookups[str] = SharedLookups(10)
    with pytest.raises(RuntimeError):
        await memo.get("k", broken)
    assert memo.known("k") is None
    assert await memo.get("k", fine) == "ok"


async def test_bounded_but_lookups_in_flight_are_kept() -> None:
    memo: SharedLookups[int] = SharedLookups(2)
    gate = asyncio.Event()

    async def slow() -> int:
        await gate.wait()
        return 0

    pending = asyncio.create_task(memo.get("slow", slow))
    await asyncio.sleep(0)
    for i in range(5):
        assert await memo.get(f"k{i}", lambda i=i: asyncio.sleep(0, result=i)) == i
    assert memo.known("slow") is None and len(memo) >= 2  # the in-flight one was not dropped
    gate.set()
    assert await pending == 0
    for i in range(5, 10):
        await memo.get(f"k{i}", lambda i=i: asyncio.sleep(0, result=i))
    assert len(memo) == 2 and memo.known("k9") == 9 and memo.known("k0") is None
