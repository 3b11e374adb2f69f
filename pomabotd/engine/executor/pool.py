"""A supervised process pool: started up front, rebuilt when it breaks, killed when it hangs.

`concurrent.futures.ProcessPoolExecutor` on the `forkserver` context: workers fork from a small
server that preloaded the runtime, not from a daemon holding a cycle's data. The executor cannot
replace a dead worker (it marks the whole pool broken) nor stop a stuck one, so this class does
both: `rebuild` replaces a broken pool and checks the new one answers, and `busy`/`kill` let the
runtime hard-kill a worker whose market ran far past its time in code the interpreter cannot
interrupt. A pool that dies again as soon as it is rebuilt is a crash loop, reported instead of
retried forever.

A worker can also stall outside any market: stopped (SIGSTOP) while idle, it may hold the
executor's call queue so that no other worker takes work either. `stalled` names the workers
that stood still while work waited for them, for the runtime to kill.

Each worker leads its own process group, which whatever it starts (a plugin's helper process)
inherits: tearing the pool down kills those groups, and every process a worker had started, so
nothing a worker started outlives the pool or keeps pomabotd from exiting.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import forkserver, resource_tracker
from multiprocessing.sharedctypes import RawArray
from typing import Any, Final

import psutil

from pomabotd.engine.executor import worker
from pomabotd.engine.executor.meter import descendant_pids
from pomabotd.engine.watchdog import BUSY, MARKET, PID, STEPS, WORDS
from pomabotd.errors import PoolCrashLoopError

__all__ = ["WorkerPool", "busy_slots", "release_helpers", "use_helpers"]

#: Consecutive pools that may die while starting before the runtime gives up.
_START_ATTEMPTS: Final = 3
_START_TIMEOUT_S: Final = 60.0
_EXIT_GRACE_S: Final = 2.0
_PRELOAD: Final = ["pomabotd.engine.executor.worker", "pomabotd.config", "pomabotd"]

_live_lock = threading.Lock()
#: Pools (and local Dask clusters) of this process that use multiprocessing's helpers.
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
        #: Submissions not finished yet, and when each was made (monotonic ns), for `stalled`
        #: to know whether work waits, and since when at most.
        self._outstanding: dict[Future[Any], int] = {}
        #: Per worker: the steps it had taken when last seen, and since when it stood still.
        self._seen: dict[int, tuple[int, int]] = {}
        #: Set when an abandoned run left work running: the pool is replaced before it is used.
        self._stale = False
        #: Every worker the current executor started (its own table forgets dead ones).
        self._pids: set[int] = set()
        self._procs: dict[int, psutil.Process] = {}

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
        if self._executor is not None and (self._stale or self._lost_a_worker()):
            self.rebuild()
        if self._executor is None:
            raise BrokenProcessPool("the worker pool is not running")
        future = self._executor.submit(fn, *args)
        self._outstanding[future] = time.monotonic_ns()
        return future

    def _lost_a_worker(self) -> bool:
        """Whether a worker of this pool was killed while nothing was in flight on it: the
        executor may not have noticed yet (its manager thread lags under load) and would take
        the submission with a worker short, then break under it or never count the restart."""
        return bool(self._killed) and all(future.done() for future in self._outstanding)

    def abandon(self, future: Future[Any]) -> None:
        """Nobody waits for `future` any more: it is cancelled if still queued; if a worker
        may already run it, the pool is replaced before its next submission, so that work
        nobody wants neither holds a worker nor delays the next run."""
        if not future.cancel() and not future.done():
            self._stale = True

    def stalled(self, after_ns: int) -> list[tuple[int, str]]:
        """`(pid, why)` of each worker that stood still for `after_ns` while it was needed.

        A worker moves when it takes a submission, finishes a task or a submission, or is
        inside a market (whose own timeout judges it). It is needed while it runs a
        submission, and, idle, while submissions wait that no worker took: an idle worker
        stopped while it held the call queue keeps every other worker from taking work. A
        stopped worker (SIGSTOP) never moves and is always needed.

        An idle worker has not taken work for longer than the oldest submission waiting has
        existed: time it sat idle before (between runs, however long) never counts, even
        when a run's first look comes before its workers took its first submissions.
        """
        slots = self._slots
        if slots is None:
            return []
        now = time.monotonic_ns()
        self._outstanding = {future: made for future, made in self._outstanding.items()
                             if not future.done()}
        words = [tuple(slots[base : base + WORDS]) for base in range(0, len(slots), WORDS)]
        words = [word for word in words if word[PID] and word[PID] not in self._killed]
        busy = sum(1 for word in words if word[BUSY])
        waiting = len(self._outstanding) - busy
        stopped_pids = {word[PID] for word in words if self._stopped(word[PID])}
        found = []
        for word in words:
            pid, steps = word[PID], word[STEPS]
            last_steps, since = self._seen.get(pid, (steps, now))
            stopped = pid in stopped_pids
            moving = not stopped and (steps != last_steps or word[MARKET] != 0)
            # While a worker is stopped, the idle ones wait on it (it may hold the queue).
            needed = stopped or word[BUSY] or (waiting > 0 and not stopped_pids)
            if moving or not needed:
                since = now
            elif not stopped and not word[BUSY]:  # needed because submissions wait
                since = max(since, min(self._outstanding.values()))
            if now - since > after_ns:
                still = f"{(now - since) / 1e9:.1f} s"
                found.append((pid, (
                    f"was stopped for {still}" if stopped
                    else f"made no progress for {still} inside its work" if word[BUSY]
                    else f"took no work for {still} while {waiting} submissions waited"
                )))
            self._seen[pid] = (steps, since)
        return found

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

    def _stopped(self, pid: int) -> bool:
        """Whether a worker is stopped (SIGSTOP, SIGTSTP, a tracer): it runs nothing."""
        try:
            proc = self._procs.get(pid) or self._procs.setdefault(pid, psutil.Process(pid))
            return proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
        except (psutil.Error, OSError):
            return False

    def pids(self) -> list[int]:
        """The worker processes of the current pool."""
        executor = self._executor
        processes: dict[int, Any] = getattr(executor, "_processes", None) or {}
        self._pids.update(processes)
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
        slots = RawArray("q", WORDS * self.workers)
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
        self._seen = {}
        self._outstanding = {}
        self._stale = False
        self._pids = set()
        self._procs = {}
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
            self.pids()
        except (BrokenProcessPool, FutureTimeout):
            del executor, counter
            self._teardown(kill=True)
            return False
        return True

    def _teardown(self, *, kill: bool) -> None:
        """Shut the executor down; `kill` (or a worker that will not exit) means SIGKILL.

        Whatever the workers started goes too: every process below them now, and whatever
        is left in their process groups once they are gone.
        """
        stuck = {pid for pid, _ in self.busy()}
        kill = kill or self._stale
        executor, self._executor = self._executor, None
        self._slots = None
        self._outstanding = {}
        self._stale = False
        if executor is None:
            return
        pids = self._pids | set(getattr(executor, "_processes", None) or {})
        procs = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
        started = _started_by(procs)
        for proc in started:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        executor.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if kill or proc.pid in stuck:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        _, alive = psutil.wait_procs(procs, timeout=_EXIT_GRACE_S)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        _kill_groups(pids)
        executor.shutdown(wait=True)
        del executor
        gc.collect()  # release the executor's semaphores before the tracker may stop


def _started_by(workers: list[psutil.Process]) -> list[psutil.Process]:
    """Every process running below the workers now (read as the meter reads them, which
    works under systemd's `ProcSubset=pid` too)."""
    found = []
    for worker_process in workers:
        for pid in descendant_pids(worker_process.pid):
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(pid))
    return found


def _kill_groups(leaders: Collection[int]) -> None:
    """SIGKILL what is left of the workers' process groups: what they started and left
    behind (orphans keep their group). A group's id stays reserved while it has members."""
    for pid in leaders:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def busy_slots(slots: Sequence[int], killed: Collection[int] = ()) -> list[tuple[int, int]]:
    """`(pid, started_ns)` of each slot whose worker is inside an evaluator call.

    `slots` holds (pid, started_ns) pairs that the workers write while this reads them. Each
    start is read exactly once: a worker that clears its slot between two reads must not look
    like a market started at time 0, which the supervisor would kill as hopelessly late.
    """
    found = []
    for index in range(0, len(slots), WORDS):
        started = slots[index + MARKET]
        if started:
            pid = slots[index + PID]
            if pid not in killed:
                found.append((pid, started))
    return found


def use_helpers() -> None:
    """Count one more user of `multiprocessing`'s helper processes besides the pools (a local
    Dask cluster starts its workers through them, and they keep the resource tracker's pipe:
    stopping it under them would wait for them, and unlink their semaphores)."""
    global _live_pools
    with _live_lock:
        _live_pools += 1


def release_helpers() -> None:
    """One user fewer; the last one stops the helpers, so no child process is left."""
    global _live_pools
    with _live_lock:
        _live_pools -= 1
        last = _live_pools == 0
    if last:
        gc.collect()
        _stop_helpers()


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
