"""A pool worker's life: tied to pomabotd's, its evaluator imported, its watchdog armed.

Workers fork from multiprocessing's fork server. `init_worker` runs once in each: it makes the
worker die with pomabotd and lead a process group of its own (so the pool can end whatever
it starts), imports the evaluator, claims a slot of the shared array the supervisor reads,
and arms the timeout watchdog. Then the worker serves `run_submission` calls
(the chunk loop, `chunk.py`) and `run_call` (any other work spread over the pool, such as
generating a synthetic input by blocks).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import time
from collections.abc import Callable
from multiprocessing import forkserver
from typing import Any, Final

import psutil

from pomabotd.engine import watchdog
from pomabotd.engine.chunk import evaluate_tasks
from pomabotd.engine.protocol import Job, Task
from pomabotd.engine.watchdog import MARKET, PID, WORDS, WorkerState

__all__ = [
    "die_with_parent", "init_worker", "lead_own_group", "ping", "run_call", "run_submission",
]

#: The pool's shared count of workers that finished `init_worker`; `ping` waits on it.
_STARTED: Any = None
#: How often `ping` looks at that count while the pool starts.
_START_POLL_S: Final = 0.005
_PR_SET_PDEATHSIG_OPTION: Final = 1


def _prctl() -> Callable[..., int] | None:
    """libc's `prctl`, or None where there is none (the check of the parent still runs)."""
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


_PR_SET_PDEATHSIG: Final = _prctl()


def init_worker(evaluator: str, slots: Any, counter: Any, owner: int) -> None:
    """Pool initializer: tie the worker's life to pomabotd's, import the evaluator, claim a
    slot, arm the watchdog.

    `slots` is a shared array of (pid, start_ns) pairs, `counter` a shared int handing out slots,
    `owner` the pid of the pomabotd process that owns the pool.
    """
    global _STARTED
    from pomabotd.config import resolve_evaluator  # the single place that imports plugins

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C and shutdown
    die_with_parent(owner)
    lead_own_group()
    fn = resolve_evaluator(evaluator)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    view = memoryview(slots).cast("B").cast("q")
    view[WORDS * index + PID] = os.getpid()
    _STARTED = counter
    watchdog.arm(WorkerState(fn, view, WORDS * index + MARKET))
    gc.freeze()  # start-up objects are never garbage; keep the collector off them


def die_with_parent(owner: int) -> None:
    """Make the kernel SIGKILL this worker when its parent, the fork server, exits.

    The fork server exits once every holder of its "alive" pipe is gone. Each forked process
    inherits that pipe so it could start processes of its own; a worker never does, so it
    closes its copy and leaves `owner` the only holder. A `kill -9` of pomabotd then ends the
    fork server, which ends every worker, whose exit lets the resource tracker see EOF too.
    If the fork server, or `owner`, is already gone when the request is made, the signal would
    never come: exit now instead.
    """
    server: Any = forkserver._forkserver
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        server._forkserver_alive_fd = None
        with contextlib.suppress(OSError):
            os.close(alive)
    if _PR_SET_PDEATHSIG is not None:
        _PR_SET_PDEATHSIG(_PR_SET_PDEATHSIG_OPTION, signal.SIGKILL, 0, 0, 0)
    try:
        fork_server = psutil.Process(os.getppid())
        owned = fork_server.ppid() == owner
    except psutil.Error:
        owned = False
    if not owned:
        os._exit(1)


def lead_own_group() -> None:
    """Make this worker the leader of a process group of its own.

    Whatever it starts (a plugin's helper, and the helper's children) inherits the group and
    stays in it after the worker exits, so the pool can kill all of it at teardown
    (`os.killpg`). A process that leaves the group on purpose (`setsid`, a daemon's double
    fork) is only found while it still runs below the worker.
    """
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)


def ping(workers: int, timeout_s: float) -> int:
    """Prove this worker started and imported the evaluator, then hold it until all `workers`
    of the pool have: the executor starts processes on demand, and only a ping still running
    makes it start another one for the next. Raises TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while _STARTED is None or _STARTED.value < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {_STARTED.value if _STARTED else 0} of {workers} "
                               "workers started")
        time.sleep(_START_POLL_S)
    return os.getpid()


def run_submission(tasks: list[Task], job: Job) -> bytes:
    """Pool entry point: evaluate several tasks, return their results msgpack-encoded."""
    state = watchdog.current()
    if state is None:
        raise RuntimeError("worker used before init_worker ran")
    return evaluate_tasks(tasks, job, state)


def run_call(fn: Callable[..., Any], *args: Any) -> Any:
    """Pool entry point for other work: `fn(*args)`, with the collector paused."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return fn(*args)
    finally:
        if enabled:
            gc.enable()
