"""What runs a cycle's tasks: the protocol every backend keeps, and what each one can do.

The scheduler (`engine/schedule.py`) and the fault policy (`engine/supervisor.py`) program
against `Executor` alone. They never ask which backend they hold; they ask its `Capabilities`:

- `interrupts`: a market that runs past `batch.timeout_ms` is stopped where it runs and ends
  as `timeout` (a watchdog in the process that evaluates). Without it a market can run on.
- `kills`: a worker stuck where nothing can interrupt it (a C loop holding the GIL) can be
  killed from here: `busy` says who has been in one market since when, `stalled` who stands
  still while work waits for it (stopped, or idle holding the queue), `kill` ends it, and
  its submission fails with `WorkerLost`. Without it, the backend keeps that promise itself
  or (in-process) cannot keep it.
- `shares_files`: workers open the files this process holds open, by path, and read their
  byte ranges themselves (`Sharing`); otherwise the backend carries the bytes to them.

A submission is a list of tasks of one cycle's `Job`, run together in one worker; its answer is
their `ChunkOut`s, msgpack-encoded. Cancelling the future of a submission abandons it: the
backend must not let work nobody waits for hold its workers into the next run. A worker that
dies with a submission (a crash, a kill) fails it with `WorkerLost`; `recover` then makes the
executor usable again (a new pool) before anything else is submitted, and the supervisor replays
what was lost, alone, to find the market that did it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

import msgspec

from pomabotd.engine.protocol import Job, Task

__all__ = ["Capabilities", "Executor", "Gauge", "Sharing", "WorkerLost"]

_R = TypeVar("_R")


class WorkerLost(Exception):
    """The worker running a submission died before answering (crashed, or was killed):
    its tasks are lost. Call `Executor.recover` before submitting again.

    `timed_out` says the executor itself killed it because a market ran past its time (an
    executor that does not `kill` from here may still do that where its workers run)."""

    def __init__(self, message: str = "a worker died", timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.timed_out))


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What an executor can do; the scheduler asks these, never which backend it holds."""

    #: A market past its time is interrupted where it runs and ends as `timeout`.
    interrupts: bool
    #: A stuck worker can be killed from here (`Executor.busy`, `Executor.kill`).
    kills: bool
    #: Workers open, by path, the files this process holds open.
    shares_files: bool


class Gauge(Protocol):
    """What a span of work (a cycle) cost: peak memory and CPU, of this process and of the
    executor's workers where the executor can measure them (`covers_workers`)."""

    #: False when the workers' memory is not in `peak_mb` (it says so rather than guess).
    covers_workers: bool

    @property
    def peak_mb(self) -> float:
        """The highest memory figure seen so far, in MiB."""
        ...

    def cpu_percent(self) -> float:
        """CPU time over the wall time of the span, in % of one core."""
        ...

    def start(self) -> None:
        """Begin measuring."""
        ...

    def stop(self) -> None:
        """Stop measuring (safe to call twice)."""
        ...

    def __enter__(self) -> Gauge: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Sharing(Protocol):
    """How an executor's workers reach an input this process holds open for a run."""

    def file_path(self, fd: int, path: str | None) -> str | None:
        """The path by which workers open the file this process holds as `fd` (`path` is
        the name it was opened by, None for a copy made by `hold`); None: workers do not
        open it (it is read here, or its bytes are carried to them)."""
        ...

    def same_file(self) -> bool:
        """True if a worker opening the path sees this very file (device and inode can be
        compared), False where only its inode and size can be (shared storage)."""
        ...

    def hold(self, data: bytes) -> int | None:
        """A descriptor of a file holding a copy of `data` for the workers to open, or None
        when they get the bytes otherwise."""
        ...

    def drop(self, fd: int) -> None:
        """Close a descriptor `hold` gave."""
        ...


class Executor(Protocol):
    """Runs submissions of tasks; one per runtime, kept across cycles."""

    #: The backend's name in the table (`inline`, `local`, `dask`), as logs and metrics say it.
    name: str
    capabilities: Capabilities

    @property
    def restarts(self) -> int:
        """Worker processes replaced so far after a crash or a kill."""
        ...

    @property
    def workers(self) -> int:
        """How many submissions run at once (0: in this process, one at a time)."""
        ...

    def start(self) -> None:
        """Bring every worker up with the evaluator imported (raises if it cannot)."""
        ...

    def close(self) -> None:
        """Stop every worker; no process of the executor's is left behind."""
        ...

    def submit(self, tasks: list[Task], job: Job) -> asyncio.Future[bytes]:
        """Run `tasks` together in one worker; their `ChunkOut`s, msgpack-encoded. Fails
        with `WorkerLost` when the worker dies meanwhile (raised here when already known)."""
        ...

    async def recover(self) -> None:
        """Make the executor usable again after `WorkerLost`."""
        ...

    def busy(self) -> list[tuple[int, int]]:
        """`(worker, started_ns)` of each worker inside one market (or kernel pass) now, on
        the monotonic clock; empty unless `capabilities.kills`."""
        ...

    def kill(self, worker: int) -> bool:
        """End a stuck worker (its submission then fails with `WorkerLost`); False if it is
        not one of this executor's, or already killed."""
        ...

    def stalled(self, after_ns: int) -> list[tuple[int, str]]:
        """`(worker, why)` of each worker that stood still for `after_ns` while it was needed:
        stopped, taking no queued work while submissions wait, or making no progress inside
        its work; empty unless `capabilities.kills`."""
        ...

    def worker_names(self) -> list[str]:
        """The workers that exist now (process ids, or cluster addresses)."""
        ...

    def sharing(self) -> Sharing:
        """How this executor's workers reach a run's inputs."""
        ...

    def gauge(self) -> Gauge:
        """A new, unstarted measure of what this process and the workers use."""
        ...

    async def map(self, fn: Callable[..., _R], calls: Sequence[tuple[Any, ...]]) -> list[_R]:
        """`fn(*args)` for each of `calls`, spread over the workers, in order; `fn` must be
        importable by name where they run."""
        ...
