"""Scheduling one run: pieces first when they can be used, else chunks of lines.

- **Market-ordered input, no per-market output** (every cycle of `run-once`, `stress` and the
  daemon on such input): pomabotd cuts the markets by bytes and lets each worker find its
  signals (`plan.py`, `pieces.py`), a couple of pieces in flight per worker; before the results
  stand it checks that they tile the input (a second look fills a gap a wrong guess left).
- **Anything else** (per-market lines for `evaluate`, signals in another order, a repeated
  id, a worker lost while running pieces): pomabotd reads the input and plans it line by line
  into chunks of `batch_size` markets (`workload.py`), grouped into submissions of about a
  thousand markets, and any crash is cornered by the supervisor (`supervisor.py`).

Either way tasks go to the executor (`engine/executor/`) from an asyncio front loop, a couple
per worker in flight, or run here in order (`workers = 0`, or a small cycle with the built-in
evaluator), and results go to a `Sink` as they arrive. What happens when a worker is lost is the
supervisor's business, by what the executor can do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Final, Literal

import msgspec
from msgspec import Struct

from pomabotd.domain.belief import Prior
from pomabotd.engine.executor import Executor, WorkerLost
from pomabotd.engine.inputs import Inputs, reader
from pomabotd.engine.plan import (
    MAX_PIECE_BYTES,
    check_runs,
    plan_pieces,
    retry_gaps,
    stray_tasks,
    strays_are_strangers,
)
from pomabotd.engine.protocol import ChunkOut, Job, Task
from pomabotd.engine.results import LineNumbers, PieceLines, Sink
from pomabotd.engine.supervisor import Supervisor
from pomabotd.engine.workload import Workload, plan_workload
from pomabotd.errors import CycleError

__all__ = ["BatchSettings", "Outcome", "Schedule"]

#: Markets per submission of line-by-line chunks: enough to make its cost negligible.
_SUBMISSION_MARKETS: Final = 1024
#: Submissions queued per worker, so a worker never waits for the parent.
_QUEUED_PER_WORKER: Final = 2
_INLINE_BELOW: Final = 2000
#: Inputs up to this size are counted line by line to decide whether a run is small.
_COUNTED_BYTES: Final = 1 << 20
_BUILTIN: Final = "pomabotd:evaluate_market"
_OUTS: Final = msgspec.msgpack.Decoder(list[ChunkOut])


class BatchSettings(Struct, frozen=True, kw_only=True):
    """The `batch.*` settings the runtime needs."""

    workers: int
    batch_size: int
    max_concurrency: int
    timeout_ms: int
    retry_attempts: int
    evaluator: str = "pomabotd:evaluate_market"
    #: How the built-in evaluator runs (`batch.kernel`); a plugin always runs market by market.
    kernel: Literal["columnar", "scalar"] = "columnar"
    #: Where the built-in evaluator's beliefs start (`strategy.prior`).
    prior: Prior = "fixed"
    #: What runs the tasks when `workers` > 0 (`batch.executor`; `engine/executor/`).
    executor: str = "local"
    #: What decodes lines for the columnar kernel (`batch.decoder`): `auto` takes the native
    #: decoder where it is built.
    decoder: Literal["auto", "native", "msgspec"] = "auto"
    #: The Dask scheduler: "local" (a cluster started here) or its address
    #: (`batch.dask_scheduler`).
    dask_scheduler: str = "local"
    #: Input files are at the same paths on every Dask worker (`batch.dask_shared_files`).
    dask_shared_files: bool = False
    #: With the built-in evaluator, a cycle of fewer markets runs in this process: below about
    #: this size the workers' round trips cost more than the work they share out.
    inline_below: int = _INLINE_BELOW


class _Broken(Exception):
    """A worker was lost while running pieces: the run goes line by line, with isolation."""


class Outcome(Struct, kw_only=True):
    """What a run's scheduling produced, for its result to be assembled."""

    sink: Sink
    #: How task-relative line numbers map to the source's.
    numbers: LineNumbers
    markets_total: int
    #: None: the tasks' own counts are the total.
    signals_total: int | None
    #: The supervisor's replays and kills.
    retries: int = 0
    timeouts: int = 0
    #: Why each worker killed was killed.
    kills: list[str] = []


class Schedule:
    """One run's scheduling on `executor`; `here` gives the in-process executor of the
    built-in evaluator, for cycles too small to be worth the workers."""

    def __init__(
        self,
        settings: BatchSettings,
        executor: Executor,
        here: Callable[[], Executor],
        job: Job,
        keep: Collection[str],
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.here = here
        self.job = job
        self.keep = keep
        self.on_progress = on_progress
        #: Workers killed while running pieces (a line-by-line run's supervisor counts its
        #: own), and why each worker of the run was killed.
        self.timeouts = 0
        self.kills: list[str] = []

    def _executor_for(self, markets: int | None) -> Executor:
        """The workers, or this process for a small cycle of the built-in evaluator."""
        if self.executor.workers and self.settings.evaluator == _BUILTIN and (
            markets is not None and markets < self.settings.inline_below
        ):
            return self.here()
        return self.executor

    async def by_pieces(self) -> Outcome | None:
        """Evaluate market-ordered input by pieces; None if the input turns out otherwise
        (or a worker was lost meanwhile): it must then go line by line."""
        markets, signals = reader(self.job.markets), reader(self.job.signals)
        counted = None
        if markets.size <= _COUNTED_BYTES:
            counted = markets.read(markets.start, markets.size).count(b"\n") + 1
        executor = self._executor_for(counted)
        workers = executor.workers
        tasks = plan_pieces(markets, signals, workers=workers,
                            batch_size=self.settings.batch_size, keep=self.keep)
        bytes_done = [0]

        def estimate() -> int:
            outs = sink.outs
            done = sum(out.market_lines for out in outs)
            seen = bytes_done[0]
            return done if seen == 0 else round(done * (markets.size - markets.start) / seen)

        sink = Sink(None, self.on_progress, estimate)
        sizes = {task.index: task.markets[0][1] - task.markets[0][0] for task in tasks}

        def take(out: ChunkOut) -> None:
            if out.index not in sink._counted:
                bytes_done[0] += sizes.get(out.index, 0)
            sink.add(out, out.market_lines)

        batch = tasks
        strays: list[Task] = []
        for attempt in range(3):
            for task in batch:
                sizes.setdefault(task.index, 0)
            try:
                groups = (_groups(batch, sizes, self.settings.max_concurrency) if not workers
                          else [[task] for task in batch])
                await self._execute(groups, executor, take, sink.progress,
                                    in_flight=_in_flight(self.settings, workers))
            except _Broken:
                return None
            outs = sink.outs
            if any(out.misrouted for out in outs):
                return None
            pieces = [out for out in outs if out.index < len(tasks)]
            if strays:
                if not strays_are_strangers(pieces, [o for o in outs if o.index >= len(tasks)]):
                    return None  # a stray line names a market of the input: out of order
                break
            gaps = check_runs(pieces, signals)
            if gaps is None:
                return None
            if not gaps:
                break
            missed = [gap for gap in gaps if gap.pieces]
            if attempt == 0 and missed:
                batch = retry_gaps(missed, tasks)  # a piece's guess missed its lines: again
            else:  # lines about markets not in the input, or not found: check their ids
                batch = strays = stray_tasks(gaps, signals, len(tasks))
        sink.progress()
        outs = sink.outs
        total = sum(out.evaluated + out.failed + len(out.market_rejected) for out in outs)
        return Outcome(sink=sink, numbers=PieceLines(outs), markets_total=total,
                       signals_total=None, timeouts=self.timeouts, kills=self.kills)

    async def by_lines(
        self, inputs: Inputs, on_lines: Callable[[bytes], None] | None
    ) -> Outcome:
        """Plan the input line by line, then evaluate its chunks, cornering any crash."""
        job = self.job
        work = plan_workload(
            inputs.data(job.markets), job.markets.name, inputs.data(job.signals),
            job.signals.name, self.settings.batch_size, self.keep,
        )
        executor = self._executor_for(work.markets_total)
        sink = Sink(
            on_lines, self.on_progress, lambda: work.markets_total,
            rejected=work.rejected, done_before=work.markets_total - sum(work.chunk_sizes()),
        )
        per, in_flight = _grouping(self.settings, max(1, executor.workers), work.chunk_count)
        indexes = range(work.chunk_count)
        groups = [[work.task(i) for i in indexes[first : first + per]]
                  for first in range(0, work.chunk_count, per)]
        supervisor = Supervisor(executor, job, work.markets_total, self.settings.evaluator)
        await self._execute(groups, executor,
                            lambda out: sink.add(out, work.chunk_size(out.index)),
                            sink.progress, in_flight=in_flight, supervisor=supervisor,
                            work=work)
        sink.progress()
        return Outcome(sink=sink, numbers=work, markets_total=work.markets_total,
                       signals_total=work.signals_total, retries=supervisor.retries,
                       timeouts=self.timeouts + supervisor.timeouts, kills=self.kills)

    async def _execute(
        self,
        groups: list[list[Task]],
        executor: Executor,
        take: Callable[[ChunkOut], None],
        progress: Callable[[], None],
        *,
        in_flight: int,
        supervisor: Supervisor | None = None,
        work: Workload | None = None,
    ) -> None:
        """Evaluate each group of tasks (one submission each) on `executor`, `in_flight` at
        a time (one at a time in this process). Without a `supervisor`, a lost worker raises
        `_Broken` (after the executor recovered)."""
        if not executor.workers:
            in_flight = 1
        watcher = supervisor or Supervisor(executor, self.job, 0, self.settings.evaluator)
        pending: dict[asyncio.Future[bytes], list[Task]] = {}
        lost: list[int] = []
        following = 0
        watching = asyncio.create_task(watcher.watch())
        try:
            while following < len(groups) or pending or lost:
                if lost and not pending:
                    await executor.recover()
                    if supervisor is None or work is None:
                        raise _Broken
                    for out in await supervisor.isolate(lost, work.task):
                        take(out)
                    progress()
                    lost.clear()
                    continue
                while not lost and following < len(groups) and len(pending) < in_flight:
                    tasks = groups[following]
                    following += 1
                    try:
                        submitted = executor.submit(tasks, self.job)
                    except WorkerLost:
                        lost.extend(task.index for task in tasks)
                        break
                    pending[submitted] = tasks
                if not pending:
                    continue
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    tasks = pending.pop(finished)
                    error = finished.exception()
                    if error is None:
                        for out in _OUTS.decode(finished.result()):
                            take(out)
                    elif isinstance(error, WorkerLost):
                        if error.timed_out:  # killed where it ran, not by `watch`
                            watcher.timeouts += 1
                        lost.extend(task.index for task in tasks)
                    else:
                        raise CycleError(f"a worker failed: {error!r}") from error
                progress()
        finally:
            watching.cancel()
            # Waited for, not awaited: its CancelledError must not pass through this frame,
            # whose traceback would then keep every result of the cycle alive after it.
            await asyncio.wait({watching})
            for future in pending:
                future.cancel()  # abandoned: the executor frees what ran it
            if supervisor is None:
                self.timeouts += watcher.timeouts
            self.kills += watcher.kills


def _groups(tasks: list[Task], sizes: dict[int, int], most: int) -> list[list[Task]]:
    """Pieces run here in calls of up to `MAX_PIECE_BYTES` of market lines and `most` pieces:
    the pieces of a small input share one kernel pass."""
    groups: list[list[Task]] = []
    held = MAX_PIECE_BYTES
    for task in tasks:
        size = sizes[task.index]
        if not groups or held + size > MAX_PIECE_BYTES or len(groups[-1]) >= most:
            groups.append([])
            held = 0
        groups[-1].append(task)
        held += size
    return groups


def _in_flight(settings: BatchSettings, workers: int) -> int:
    """Pieces in flight: a couple per worker, within `max_concurrency`."""
    return max(1, min(max(1, workers) * _QUEUED_PER_WORKER, settings.max_concurrency))


def _grouping(settings: BatchSettings, workers: int, chunks: int) -> tuple[int, int]:
    """Chunks per submission, and submissions in flight, within `max_concurrency` chunks."""
    concurrency = max(1, settings.max_concurrency)
    queued = workers * _QUEUED_PER_WORKER
    wanted = -(-_SUBMISSION_MARKETS // max(1, settings.batch_size))
    balanced = max(1, -(-chunks // queued))  # small cycles: spread over every worker
    per_submission = max(1, min(wanted, balanced, concurrency // queued or 1))
    return per_submission, max(1, concurrency // per_submission)
