"""What runs inside each Dask worker: pomabotd's guard around the submissions sent there.

A Dask task runs in a thread of its worker. There no signal can interrupt a market and no
market that crashes can be survived, so the task does not evaluate anything itself: it hands
the submission to the guard's local pool (`local.py`: warm processes with the evaluator
imported and the watchdog armed, as many as the worker has threads), watches the slots of
those processes and kills one stuck past its time, and when one dies replaces the pool and
fails the submission with `WorkerLost` (with `timed_out` when it was killed), for the
scheduler's supervisor to corner the market that did it.

The guard is a Dask worker plugin (`Guard`), set up on every worker when pomabotd joins the
cluster and on every worker that joins later, and torn down when pomabotd leaves. Dask starts
its workers as daemonic processes, which `multiprocessing` forbids to have children; the
guard's processes die with their worker all the same (each is tied to it by the kernel, see
`worker.die_with_parent`), so the guard lifts that flag for its own pool.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from typing import Any

import psutil
from distributed import WorkerPlugin

from pomabotd.engine.executor.base import WorkerLost
from pomabotd.engine.executor.local import LocalExecutor
from pomabotd.engine.executor.meter import descendant_pids, pss_bytes
from pomabotd.engine.executor.worker import run_call
from pomabotd.engine.protocol import Job, Task
from pomabotd.engine.supervisor import Supervisor

__all__ = ["Guard", "drop_abandoned", "run_call", "run_submission", "usage"]

#: The guards set up in this worker process, by evaluator.
_GUARDS: dict[str, _Guarded] = {}


class Guard(WorkerPlugin):
    """Sets up, on a Dask worker, the warm local pool that runs `evaluator`'s submissions."""

    def __init__(self, evaluator: str) -> None:
        self.evaluator = evaluator
        self.name = f"pomabotd-guard:{evaluator}"

    async def setup(self, worker: Any) -> None:
        """Import the evaluator here (ConfigError, naming it, when it cannot be), then start
        the pool, whose processes import it too; off the worker's loop."""
        from pomabotd.config import resolve_evaluator

        await asyncio.to_thread(resolve_evaluator, self.evaluator)
        threads = max(1, int(getattr(worker.state, "nthreads", 1)))
        guarded = await asyncio.to_thread(_Guarded.start, self.evaluator, threads)
        old = _GUARDS.pop(self.evaluator, None)
        _GUARDS[self.evaluator] = guarded
        if old is not None:
            await asyncio.to_thread(old.close)

    async def teardown(self, worker: Any) -> None:
        """Stop the pool."""
        guarded = _GUARDS.pop(self.evaluator, None)
        if guarded is not None:
            await asyncio.to_thread(guarded.close)


class _Guarded:
    """A warm local pool and the supervision of one submission at a time per thread."""

    def __init__(self, executor: LocalExecutor, evaluator: str) -> None:
        self.executor = executor
        self.evaluator = evaluator
        self._lock = threading.Lock()
        #: Submissions running in the pool now.
        self.running = 0

    @classmethod
    def start(cls, evaluator: str, workers: int) -> _Guarded:
        _allow_children()
        executor = LocalExecutor(workers, evaluator)
        executor.start()
        return cls(executor, evaluator)

    def close(self) -> None:
        self.executor.close()

    def run(self, tasks: list[Task], job: Job) -> bytes:
        """Evaluate one submission in the pool, killing a process stuck past its time."""
        return asyncio.run(self._run(tasks, job))

    def drop_running(self) -> None:
        """Replace the pool if it runs anything: what it runs was abandoned (each submission
        then ends as lost, and nobody waits for it)."""
        with self._lock:
            if self.running:
                asyncio.run(self.executor.recover())

    async def _run(self, tasks: list[Task], job: Job) -> bytes:
        executor = self.executor
        generation = executor.generation
        supervisor = Supervisor(executor, job, 0, self.evaluator)
        watching = asyncio.create_task(supervisor.watch())
        self.running += 1
        try:
            return await executor.submit(tasks, job)
        except WorkerLost:
            timed_out = supervisor.timeouts > 0
            with self._lock:
                if executor.generation == generation:  # not replaced by another thread yet
                    await executor.recover()
            raise WorkerLost(
                "killed: a market ran past its time" if timed_out else "a worker process died",
                timed_out,
            ) from None
        finally:
            self.running -= 1
            watching.cancel()
            await asyncio.wait({watching})


def _allow_children() -> None:
    """Let this (daemonic) Dask worker process start the guard's processes, with the
    allocator they would have anywhere else.

    A Dask nanny starts its worker with `MALLOC_TRIM_THRESHOLD_` set, which also freezes
    glibc's threshold for mapping large blocks: every numpy array and block of lines a worker
    frees is then unmapped, and mapped and faulted in again for the next one. The guard's
    processes evaluated a million markets with a third more CPU time so; without it, as
    much as the local pool's.
    """
    process: Any = multiprocessing.current_process()
    process._config["daemon"] = False
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)


def run_submission(evaluator: str, tasks: list[Task], job: Job) -> bytes:
    """The Dask task: the guard of `evaluator` on this worker runs the submission."""
    guarded = _GUARDS.get(evaluator)
    if guarded is None:
        raise RuntimeError(f"pomabotd's guard for {evaluator!r} is not set up on this Dask "
                           "worker")
    return guarded.run(tasks, job)


async def drop_abandoned() -> None:
    """Run on every worker when pomabotd abandoned submissions (a cancelled cycle): each guard
    running one replaces its pool (off the worker's loop), so that no work nobody waits for
    holds the worker."""
    for guarded in list(_GUARDS.values()):
        await asyncio.to_thread(guarded.drop_running)


def usage() -> tuple[int, float]:
    """This worker's summed PSS (its guard's processes included) in bytes, and their CPU
    time in seconds."""
    me = os.getpid()
    memory = 0
    cpu = 0.0
    for pid in (me, *descendant_pids(me)):
        memory += pss_bytes(pid) or 0
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        cpu += times.user + times.system
    return memory, cpu
