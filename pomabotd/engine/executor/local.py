"""The local backend: a supervised pool of worker processes on this machine (`pool.py`).

Workers fork from a fork server that preloaded the runtime, import the evaluator once, and run
each market under their own watchdog (`worker.py`, `engine/watchdog.py`); each publishes, in a
slot of an array shared with this process, when its current market started, whether it runs a
submission and how many steps it took, so that the supervisor can kill a worker stuck where its
watchdog cannot reach, or one that stands still (stopped, or idle while work waits). They read
their tasks' byte ranges from this process's open files themselves (`shared.py`). A worker that
dies breaks the whole pool (`concurrent.futures` cannot replace one worker): every submission in
flight fails with `WorkerLost`, and `recover` starts a fresh pool.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, TypeVar

from pomabotd.engine.executor import worker
from pomabotd.engine.executor.base import Capabilities, Gauge, Sharing, WorkerLost
from pomabotd.engine.executor.meter import Meter, descendant_pids
from pomabotd.engine.executor.pool import WorkerPool
from pomabotd.engine.executor.shared import ON_THIS_MACHINE
from pomabotd.engine.protocol import Job, Task

if TYPE_CHECKING:
    from pomabotd.engine.schedule import BatchSettings

__all__ = ["LocalExecutor"]

_R = TypeVar("_R")


class LocalExecutor:
    """`workers` processes of this machine running `evaluator`."""

    name = "local"
    capabilities = Capabilities(interrupts=True, kills=True, shares_files=True)

    def __init__(self, workers: int, evaluator: str) -> None:
        self._pool = WorkerPool(workers, evaluator)
        self._pids: list[int] = []
        self._pids_of = -1

    @classmethod
    def from_settings(cls, settings: BatchSettings) -> LocalExecutor:
        """`batch.workers` processes running `batch.evaluator`."""
        return cls(settings.workers, settings.evaluator)

    @property
    def workers(self) -> int:
        """The pool's size."""
        return self._pool.workers

    @property
    def generation(self) -> int:
        """Bumped each time the pool is replaced."""
        return self._pool.generation

    @property
    def restarts(self) -> int:
        """Worker processes replaced after a crash or a kill."""
        return self._pool.restarts

    def start(self) -> None:
        """Start every worker and check each imported the evaluator."""
        try:
            self._pool.start()
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        """Stop the workers, and the pool's helpers when no other pool needs them."""
        self._pool.close()

    def submit(self, tasks: list[Task], job: Job) -> asyncio.Future[bytes]:
        """Queue the submission on the pool."""
        try:
            future = self._pool.submit(worker.run_submission, tasks, job)
        except BrokenProcessPool:
            raise WorkerLost("the worker pool broke") from None
        return asyncio.ensure_future(self._answer(future))

    async def _answer(self, future: Future[bytes]) -> bytes:
        """The pool's answer; a broken pool is a lost worker, and a submission nobody awaits
        any more (a cancelled run) is abandoned."""
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            raise WorkerLost("a worker of the pool died") from None
        except asyncio.CancelledError:
            self._pool.abandon(future)
            raise

    async def recover(self) -> None:
        """Replace the broken pool by a fresh one that has proved it can start."""
        self._pool.rebuild()

    def busy(self) -> list[tuple[int, int]]:
        """`(pid, started_ns)` of each worker inside a market."""
        return self._pool.busy()

    def kill(self, worker: int) -> bool:
        """SIGKILL the worker with pid `worker`."""
        return self._pool.kill(worker)

    def stalled(self, after_ns: int) -> list[tuple[int, str]]:
        """Workers stopped, or standing still while work waits for them (`WorkerPool`)."""
        return self._pool.stalled(after_ns)

    def worker_names(self) -> list[str]:
        """The workers' process ids."""
        return [str(pid) for pid in self._pool.pids()]

    def sharing(self) -> Sharing:
        """Workers open this process's descriptors."""
        return ON_THIS_MACHINE

    def gauge(self) -> Gauge:
        """This process and every process its pool runs on."""
        return Meter(self.process_ids)

    def process_ids(self) -> list[int]:
        """This process and every process its pool runs on (fork server, resource tracker,
        workers). Looked up once per pool generation rather than per call: walking the
        process table for descendants costs milliseconds."""
        generation = self._pool.generation
        if generation != self._pids_of or not self._pids:
            me = os.getpid()
            self._pids = [me, *descendant_pids(me)]
            self._pids_of = generation
        return self._pids

    async def map(self, fn: Callable[..., _R], calls: Sequence[tuple[Any, ...]]) -> list[_R]:
        """`fn(*args)` for each of `calls`, spread over the pool, in order."""
        submitted = [self._pool.submit(worker.run_call, fn, *args) for args in calls]
        try:
            return list(await asyncio.gather(*map(asyncio.wrap_future, submitted)))
        except BaseException:
            for future in submitted:
                self._pool.abandon(future)
            raise
