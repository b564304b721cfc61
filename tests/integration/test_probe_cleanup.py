"""A probe that times out or is cancelled in any phase leaves no socket, task or connection slot behind.

Real loopback sockets: a server that falls silent in the chosen phase (``worlds.stalling_smtp``), the
observation probe (``probe_smtp``) and the crafted-hello probe (``probe_hello``) each inside a per-address
slot as the scan holds them. After each run the server must have seen our close, this process must hold
exactly the file descriptors it held before, the limiter no slot and the loop no extra task.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from scanner.config import ProbeConfig
from scanner.net.limits import KeyedLimiter
from scanner.smtp.session import make_probe_context, probe_smtp
from scanner.status import ProbeStatus
from scanner.tls.enumeration import AnswerKind, version_hello
from scanner.tls.probe import probe_hello
from scanner.tls.versions import TlsVersion
from worlds.ports import loopback_host, pick_loopback_block
from worlds.stalling_smtp import PHASES, StalledConnect, StallingSmtpServer

FAST = ProbeConfig(ehlo_name="scanner.test", connect_timeout=0.3, banner_timeout=0.3, command_timeout=0.3,
                   tls_timeout=0.3)
SLOW = ProbeConfig(ehlo_name="scanner.test", connect_timeout=30.0, banner_timeout=30.0, command_timeout=30.0,
                   tls_timeout=30.0)
ALL_PHASES = ("connect", *PHASES)


@pytest.fixture(scope="module")
def block() -> str:
    return pick_loopback_block()


def _sockets_to(address: str, port: int) -> int:
    """This process's open TCP sockets whose peer is ``address``:``port`` (IPv4), read from /proc.

    Counting every descriptor of the process instead raced with unrelated ones that other tests'
    leftovers (pipes, log files, garbage-collected transports) open and close at any moment.
    """
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:["):-1])
    peer = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[2] == peer and row[9] in inodes)


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def _world(block: str, phase: str) -> AbstractContextManager[StallingSmtpServer | StalledConnect]:
    address = loopback_host(block, 2)
    return StalledConnect(address) if phase == "connect" else StallingSmtpServer(address, phase)


Probe = Callable[[str, int, ProbeConfig], Awaitable[object]]


async def _observe(address: str, port: int, config: ProbeConfig) -> object:
    result = await probe_smtp(address, port, "stall.test", config, make_probe_context())
    assert result.status is ProbeStatus.TIMEOUT, result.detail
    return result


async def _hello(address: str, port: int, config: ProbeConfig) -> object:
    answer = await probe_hello(address, port, "stall.test", config, version_hello(TlsVersion.TLS12))
    assert answer.kind is AnswerKind.UNTESTABLE and "timeout" in answer.detail, answer
    return answer


PROBES: dict[str, Probe] = {"observation": _observe, "hello": _hello}


def _cases() -> Iterator[tuple[str, str, bool]]:
    for probe in PROBES:
        for phase in ALL_PHASES:
            for cancel in (False, True):
                yield probe, phase, cancel


@pytest.mark.parametrize(("probe", "phase", "cancel"), list(_cases()),
                         ids=[f"{p}-{ph}-{'cancel' if c else 'timeout'}" for p, ph, c in _cases()])
async def test_nothing_left_behind(block: str, probe: str, phase: str, cancel: bool) -> None:
    limiter = KeyedLimiter(1, 0.0)
    tasks_before = asyncio.all_tasks()
    with _world(block, phase) as server:
        before = _sockets_to(server.address, server.port)  # a stalled connect's filler is one of ours

        async def in_slot(config: ProbeConfig) -> object:
            async with limiter.slot(server.address):
                return await PROBES[probe](server.address, server.port, config)

        if not cancel:
            await in_slot(FAST)
        else:
            work = asyncio.create_task(in_slot(SLOW))
            if isinstance(server, StallingSmtpServer):
                await _until(server.stalled.is_set, f"the probe reached the {phase} stall")
            else:
                await asyncio.sleep(0.2)  # connect() is pending: nothing to observe from the server
            assert not work.done()
            work.cancel()
            with pytest.raises(asyncio.CancelledError):
                await work
        if isinstance(server, StallingSmtpServer):
            await _until(lambda: server.open_connections == 0, "the server saw our socket close")
        assert _sockets_to(server.address, server.port) == before  # our socket is closed, not just forgotten
        # The per-address slot (concurrency 1) was given back: taking it again does not wait for it.
        async with asyncio.timeout(10), limiter.slot(server.address):
            pass
    assert asyncio.all_tasks() == tasks_before
