"""probe_smtp against real sockets: one listener per server behaviour, each with its own conclusion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from scanner.config import ProbeConfig
from scanner.smtp.session import make_probe_context, probe_smtp
from scanner.status import FailureClass, Phase, ProbeStatus
from worlds.ports import loopback_host, pick_loopback_block
from worlds.smtp import Behaviour, SmtpFarm, SmtpServerSpec

# behaviour → (status, failure phase or None, failure class or None)
CASES: dict[Behaviour, tuple[ProbeStatus, Phase | None, FailureClass | None]] = {
    Behaviour.NORMAL: (ProbeStatus.STARTTLS_OK, None, None),
    Behaviour.MULTILINE_BANNER: (ProbeStatus.STARTTLS_OK, None, None),
    Behaviour.NO_STARTTLS: (ProbeStatus.NO_STARTTLS, None, None),
    Behaviour.EHLO_5XX_THEN_HELO: (ProbeStatus.NO_STARTTLS, None, None),
    Behaviour.STARTTLS_454: (ProbeStatus.STARTTLS_REJECTED, Phase.STARTTLS, FailureClass.SMTP_4XX),
    Behaviour.BANNER_421: (ProbeStatus.THROTTLED, Phase.BANNER, FailureClass.SMTP_421),
    Behaviour.BANNER_554: (ProbeStatus.SMTP_REJECTED, Phase.BANNER, FailureClass.SMTP_5XX),
    Behaviour.SILENT: (ProbeStatus.TIMEOUT, Phase.BANNER, FailureClass.TIMEOUT),
    Behaviour.SLOW_BANNER: (ProbeStatus.TIMEOUT, Phase.BANNER, FailureClass.TIMEOUT),
    Behaviour.RESET_AFTER_EHLO: (ProbeStatus.THROTTLED, Phase.EHLO, None),
}
BEHAVIOURS = list(CASES)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SmtpFarm]]:
    tmp: Path = tmp_path_factory.mktemp("probe")
    ca = trustme.CA()
    cert = ca.issue_cert("mx.probe.test")
    pem = tmp / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    block = pick_loopback_block()
    specs = [
        SmtpServerSpec(address=loopback_host(block, 10 + i), port=25, hostname="mx.probe.test", behaviour=b,
                       cert_file=pem, key_file=pem, banner_delay=5.0 if b is Behaviour.SLOW_BANNER else 0.0)
        for i, b in enumerate(BEHAVIOURS)
    ]
    server = SmtpFarm(specs)
    server.start_in_thread()
    try:
        yield block, server
    finally:
        server.stop_in_thread()


CONFIG = ProbeConfig(ehlo_name="scanner.test", banner_timeout=1.0, command_timeout=2.0, tls_timeout=2.0,
                     connect_timeout=2.0)


@pytest.mark.parametrize("behaviour", BEHAVIOURS, ids=[b.value for b in BEHAVIOURS])
async def test_each_behaviour_has_its_conclusion(farm: tuple[str, SmtpFarm], behaviour: Behaviour) -> None:
    block, _ = farm
    address = loopback_host(block, 10 + BEHAVIOURS.index(behaviour))
    result = await probe_smtp(address, 25, "mx.probe.test", CONFIG, make_probe_context())
    status, phase, failure = CASES[behaviour]
    assert result.status is status, result.detail
    assert (result.phase if result.failure_class else None) is phase
    if failure is not None:
        assert result.failure_class is failure
    if status is ProbeStatus.STARTTLS_OK:
        assert result.tls is not None and result.tls.chain and result.tls.chain_complete
        assert result.starttls_code == 220 and result.banner_code == 220
        assert set(result.timings_ms) >= {Phase.CONNECT, Phase.BANNER, Phase.EHLO, Phase.STARTTLS,
                                          Phase.TLS_HANDSHAKE}
    if behaviour is Behaviour.EHLO_5XX_THEN_HELO:
        assert result.used_helo and result.starttls_advertised is False
    if behaviour is Behaviour.STARTTLS_454:
        # The EHLO data gathered before the refusal is kept.
        assert result.starttls_advertised and result.ehlo_extensions


async def test_refused_port_is_unreachable() -> None:
    address = loopback_host(pick_loopback_block(), 99)  # nothing listens there
    result = await probe_smtp(address, 25, None, CONFIG, make_probe_context())
    assert (result.status, result.phase, result.failure_class) == (
        ProbeStatus.UNREACHABLE, Phase.CONNECT, FailureClass.REFUSED)


async def test_whole_probe_deadline_holds(farm: tuple[str, SmtpFarm]) -> None:
    block, _ = farm
    silent = loopback_host(block, 10 + BEHAVIOURS.index(Behaviour.SILENT))
    config = ProbeConfig(ehlo_name="scanner.test", banner_timeout=30.0, probe_deadline=0.5)
    result = await probe_smtp(silent, 25, None, config, make_probe_context())
    assert result.status is ProbeStatus.TIMEOUT and result.total_ms < 1500
