"""Address policy (reserved ranges, opt-out list) and rate limiters."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time

import pytest

from scanner.net.addresses import AddressPolicy, ExcludeList, ExcludeListError, embedded_ipv4
from scanner.net.limits import KeyedLimiter, PolitenessLimiter, Slots, TokenBucket, prefix_of
from scanner.status import FailureClass

RESERVED = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "100.64.0.1", "0.0.0.0",
            "224.0.0.1", "192.0.2.10", "198.18.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1", "2001:db8::1",
            "::ffff:127.0.0.1", "ff02::1"]


@pytest.mark.parametrize("address", RESERVED)
def test_reserved_refused_by_default(address: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is FailureClass.RESERVED_ADDRESS


@pytest.mark.parametrize("address", ["8.8.8.8", "2a00:1450::1", "1.1.1.1"])
def test_global_allowed(address: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_allow_private_opens_loopback_but_never_multicast() -> None:
    policy = AddressPolicy(allow_private=True)
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("224.0.0.1")) is FailureClass.RESERVED_ADDRESS


def test_exclude_list_cidrs_and_suffixes() -> None:
    exclude = ExcludeList.from_lines(["# opt-outs", "203.0.113.0/24", "2001:db8:1::/48", "Example.COM.",
                                      "8.8.8.8  # one host", ""])
    assert exclude.excludes_address(ipaddress.ip_address("203.0.113.77"))
    assert not exclude.excludes_address(ipaddress.ip_address("203.0.114.1"))
    assert exclude.excludes_address(ipaddress.ip_address("2001:db8:1::25"))
    assert exclude.excludes_address(ipaddress.ip_address("8.8.8.8"))
    assert not exclude.excludes_address(ipaddress.ip_address("8.8.8.9"))
    assert exclude.excludes_name("example.com") and exclude.excludes_name("MX1.example.com.")
    assert not exclude.excludes_name("notexample.com")
    policy = AddressPolicy(allow_private=True, exclude=exclude)
    assert policy.refusal(ipaddress.ip_address("8.8.8.8")) is FailureClass.EXCLUDED


def test_exclude_list_rejects_junk() -> None:
    with pytest.raises(ExcludeListError, match="line 2"):
        ExcludeList.from_lines(["example.com", "not a thing!"])


async def test_keyed_limiter_concurrency_and_interval() -> None:
    limiter = KeyedLimiter(concurrency=1, interval=0.05)
    active = 0
    peak = 0
    starts: list[float] = []

    async def use(key: str) -> None:
        nonlocal active, peak
        async with limiter.slot(key):
            starts.append(time.monotonic())
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.gather(*(use("a") for _ in range(4)))
    assert peak == 1
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.045
    # Different keys do not wait for each other.
    t0 = time.monotonic()
    await asyncio.gather(*(use(f"k{i}") for i in range(20)))
    assert time.monotonic() - t0 < 0.2


async def _entered(limiter: PolitenessLimiter, address: str, release: asyncio.Event) -> asyncio.Event:
    """Start a task that takes ``address``'s slot and holds it until ``release``; return its "entered" flag."""
    entered = asyncio.Event()

    async def hold() -> None:
        async with limiter.slot(address):
            entered.set()
            await release.wait()

    asyncio.get_running_loop().create_task(hold())
    for _ in range(10):  # let it run as far as it can
        await asyncio.sleep(0)
    return entered


async def test_politeness_limiter_global_cap_spans_addresses_and_prefixes() -> None:
    limiter = PolitenessLimiter(max_connections=1, per_address=4, interval=0.0, per_prefix=4)
    release = asyncio.Event()
    first = await _entered(limiter, "192.0.2.1", release)
    second = await _entered(limiter, "2001:db8::1", release)  # another address, family and prefix
    assert first.is_set() and not second.is_set() and limiter.open == 1
    release.set()
    await asyncio.wait_for(second.wait(), 1)
    for _ in range(10):
        await asyncio.sleep(0)
    assert limiter.open == 0


async def test_politeness_limiter_caps_each_prefix_not_the_next() -> None:
    limiter = PolitenessLimiter(max_connections=10, per_address=1, interval=0.0, per_prefix=2)
    release = asyncio.Event()
    same = [await _entered(limiter, f"198.51.100.{i}", release) for i in (1, 2, 3)]
    other = await _entered(limiter, "198.51.101.1", release)  # the next /24
    again = await _entered(limiter, "198.51.101.1", release)  # same address: its own cap of 1
    assert [e.is_set() for e in same] == [True, True, False]
    assert other.is_set() and not again.is_set() and limiter.open == 3
    release.set()
    await asyncio.wait_for(asyncio.gather(same[2].wait(), again.wait()), 1)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_slots_cap_and_hand_over_in_arrival_order() -> None:
    slots = Slots(2)
    order: list[int] = []
    release = [asyncio.Event() for _ in range(5)]

    async def user(i: int) -> None:
        async with slots:
            order.append(i)
            await release[i].wait()

    tasks = [asyncio.create_task(user(i)) for i in range(5)]
    await _settle()
    assert order == [0, 1] and slots.free == 0
    for i in (1, 0, 2, 3, 4):  # released out of order: the waiters still enter in arrival order
        release[i].set()
        await _settle()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4] and slots.free == 2


async def test_slots_waiter_cancelled_before_or_after_the_hand_over_loses_no_slot() -> None:
    slots = Slots(1)
    await slots.acquire()
    early = asyncio.create_task(slots.acquire())
    late = asyncio.create_task(slots.acquire())
    last = asyncio.create_task(slots.acquire())
    await _settle()
    early.cancel()  # while waiting: it is skipped
    await _settle()
    slots.release()  # handed to ``late`` ...
    late.cancel()  # ... which is cancelled before it runs: the slot passes on to ``last``
    await asyncio.gather(early, late, return_exceptions=True)
    await asyncio.wait_for(last, 1)
    assert early.cancelled() and late.cancelled() and slots.free == 0
    slots.release()
    assert slots.free == 1


async def test_try_acquire_takes_only_a_free_slot_or_token_and_never_jumps_the_queue() -> None:
    """The hot paths' way in without a coroutine: a free slot or a token now, else False (then they wait
    in line with ``acquire``); a bucket with a waiter queued gives nothing to a newcomer."""
    slots = Slots(1)
    assert slots.try_acquire() and slots.free == 0
    assert not slots.try_acquire()
    waiter = asyncio.create_task(slots.acquire())
    await _settle()
    slots.release()  # handed to the waiter, not left free for a newcomer
    assert not slots.try_acquire()
    await asyncio.wait_for(waiter, 1)
    slots.release()
    assert slots.free == 1
    now = [0.0]
    bucket = TokenBucket(rate=20, burst=1, clock=lambda: now[0])
    assert bucket.try_acquire() and not bucket.try_acquire()  # the one token, then none until 50 ms
    queued = asyncio.create_task(bucket.acquire())
    await _settle()
    now[0] = 1.0  # a token is due now, but the queued acquirer holds the line
    assert not bucket.try_acquire()
    await asyncio.wait_for(queued, 1)
    assert not bucket.try_acquire()  # it took that token


def test_slots_need_one() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Slots(0)


def test_prefix_of_is_the_slash_24_or_slash_48() -> None:
    assert prefix_of("192.0.2.77") == "192.0.2.0/24"
    assert prefix_of("2001:db8:1:2::5") == "2001:db8:1::/48"


async def test_token_bucket_rate() -> None:
    bucket = TokenBucket(rate=200, burst=1)
    t0 = time.monotonic()
    for _ in range(41):
        await bucket.acquire()
    assert time.monotonic() - t0 >= 0.18  # 40 tokens at 200/s after the first


@pytest.mark.parametrize(
    ("address", "inner"),
    [("64:ff9b::7f00:1", "127.0.0.1"), ("2002:a00:1::1", "10.0.0.1"), ("::7f00:1", "127.0.0.1"),
     ("::ffff:0:c0a8:101", "192.168.1.1"), ("::ffff:7f00:1", "127.0.0.1"), ("2001:db8::1", None), ("::1", None),
     ("::", None)],
)
def test_embedded_ipv4(address: str, inner: str | None) -> None:
    found = embedded_ipv4(ipaddress.IPv6Address(address))
    assert (str(found) if found else None) == inner


def test_embedded_global_ipv4_is_allowed_and_an_excluded_one_is_excluded() -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address("64:ff9b::808:808")) is None  # 8.8.8.8 via NAT64
    excluded = AddressPolicy(exclude=ExcludeList.from_lines(["8.8.8.0/24"]))
    assert excluded.refusal(ipaddress.ip_address("2002:808:808::1")) is FailureClass.EXCLUDED
