"""A server that resets every second TLS session: enumeration must retry, never read it as a refusal.

Before the fix a reset after the ClientHello counted as ``rejected_close``, so whichever version's
session happened to be reset came out "rejected" (``tls_version TLSv1.3`` but ``ver_tls1_3
rejected_close``). A reset answers nothing about the offer: it is untestable and retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from scanner.config import ProbeConfig
from scanner.tls.enumeration import EnumerationResult, HelloAnswer, HelloRequest, posture_plan
from scanner.tls.probe import drive_plan, probe_hello
from worlds.ports import loopback_host, pick_loopback_block
from worlds.smtp import Behaviour, SmtpFarm, SmtpServerSpec

HOST = "mx.reset.test"
CONFIG = ProbeConfig(ehlo_name="scanner.test", per_ip_interval=0, tls_timeout=3.0, connect_timeout=2.0)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Behaviour, str]]:
    tmp: Path = tmp_path_factory.mktemp("reset")
    pem = tmp / "server.pem"
    trustme.CA().issue_cert(HOST).private_key_and_cert_chain_pem.write_to_path(str(pem))
    block = pick_loopback_block()
    addresses = {Behaviour.NORMAL: loopback_host(block, 10), Behaviour.RESET_EVERY_OTHER_TLS: loopback_host(block, 11)}
    server = SmtpFarm([SmtpServerSpec(address=a, port=25, hostname=HOST, behaviour=b, cert_file=pem, key_file=pem)
                       for b, a in addresses.items()])
    server.start_in_thread()
    try:
        yield addresses
    finally:
        server.stop_in_thread()


async def enumerate_posture(address: str) -> EnumerationResult:
    async def session(request: HelloRequest) -> HelloAnswer:
        return await probe_hello(address, 25, HOST, CONFIG, request)

    async def no_wait(_seconds: float) -> None:
        await asyncio.sleep(0)

    return await drive_plan(posture_plan(), session, sleep=no_wait)


async def test_resets_are_retried_and_give_the_verdicts_of_a_normal_server(farm: dict[Behaviour, str]) -> None:
    normal = await enumerate_posture(farm[Behaviour.NORMAL])
    flaky = await enumerate_posture(farm[Behaviour.RESET_EVERY_OTHER_TLS])
    assert flaky.versions == normal.versions
    assert flaky.complete
    assert flaky.sessions > normal.sessions  # the reset sessions were retried
