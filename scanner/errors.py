"""A probe phase's failure (``ProbeFailure``) and the summary of a bug (``describe_bug``).

Socket, asyncio and ssl exceptions are classified where the I/O happens, in the transport seam
(``scanner.net.stream``); the drivers above turn its ``StreamError`` into a ``ProbeFailure`` with the phase.
"""

from __future__ import annotations

import traceback

from scanner.status import FailureClass, Phase

__all__ = ["ProbeFailure", "describe_bug"]


class ProbeFailure(Exception):
    """A probe phase ended without the result we needed; carries what a row needs to say why."""

    def __init__(self, phase: Phase, failure_class: FailureClass, detail: str) -> None:
        super().__init__(f"{phase.value}: {failure_class.value}: {detail}")
        self.phase = phase
        self.failure_class = failure_class
        self.detail = detail


def describe_bug(exc: BaseException) -> str:
    """A compact, single-string traceback summary for rows with status ``internal_error``."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(frames))
    return f"{type(exc).__name__}: {exc} at {where}"[:2000]
