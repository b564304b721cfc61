"""Past an address's probe deadline no back-off is slept and no unopened session is counted."""

from __future__ import annotations

import asyncio

from scanner.probing import _sleep_until
from scanner.tls.enumeration import AnswerKind, HelloAnswer, HelloRequest, posture_plan
from scanner.tls.probe import drive_plan


def test_a_plan_past_its_deadline_sleeps_nothing() -> None:
    slept: list[float] = []

    async def run() -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() - 1.0  # already past
        sleep = _sleep_until(deadline)

        async def recording_sleep(delay: float) -> None:
            before = loop.time()
            await sleep(delay)
            slept.append(loop.time() - before)

        async def late(_: HelloRequest) -> HelloAnswer:
            return HelloAnswer(AnswerKind.UNTESTABLE, detail="probe deadline reached")

        result = await drive_plan(posture_plan(), late, recording_sleep)
        return result.sessions

    assert asyncio.run(run()) > 0
    assert slept and max(slept) < 0.5  # the plan's 2 s + 8 s back-off was not slept
