"""Where a running cycle is, for whoever must say where one stalled.

A cycle moves through its phases: loading its sources, evaluating, marking and selecting,
writing. The sources report themselves while they fetch (`loading`), through a context
variable the cycle sets (`tracking`), so that no loader needs an extra argument; the
evaluation reports how many markets are done. The error of a cycle abandoned at its deadline
and the daemon's `/healthz` read `describe()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

__all__ = [
    "EVALUATING",
    "LOADING",
    "SELECTING",
    "WRITING",
    "CycleProgress",
    "loading",
    "tracking",
]

LOADING: Final = "loading"
EVALUATING: Final = "evaluating"
SELECTING: Final = "marking and selecting"
WRITING: Final = "writing"


class CycleProgress:
    """The phase one cycle is in, since when, and what it is loading or how far it evaluated."""

    def __init__(self) -> None:
        self.phase = "starting"
        self.since = time.monotonic()
        self.done = 0
        self.total = 0
        self._loading: list[str] = []

    def enter(self, phase: str) -> None:
        """The cycle moves on to `phase`."""
        self.phase = phase
        self.since = time.monotonic()

    def evaluated(self, done: int, total: int) -> None:
        """`done` of about `total` markets are evaluated (an `on_progress` callback)."""
        self.done, self.total = done, total

    def describe(self) -> str:
        """Where the cycle is, in words: `loading polymarket (sources.markets, from the
        default)`, `evaluating (1,200 of 5,000 markets done)` (the total is an estimate until
        the evaluation ends), `writing`."""
        if self.phase == LOADING and self._loading:
            return "loading " + " and ".join(self._loading)
        if self.phase == EVALUATING:
            if not self.total:
                return "evaluating (no market done yet)"
            return f"evaluating ({self.done:,} of {self.total:,} markets done)"
        return self.phase


_CURRENT: ContextVar[CycleProgress | None] = ContextVar("pomabotd_cycle_progress", default=None)


@contextmanager
def tracking(progress: CycleProgress) -> Iterator[CycleProgress]:
    """Make `progress` the one that `loading` reports to, in this context and the tasks it
    starts."""
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)


@contextmanager
def loading(what: str) -> Iterator[None]:
    """Say that `what` (a source, named as a message names it) is being loaded meanwhile; a
    no-op outside a tracked cycle. A cycle cancelled meanwhile still says it was loading it."""
    progress = _CURRENT.get()
    if progress is None:
        yield
        return
    progress._loading.append(what)
    try:
        yield
    except asyncio.CancelledError:
        raise  # the cycle stops while loading it: that is where it was
    except BaseException:
        progress._loading.remove(what)
        raise
    progress._loading.remove(what)
