"""The evaluation runtime every cycle goes through: it schedules, and does nothing per market.

A run opens its inputs (`inputs.py`), plans them, and feeds the tasks to a supervised process
pool (`pool.py`) from an asyncio front loop, a few in flight per worker, consuming results as
they arrive (`results.py`). Workers read their lines themselves, decode, evaluate and return
only what selection and the outputs need (`chunk.py`).

- **Market-ordered input, no per-market output** (every cycle of `run-once`, `stress` and the
  daemon on such input): pomabotd cuts the markets by bytes and lets each worker find its
  signals (`plan.py`, `pieces.py`); before the results stand it checks that they tile the input.
- **Anything else** (per-market lines for `evaluate`, signals in another order, a repeated
  id, a worker lost while running pieces): pomabotd reads the input and plans it line by line
  into chunks of `batch_size` markets (`workload.py`), as the scalar reference does.

Faults are the supervisor's (`supervisor.py`). `workers = 0` runs the same task code in this
process, in order, without a pool; so does a cycle of fewer than `inline_below` markets with the
built-in evaluator (never a plugin, which could take the daemon down with it), because there the
pool's round trips cost more than they save.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import msgspec
import psutil
from msgspec import Struct

from pomabotd.domain.belief import Prior
from pomabotd.engine import worker
from pomabotd.engine.chunk import evaluate_tasks
from pomabotd.engine.inputs import Inputs, reader
from pomabotd.engine.meter import Meter
from pomabotd.engine.plan import MAX_PIECE_BYTES, check_runs, plan_pieces, retry_gaps
from pomabotd.engine.pool import WorkerPool
from pomabotd.engine.protocol import ChunkOut, Job, Task
from pomabotd.engine.results import PieceLines, RunResult, Sink
from pomabotd.engine.supervisor import Supervisor
from pomabotd.engine.watchdog import Evaluator, inline_state
from pomabotd.engine.workload import Workload, plan_workload
from pomabotd.errors import CycleError
from pomabotd.wire import Lines

__all__ = ["BatchSettings", "RunResult", "Runtime"]

#: Markets per pool submission of line-by-line chunks: enough to make its cost negligible.
_SUBMISSION_MARKETS: Final = 1024
#: Submissions queued per worker, so a worker never waits for the parent.
_QUEUED_PER_WORKER: Final = 2
_INLINE_BELOW: Final = 500
#: Inputs up to this size are counted line by line to decide whether a run is small.
_COUNTED_BYTES: Final = 1 << 20
_BUILTIN: Final = "pomabotd:evaluate_market"
_OUTS: Final = msgspec.msgpack.Decoder(list[ChunkOut])
_R = TypeVar("_R")


class BatchSettings(Struct, frozen=True, kw_only=True):
    """The `batch.*` settings the runtime needs (SPEC section 7)."""

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
    #: With the built-in evaluator, a cycle of fewer markets runs in this process: below about
    #: this size the pool's round trips cost more than the work they share out.
    inline_below: int = _INLINE_BELOW


class _Broken(Exception):
    """The pool broke while running pieces: the run goes line by line, with isolation."""


class Runtime:
    """Owns the worker pool across cycles; `start` it before loading a cycle's data."""

    def __init__(self, settings: BatchSettings) -> None:
        self._settings = settings
        self._pool: WorkerPool | None = None
        self._inline: Evaluator | None = None
        self._started = False
        self._pids: list[int] = []
        self._pids_of: tuple[int, int] | None = None

    def __enter__(self) -> Runtime:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def settings(self) -> BatchSettings:
        """The settings in force."""
        return self._settings

    def start(self) -> None:
        """Start the pool (every worker, evaluator imported), or import the evaluator here."""
        if self._started:
            return
        from pomabotd.config import resolve_evaluator

        if self._settings.workers > 0:
            pool = WorkerPool(self._settings.workers, self._settings.evaluator)
            try:
                pool.start()
            except BaseException:
                pool.close()
                raise
            self._pool = pool
            self._inline = None
        else:
            self._inline = resolve_evaluator(self._settings.evaluator)
        self._started = True

    def process_ids(self) -> list[int]:
        """This process and every process its pool runs on (fork server, resource tracker,
        workers): what a cycle's memory and CPU are measured over.

        Looked up once per pool generation rather than per call: walking /proc for
        descendants costs milliseconds.
        """
        pool = self._pool
        key = (id(pool), pool.generation) if pool is not None else (0, -1)
        if key != self._pids_of or not self._pids:
            me = psutil.Process()
            children = [] if pool is None else [p.pid for p in me.children(recursive=True)]
            self._pids = [me.pid, *children]
            self._pids_of = key
        return self._pids

    def close(self) -> None:
        """Stop the workers; no child process is left behind."""
        pool, self._pool = self._pool, None
        self._inline = None
        self._started = False
        if pool is not None:
            pool.close()

    def reconfigure(self, settings: BatchSettings) -> None:
        """Take new settings; the pool is rebuilt only if `workers` or `evaluator` changed."""
        old = self._settings
        self._settings = settings
        if not self._started or (
            old.workers == settings.workers and old.evaluator == settings.evaluator
        ):
            return
        replaced, inline = self._pool, self._inline
        self._pool = None
        self._started = False
        try:
            self.start()
        except BaseException:
            self._settings = old
            self._pool, self._inline = replaced, inline
            self._started = True
            raise
        if replaced is not None:
            replaced.close()

    async def map(self, fn: Callable[..., _R], calls: Sequence[tuple[Any, ...]]) -> list[_R]:
        """`fn(*args)` for each of `calls`, spread over the pool (here without one), in order.

        For work other than evaluating, such as generating a synthetic input by blocks; `fn`
        must be importable by name in a worker.
        """
        self.start()
        pool = self._pool
        if pool is None:
            return [worker.run_call(fn, *args) for args in calls]
        futures = [asyncio.wrap_future(pool.submit(worker.run_call, fn, *args)) for args in calls]
        return list(await asyncio.gather(*futures))

    def evaluate_sync(
        self,
        markets: Lines,
        markets_source: str,
        signals: Lines,
        signals_source: str,
        as_of: datetime,
        *,
        keep: Collection[str] = (),
        on_lines: Callable[[bytes], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> RunResult:
        """`evaluate` for callers without an event loop."""
        box: list[RunResult] = []

        async def run() -> None:
            # The result stays off the task: on 3.11 `asyncio.run` ends by formatting the
            # main task's repr (result included) while checking the SIGINT handler, which
            # cost a big cycle a quarter of a second.
            box.append(
                await self.evaluate(
                    markets, markets_source, signals, signals_source, as_of,
                    keep=keep, on_lines=on_lines, on_progress=on_progress,
                )
            )

        asyncio.run(run())
        return box[0]

    async def evaluate(
        self,
        markets: Lines,
        markets_source: str,
        signals: Lines,
        signals_source: str,
        as_of: datetime,
        *,
        keep: Collection[str] = (),
        on_lines: Callable[[bytes], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        meter: Meter | None = None,
    ) -> RunResult:
        """Evaluate every market of the JSON-lines `markets` with its `signals`.

        `keep` names markets whose evaluation is returned whatever it says (held positions).
        `on_lines`, if given, receives every evaluation encoded as JSON lines, in market input
        order, a chunk at a time as soon as the order allows.
        `on_progress`, if given, is called here with `(markets_done, markets_total)` each time
        results come back (the total is an estimate until the run ends; the last call has
        `markets_done == markets_total`).
        `meter`, if given, is a running meter of a longer span (a whole cycle) whose figures
        the result reports; otherwise the run is measured on its own.
        """
        self.start()
        started = time.perf_counter()
        pool = self._pool
        own_meter = meter is None
        if meter is None:
            meter = Meter(self.process_ids)
            meter.start()
        restarts_before = pool.restarts if pool is not None else 0
        enabled = gc.isenabled()
        gc.disable()  # millions of short-lived objects, no cycles: the collector only costs
        try:
            with Inputs(markets, markets_source, signals, signals_source,
                        shared=pool is not None) as inputs:
                job = Job(
                    as_of=as_of,
                    markets=inputs.markets,
                    signals=inputs.signals,
                    want_lines=on_lines is not None,
                    timeout_ms=self._settings.timeout_ms,
                    retry_attempts=self._settings.retry_attempts,
                    kernel=self._settings.kernel,
                    prior=self._settings.prior,
                )
                run = _Run(self, job, keep, on_progress)
                outcome = None if on_lines is not None else await run.by_pieces()
                if outcome is None:
                    outcome = await run.by_lines(inputs, on_lines)
        finally:
            if enabled:
                gc.enable()
            if own_meter:
                meter.stop()
        sink, numbers, markets_total, signals_total, supervisor = outcome
        return sink.result(
            numbers,
            markets_source=markets_source,
            markets_total=markets_total,
            signals_total=signals_total,
            retries=supervisor[0],
            timeouts=supervisor[1],
            restarts=(pool.restarts - restarts_before) if pool is not None else 0,
            peak_rss_mb=meter.peak_mb,
            cpu_percent=meter.cpu_percent(),
            wall_s=time.perf_counter() - started,
        )


_Outcome = tuple[Sink, Any, int, "int | None", tuple[int, int]]


class _Run:
    """One run's scheduling: pieces first when they can be used, else chunks of lines."""

    def __init__(
        self,
        runtime: Runtime,
        job: Job,
        keep: Collection[str],
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.job = job
        self.keep = keep
        self.on_progress = on_progress

    def _inline_fn(self, markets: int | None) -> Evaluator | None:
        """The evaluator to run here, or None to use the pool."""
        runtime = self.runtime
        if runtime._pool is None:
            if runtime._inline is None:
                raise CycleError("the runtime is not started")
            return runtime._inline
        if self.settings.evaluator == _BUILTIN and markets is not None and (
            markets < self.settings.inline_below
        ):
            from pomabotd.domain.evaluate import evaluate_market

            return evaluate_market
        return None

    async def by_pieces(self) -> _Outcome | None:
        """Evaluate market-ordered input by pieces; None if the input turns out otherwise
        (or a worker was lost meanwhile): it must then go line by line."""
        markets, signals = reader(self.job.markets), reader(self.job.signals)
        counted = None
        if markets.size <= _COUNTED_BYTES:
            counted = markets.read(markets.start, markets.size).count(b"\n") + 1
        fn = self._inline_fn(counted)
        pool = self.runtime._pool
        workers = 0 if fn is not None or pool is None else pool.workers
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
                bytes_done[0] += sizes[out.index]
            sink.add(out, out.market_lines)

        batch = tasks
        for _ in range(2):
            try:
                groups = (_groups(batch, sizes, self.settings.max_concurrency) if fn is not None
                          else [[task] for task in batch])
                await self._execute(groups, fn, take, sink.progress,
                                    in_flight=_in_flight(self.settings, workers))
            except _Broken:
                return None
            outs = sink.outs
            if any(out.misrouted for out in outs):
                return None
            gaps = check_runs(outs, signals)
            if gaps is None:
                return None
            if not gaps:
                break
            batch = retry_gaps(gaps, tasks)  # a piece's guess missed its lines: look again
        else:
            return None
        sink.progress()
        outs = sink.outs
        total = sum(out.evaluated + out.failed + len(out.market_rejected) for out in outs)
        return sink, PieceLines(outs), total, None, (0, 0)

    async def by_lines(
        self, inputs: Inputs, on_lines: Callable[[bytes], None] | None
    ) -> _Outcome:
        """Plan the input line by line, then evaluate its chunks, cornering any crash."""
        job = self.job
        work = plan_workload(
            inputs.data(job.markets), job.markets.name, inputs.data(job.signals),
            job.signals.name, self.settings.batch_size, self.keep,
        )
        fn = self._inline_fn(work.markets_total)
        sink = Sink(
            on_lines, self.on_progress, lambda: work.markets_total,
            rejected=work.rejected, done_before=work.markets_total - sum(work.chunk_sizes()),
        )
        pool = self.runtime._pool
        workers = 1 if fn is not None or pool is None else pool.workers
        per, in_flight = _grouping(self.settings, workers, work.chunk_count)
        indexes = range(work.chunk_count)
        groups = [[work.task(i) for i in indexes[first : first + per]]
                  for first in range(0, work.chunk_count, per)]
        supervisor = None
        if fn is None and pool is not None:
            supervisor = Supervisor(pool, job, work.markets_total)
        await self._execute(groups, fn, lambda out: sink.add(out, work.chunk_size(out.index)),
                            sink.progress, in_flight=in_flight, supervisor=supervisor,
                            work=work)
        sink.progress()
        counts = (supervisor.retries, supervisor.timeouts) if supervisor else (0, 0)
        return sink, work, work.markets_total, work.signals_total, counts

    async def _execute(
        self,
        groups: list[list[Task]],
        fn: Evaluator | None,
        take: Callable[[ChunkOut], None],
        progress: Callable[[], None],
        *,
        in_flight: int,
        supervisor: Supervisor | None = None,
        work: Workload | None = None,
    ) -> None:
        """Evaluate each group of tasks (one submission each), here or in the pool. Without a
        `supervisor`, a broken pool raises `_Broken` (after a rebuild)."""
        if fn is not None:
            with inline_state(fn) as state:
                for tasks in groups:
                    for out in _OUTS.decode(evaluate_tasks(tasks, self.job, state)):
                        take(out)
                    progress()
            return
        pool = self.runtime._pool
        assert pool is not None
        watcher = supervisor or Supervisor(pool, self.job, 0)
        pending: dict[asyncio.Future[bytes], list[Task]] = {}
        lost: list[int] = []
        following = 0
        watching = asyncio.create_task(watcher.watch())
        try:
            while following < len(groups) or pending or lost:
                if lost and not pending:
                    pool.rebuild()
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
                        submitted = pool.submit(worker.run_submission, tasks, self.job)
                    except BrokenProcessPool:
                        lost.extend(task.index for task in tasks)
                        break
                    pending[asyncio.wrap_future(submitted)] = tasks
                if not pending:
                    continue
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    tasks = pending.pop(finished)
                    error = finished.exception()
                    if error is None:
                        for out in _OUTS.decode(finished.result()):
                            take(out)
                    elif isinstance(error, BrokenProcessPool):
                        lost.extend(task.index for task in tasks)
                    else:
                        raise CycleError(f"a worker failed: {error!r}") from error
                progress()
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            for future in pending:
                future.cancel()


def _groups(tasks: list[Task], sizes: dict[int, int], most: int) -> list[list[Task]]:
    """Pieces run here in calls of up to `MAX_PIECE_BYTES` of market lines and `most` pieces:
    the pieces of a small input share one kernel pass."""
    groups: list[list[Task]] = []
    held = MAX_PIECE_BYTES
    for task in tasks:
        size = sizes[task.index]
        if held + size > MAX_PIECE_BYTES or len(groups[-1]) >= most:
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
