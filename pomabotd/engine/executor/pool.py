"""A supervised process pool: started up front, rebuilt when it breaks, killed when it hangs.

`concurrent.futures.ProcessPoolExecutor` on the `forkserver` context: workers fork from a small
server that preloaded the runtime, not from a daemon holding a cycle's data. The executor cannot
replace a dead worker (it marks the whole pool broken) nor stop a stuck one, so this class does
both: `rebuild` replaces a broken pool and checks the new one answers, and `busy`/`kill` let the
runtime hard-kill a worker whose market ran far past its time in code the interpreter cannot
interrupt. A pool that dies again as soon as it is rebuilt is a crash loop, reported instead of
retried forever.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import forkserver, resource_tracker
from multiprocessing.sharedctypes import RawArray
from typing import Any, Final

import psutil

from pomabotd.engine.executor import worker
from pomabotd.errors import PoolCrashLoopError

__all__ = ["WorkerPool", "busy_slots"]

#: Consecutive pools that may die while starting before the runtime gives up.
_START_ATTEMPTS: Final = 3
_START_TIMEOUT_S: Final = 60.0
_EXIT_GRACE_S: Final = 2.0
_PRELOAD: Final = ["pomabotd.engine.executor.worker", "pomabotd.config", "pomabotd"]

_live_lock = threading.Lock()
_live_pools = 0


class WorkerPool:
    """`workers` processes running `pomabotd.engine.worker` with `evaluator` imported."""

    def __init__(self, workers: int, evaluator: str) -> None:
        if workers < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.workers = workers
        self.evaluator = evaluator
        #: How many worker processes were replaced after a crash or a kill.
        self.restarts = 0
        #: Bumped on every rebuild, so callers can tell the processes changed.
        self.generation = 0
        self._executor: ProcessPoolExecutor | None = None
        self._slots: memoryview | None = None
        self._killed: set[int] = set()
        self._context = multiprocessing.get_context("forkserver")
        self._live = False

    def start(self) -> None:
        """Start every worker now and check each imported the evaluator."""
        global _live_pools
        if self._executor is not None:
            return
        with _live_lock:
            if not self._live:
                _live_pools += 1
                self._live = True
        self._context.set_forkserver_preload(_PRELOAD)
        self._spawn()

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        """Queue a call; raises `BrokenProcessPool` if the pool already broke."""
        if self._executor is None:
            raise BrokenProcessPool("the worker pool is not running")
        return self._executor.submit(fn, *args)

    def rebuild(self) -> None:
        """Replace a broken pool by a fresh one that has proved it can start."""
        self._teardown(kill=True)
        self.restarts += self.workers
        self.generation += 1
        self._spawn()

    def busy(self) -> list[tuple[int, int]]:
        """`(pid, started_ns)` of each worker now inside an evaluator call."""
        slots = self._slots
        if slots is None:
            return []
        return busy_slots(slots, self._killed)

    def kill(self, pid: int) -> bool:
        """SIGKILL one worker of this pool; the pool then breaks and must be rebuilt."""
        if pid in self._killed or pid not in self.pids():
            return False
        self._killed.add(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True

    def pids(self) -> list[int]:
        """The worker processes of the current pool."""
        executor = self._executor
        processes: dict[int, Any] = getattr(executor, "_processes", None) or {}
        return list(processes)

    def close(self) -> None:
        """Stop every worker, and the fork server too when no other pool needs it."""
        global _live_pools
        self._teardown(kill=False)
        with _live_lock:
            if not self._live:
                return
            self._live = False
            _live_pools -= 1
            last = _live_pools == 0
        if last:
            gc.collect()
            _stop_helpers()

    def _spawn(self) -> None:
        for _ in range(_START_ATTEMPTS):
            if self._try_spawn():
                return
            self.restarts += self.workers
        raise PoolCrashLoopError(
            f"the worker pool died {_START_ATTEMPTS} times in a row while starting: evaluator "
            f"{self.evaluator!r} cannot be imported and run in a fresh worker process "
            "(does its module exit, crash or hang on import?)"
        )

    def _try_spawn(self) -> bool:
        """One attempt; a helper so that no executor outlives it in a traceback's frame."""
        slots = RawArray("q", 2 * self.workers)
        counter = self._context.Value("i", 0)
        executor = ProcessPoolExecutor(
            self.workers,
            mp_context=self._context,
            initializer=worker.init_worker,
            initargs=(self.evaluator, slots, counter, os.getpid()),
        )
        self._executor = executor
        self._slots = memoryview(slots).cast("B").cast("q")
        self._killed = set()
        try:
            # Each ping returns only once every worker has started (the shared counter says
            # so), so none is idle while the next is submitted and the executor starts a
            # process for every one of them.
            pings = [
                executor.submit(worker.ping, self.workers, _START_TIMEOUT_S)
                for _ in range(self.workers)
            ]
            for ping in pings:
                ping.result(timeout=_START_TIMEOUT_S + _EXIT_GRACE_S)
        except (BrokenProcessPool, FutureTimeout):
            del executor, counter
            self._teardown(kill=True)
            return False
        return True

    def _teardown(self, *, kill: bool) -> None:
        """Shut the executor down; `kill` (or a worker that will not exit) means SIGKILL."""
        stuck = {pid for pid, _ in self.busy()}
        executor, self._executor = self._executor, None
        self._slots = None
        if executor is None:
            return
        pids = list(getattr(executor, "_processes", None) or {})
        executor.shutdown(wait=False, cancel_futures=True)
        procs = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
        for proc in procs:
            if kill or proc.pid in stuck:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        _, alive = psutil.wait_procs(procs, timeout=_EXIT_GRACE_S)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        executor.shutdown(wait=True)
        del executor
        gc.collect()  # release the executor's semaphores before the tracker may stop


def busy_slots(slots: Sequence[int], killed: Collection[int] = ()) -> list[tuple[int, int]]:
    """`(pid, started_ns)` of each slot whose worker is inside an evaluator call.

    `slots` holds (pid, started_ns) pairs that the workers write while this reads them. Each
    start is read exactly once: a worker that clears its slot between two reads must not look
    like a market started at time 0, which the supervisor would kill as hopelessly late.
    """
    found = []
    for index in range(0, len(slots), 2):
        started = slots[index + 1]
        if started:
            pid = slots[index]
            if pid not in killed:
                found.append((pid, started))
    return found


def _stop_helpers() -> None:
    """Stop the fork server and the resource tracker, so no child process outlives the pools.

    Both are process-wide helpers that `multiprocessing` restarts on demand; it only offers the
    private `_stop` for this.
    """
    helpers = (
        (forkserver._forkserver, "_forkserver_pid"),
        (resource_tracker._resource_tracker, "_pid"),
    )
    for helper, pid_attribute in helpers:
        stop = getattr(helper, "_stop", None)
        if stop is not None and getattr(helper, pid_attribute, None) is not None:
            with contextlib.suppress(OSError, TypeError):
                stop()
