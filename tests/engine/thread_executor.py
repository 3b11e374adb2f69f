"""A backend made for the tests: submissions run in threads of this process.

It keeps the `Executor` protocol and nothing more (no market can be interrupted, no worker
killed), so a cycle run on it shows that scheduling and supervision rely on the protocol and
the capabilities alone. `LosingExecutor` loses every submission that holds one of `DEADLY`,
as a worker would that such a market kills.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pomabotd.config import resolve_evaluator
from pomabotd.engine.chunk import evaluate_tasks
from pomabotd.engine.executor import Capabilities, Gauge, Sharing, WorkerLost
from pomabotd.engine.executor.meter import Meter
from pomabotd.engine.executor.shared import HERE
from pomabotd.engine.inputs import reader
from pomabotd.engine.protocol import Job, Task
from pomabotd.engine.runtime import BatchSettings
from pomabotd.engine.watchdog import MARKET, WORDS, WorkerState

_R = TypeVar("_R")

#: Markets whose submissions `LosingExecutor` loses.
DEADLY = frozenset({b'"id":"m0003"'})


class ThreadExecutor:
    """Two threads of this process."""

    name = "threads"
    capabilities = Capabilities(interrupts=False, kills=False, shares_files=True)

    def __init__(self, evaluator: str) -> None:
        self.evaluator = evaluator
        self.restarts = 0
        self.recovered = 0
        self.submissions = 0
        self._threads: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: BatchSettings) -> ThreadExecutor:
        return cls(settings.evaluator)

    @property
    def workers(self) -> int:
        return 2

    def start(self) -> None:
        if self._threads is None:
            self._fn = resolve_evaluator(self.evaluator)
            self._threads = ThreadPoolExecutor(2)

    def close(self) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown()

    def submit(self, tasks: list[Task], job: Job) -> asyncio.Future[bytes]:
        assert self._threads is not None
        self.submissions += 1
        return asyncio.wrap_future(self._threads.submit(self._run, tasks, job))

    def _run(self, tasks: list[Task], job: Job) -> bytes:
        state = WorkerState(self._fn, memoryview(bytearray(8 * WORDS)).cast("q"), MARKET)
        return evaluate_tasks(tasks, job, state)

    async def recover(self) -> None:
        self.recovered += 1

    def busy(self) -> list[tuple[int, int]]:
        return []

    def kill(self, worker: int) -> bool:
        return False

    def stalled(self, after_ns: int) -> list[tuple[int, str]]:
        return []

    def worker_names(self) -> list[str]:
        return ["thread-1", "thread-2"]

    def sharing(self) -> Sharing:
        return HERE

    def gauge(self) -> Gauge:
        me = [os.getpid()]
        return Meter(lambda: me)

    async def map(self, fn: Callable[..., _R], calls: Sequence[tuple[Any, ...]]) -> list[_R]:
        return [fn(*args) for args in calls]


class LosingExecutor(ThreadExecutor):
    """Threads that lose any submission holding a `DEADLY` market (all of a task's markets,
    or the one it names with `only`)."""

    name = "losing"

    def _run(self, tasks: list[Task], job: Job) -> bytes:
        markets = reader(job.markets)
        for task in tasks:
            lines = markets.join(task.markets).split(b"\n")
            if task.only >= 0:
                lines = lines[task.only : task.only + 1]
            if any(deadly in line for line in lines for deadly in DEADLY):
                raise WorkerLost("a deadly market")
        return super()._run(tasks, job)
