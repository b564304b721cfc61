"""One host-name normaliser (scanner.names), and every stage that compares names agrees with it."""

from __future__ import annotations

import pytest

from scanner.certs import hostname_matches_pattern
from scanner.dns.records import MxRecord, plan_mx
from scanner.input import normalize_domain
from scanner.names import host_key, normalize_host
from scanner.net.addresses import ExcludeList
from scanner.policy.dane import tlsa_name
from scanner.policy.judge import mx_matches
from scanner.providers import ProviderMapper

# Spellings a resolver, a list or a policy hands over for one name.
SPELLINGS = ["mx.bücher.example", "MX.Bücher.Example.", " mx.xn--bcher-kva.example ", "MX.XN--BCHER-KVA.EXAMPLE."]
CANONICAL = "mx.xn--bcher-kva.example"


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_has_one_form(spelling: str) -> None:
    assert normalize_host(spelling) == host_key(spelling) == CANONICAL
    assert normalize_domain(spelling) == CANONICAL


@pytest.mark.parametrize("text", ["", ".", " . ", "a..example", "mx.\udcff.example"])
def test_what_cannot_be_a_host_name(text: str) -> None:
    assert normalize_host(text) is None
    assert host_key(text) == text.strip().removesuffix(".").lower()  # still a key, never an exception


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_the_stages_agree_on_a_name(spelling: str) -> None:
    """MX planning, the exclude list, providers, certificate names, MTA-STS and DANE: one name each."""
    plan = plan_mx([MxRecord(10, spelling), MxRecord(20, CANONICAL)])
    assert [h.exchange for h in plan.hosts] == [CANONICAL]  # the same host: kept once
    assert ExcludeList.from_lines(["xn--bcher-kva.example"]).excludes_name(spelling)
    assert ProviderMapper().provider(spelling) == "xn--bcher-kva.example"
    assert hostname_matches_pattern(CANONICAL, spelling)
    assert mx_matches(CANONICAL, spelling)
    assert tlsa_name(spelling) == f"_25._tcp.{CANONICAL}"
