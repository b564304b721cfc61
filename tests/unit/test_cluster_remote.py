"""A worker's requests for addresses other workers own (scanner.cluster.remote): batches, answers, races.

The owner is an in-process stand-in (its ``ask`` answers when the test lets it), so the order in which
answers arrive is the test's: the races between two batches for one address are played out exactly.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from scanner.cluster.remote import RemoteProbes, Triple
from scanner.probe_cache import SummaryCache
from scanner.records import ProbeSummary
from scanner.status import ProbeStatus

ADDRESS = "192.0.2.25"


def _summary(sni: str) -> ProbeSummary:
    return ProbeSummary(f"{ADDRESS}|25", ProbeStatus.STARTTLS_OK, None, (), None, None, None, False, None, sni=sni)


class _Owner:
    """Answers each call when released: the test decides which batch is answered first."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Triple], asyncio.Event]] = []

    async def ask(self, owner: int, triples: list[Triple]) -> tuple[list[tuple[ProbeSummary, ProbeSummary]],
                                                                   tuple[str, int]]:
        go = asyncio.Event()
        self.calls.append((triples, go))
        await go.wait()
        return [(_summary(first), _summary(host)) for _, first, host in triples], ("life", len(self.calls))


async def _lease(owner: int, address: str) -> int:
    return 0


async def _sent(owner: _Owner, calls: int) -> None:
    for _ in range(200):
        if len(owner.calls) >= calls:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{calls} calls expected, {len(owner.calls)} made")


async def test_a_view_asked_twice_while_in_flight_reaches_every_domain_waiting_for_it(tmp_path: Path) -> None:
    """Two names of one address asked in two batches; the first answer brings the summary, then a third
    domain asks the second name's view again while its batch is still out: the domain already waiting
    for that view must still get it (the second request once replaced the pending view, and that
    domain waited forever: a cluster scan hung with seven domains unfinished)."""
    owner = _Owner()
    remote = RemoteProbes(owner.ask, _lease, lambda owner, lease: None, lambda address: 1, 25)
    with SummaryCache(tmp_path / "remote.sqlite", 100) as cache:
        remote.attach(cache)
        first = remote.request(ADDRESS, "mx1.example", "mx1.example")
        await _sent(owner, 1)
        second = remote.request(ADDRESS, "mx2.example", "mx2.example")
        await _sent(owner, 2)
        waiting = asyncio.ensure_future(remote.view(ADDRESS, "mx2.example"))  # a domain awaits mx2's view
        owner.calls[0][1].set()  # the first batch is answered: the summary is known, mx2's view is not
        assert (await asyncio.wait_for(first, 1)).sni == "mx1.example"
        again = remote.request(ADDRESS, "mx2.example", "mx2.example")  # another domain, the same name
        owner.calls[1][1].set()
        for _, go in owner.calls:
            go.set()
        assert (await asyncio.wait_for(second, 1)).sni == "mx1.example"
        assert (await asyncio.wait_for(again, 1)).probe_id == f"{ADDRESS}|25"
        assert (await asyncio.wait_for(waiting, 1)).sni == "mx2.example"
        assert (await asyncio.wait_for(remote.view(ADDRESS, "mx2.example"), 1)).sni == "mx2.example"
        assert remote.calls == 2  # the view in flight was not asked for again
        await remote.close()


async def test_requests_for_known_answers_make_no_call(tmp_path: Path) -> None:
    owner = _Owner()
    remote = RemoteProbes(owner.ask, _lease, lambda owner, lease: None, lambda address: 1, 25)
    with SummaryCache(tmp_path / "remote.sqlite", 100) as cache:
        remote.attach(cache)
        asked = [remote.request(ADDRESS, "mx1.example", "mx1.example") for _ in range(3)]
        await _sent(owner, 1)
        owner.calls[0][1].set()
        assert {(await asyncio.wait_for(f, 1)).sni for f in asked} == {"mx1.example"}
        assert len(owner.calls[0][0]) == 1  # one pair for three domains
        known = remote.request(ADDRESS, "mx1.example", "mx1.example")
        assert known.done() and remote.calls == 1
        await remote.close()


async def test_an_unsettled_view_serves_its_domain_and_the_next_ask_goes_to_the_owner(tmp_path: Path) -> None:
    """A not_checked view the owner may still turn into an SNI session (scanner.sni.decide_name) is not
    served from this worker's cache: the owner counts every domain's ask, as in one process."""
    answers = iter([False, True])

    async def ask(owner: int, triples: list[Triple]) -> tuple[list[tuple[ProbeSummary, ProbeSummary]],
                                                            tuple[str, int]]:
        settled = next(answers)
        return ([(_summary("mx1.example"), dataclasses.replace(_summary(host), view_settled=settled))
                 for _, _, host in triples], ("life", 1))

    remote = RemoteProbes(ask, _lease, lambda owner, lease: None, lambda address: 1, 25)
    with SummaryCache(tmp_path / "remote.sqlite", 100) as cache:
        remote.attach(cache)
        await asyncio.wait_for(remote.request(ADDRESS, "mx1.example", "busy.example"), 1)
        assert not (await asyncio.wait_for(remote.view(ADDRESS, "busy.example"), 1)).view_settled
        again = remote.request(ADDRESS, "mx1.example", "busy.example")  # another domain: asked again
        assert not again.done()
        await asyncio.wait_for(again, 1)
        assert (await asyncio.wait_for(remote.view(ADDRESS, "busy.example"), 1)).view_settled
        assert remote.calls == 2
        assert remote.request(ADDRESS, "mx1.example", "busy.example").done()  # settled: cached from now on
        assert remote.calls == 2
        await remote.close()
