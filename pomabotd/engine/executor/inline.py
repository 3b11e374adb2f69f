"""The in-process backend (`batch.workers = 0`, and small cycles of the built-in evaluator).

Tasks run here, one submission at a time, with the same code a worker runs (`chunk.py`) under
the same per-market watchdog. Timeouts need a signal handler, which only the main thread can
own: elsewhere markets run without a time limit, and a hang the interpreter cannot interrupt
hangs the caller, which is the price of having no workers.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pomabotd.engine.chunk import evaluate_tasks
from pomabotd.engine.executor.base import Capabilities, Gauge, Sharing
from pomabotd.engine.executor.meter import Meter
from pomabotd.engine.executor.shared import HERE
from pomabotd.engine.protocol import Job, Task
from pomabotd.engine.watchdog import Evaluator, inline_state

if TYPE_CHECKING:
    from pomabotd.engine.schedule import BatchSettings

__all__ = ["InlineExecutor"]

_R = TypeVar("_R")


class InlineExecutor:
    """Runs every submission in this process, in order, as it is submitted."""

    name = "inline"
    capabilities = Capabilities(interrupts=True, kills=False, shares_files=True)

    def __init__(self, evaluator: str) -> None:
        self.evaluator = evaluator
        self.restarts = 0
        self._fn: Evaluator | None = None

    @classmethod
    def from_settings(cls, settings: BatchSettings) -> InlineExecutor:
        """The settings' evaluator, here."""
        return cls(settings.evaluator)

    @property
    def workers(self) -> int:
        """None besides this process."""
        return 0

    def start(self) -> None:
        """Import the evaluator here."""
        if self._fn is None:
            from pomabotd.config import resolve_evaluator

            self._fn = resolve_evaluator(self.evaluator)

    def close(self) -> None:
        """Nothing runs elsewhere; forget the evaluator."""
        self._fn = None

    def submit(self, tasks: list[Task], job: Job) -> asyncio.Future[bytes]:
        """Evaluate `tasks` now; the answer is ready when this returns."""
        self.start()
        assert self._fn is not None
        with inline_state(self._fn) as state:
            answer = evaluate_tasks(tasks, job, state)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        future.set_result(answer)
        return future

    async def recover(self) -> None:
        """Nothing to recover: no worker can be lost."""

    def busy(self) -> list[tuple[int, int]]:
        """Nothing here can be killed."""
        return []

    def kill(self, worker: int) -> bool:
        """Nothing here can be killed."""
        return False

    def stalled(self, after_ns: int) -> list[tuple[int, str]]:
        """Nothing here can be killed."""
        return []

    def worker_names(self) -> list[str]:
        """No worker process: this one."""
        return []

    def sharing(self) -> Sharing:
        """Inputs are read where they are held."""
        return HERE

    def gauge(self) -> Gauge:
        """This process alone."""
        me = [os.getpid()]
        return Meter(lambda: me)

    async def map(self, fn: Callable[..., _R], calls: Sequence[tuple[Any, ...]]) -> list[_R]:
        """`fn(*args)` for each of `calls`, here, in order, with the collector paused."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return [fn(*args) for args in calls]
        finally:
            if enabled:
                gc.enable()
