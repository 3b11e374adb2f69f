"""The evaluation runtime every cycle goes through: chunks to workers, results back, measured.

An asyncio front loop feeds a supervised process pool (`pool.py`) with chunks of `batch_size`
markets, several chunks per submission (a submission costs the parent far more than a chunk), at
most `max_concurrency` chunks in flight, and consumes results as they arrive. The parent never
decodes a record (`workload.py` cuts the source bytes); workers return only what selection and the
outputs need. Faults are handled at two levels:

- in the worker, a market that raises, returns garbage or runs past `timeout_ms` is retried with
  a tenacity policy, then reported with `error` set (`worker.py`);
- here, a worker that dies (`BrokenProcessPool`) or that the supervisor kills because it is stuck
  where the interpreter cannot interrupt it costs a pool rebuild; the lost chunks are replayed one
  at a time, and a chunk that breaks the pool again market by market, so that only the culprit
  ends with `worker crashed` (or `timeout`).

`workers = 0` runs the same chunk code in this process, in order, without a pool; so does a
cycle of fewer than `inline_below` markets with the built-in evaluator (never a plugin, which
could take the daemon down with it), because there the pool's round trips cost more than they
save. Without `on_lines`, workers build full evaluations only for tradeable and held markets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Callable, Collection
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Final, Literal

import msgspec
import tenacity
from msgspec import Struct

from pomabotd.domain.belief import Prior
from pomabotd.domain.evaluate import evaluate_market
from pomabotd.domain.models import Evaluation, Market
from pomabotd.engine import worker
from pomabotd.engine.meter import Meter, descendant_pids
from pomabotd.engine.pool import WorkerPool
from pomabotd.engine.worker import ChunkOut, Job, Task
from pomabotd.engine.workload import Workload, plan_workload
from pomabotd.errors import CycleError, PoolCrashLoopError
from pomabotd.wire import Rejected, decode_markets, decode_signals

__all__ = ["BatchSettings", "RunResult", "Runtime"]

#: Markets per pool submission to aim for: enough to make its fixed cost negligible.
_SUBMISSION_MARKETS: Final = 1024
#: Submissions queued per worker, so a worker never waits for the parent.
_QUEUED_PER_WORKER: Final = 2
#: A stuck worker is killed this long after its market's timeout (and at least this late).
_MIN_KILL_GRACE_NS: Final = 100_000_000
_SUPERVISE_EVERY_S: Final = 0.05
#: A cycle in which more markets than this (or than one in `_CRASH_LOOP_SHARE` of its markets)
#: kill their worker when evaluated alone is failed: the evaluator crashes on everything, and
#: each crash costs a pool rebuild. Counted over the whole cycle, so the verdict depends only on
#: which markets crash, never on how they were chunked.
_CRASHED_MARKETS: Final = 5
_CRASH_LOOP_SHARE: Final = 1000
_INLINE_BELOW: Final = 500
_BUILTIN: Final = "pomabotd:evaluate_market"
_OUTS: Final = msgspec.msgpack.Decoder(list[ChunkOut])
_LINES: Final = msgspec.json.Encoder()


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


class RunResult(Struct, kw_only=True):
    """What one run produced, and what it cost, measured."""

    candidates: list[Evaluation]
    markets: dict[str, Market]
    kept: dict[str, Evaluation]
    rejected: list[Rejected]
    failures: list[tuple[str, str]]
    markets_total: int
    markets_evaluated: int
    markets_failed: int
    signals_total: int
    retries: int
    timeouts: int
    worker_restarts: int
    eval_us_total: float
    peak_rss_mb: float
    cpu_percent: float
    wall_s: float
    #: How many markets the columnar kernel evaluated; the rest ran market by market.
    markets_columnar: int = 0


class _Misrouted(Exception):
    """A chunk held a signal about another chunk's market: the signals are not in market
    order after all, and the cycle must be planned line by line."""


class _Lost(Exception):
    """A lone market's worker died; `error` says whether the supervisor killed it."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class Runtime:
    """Owns the worker pool across cycles; `start` it before loading a cycle's data."""

    def __init__(self, settings: BatchSettings) -> None:
        self._settings = settings
        self._pool: WorkerPool | None = None
        self._inline: worker.Evaluator | None = None
        self._started = False
        self._timeouts = 0
        self._retries = 0
        self._crashed = 0
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
        if self._settings.workers > 0:
            pool = WorkerPool(self._settings.workers, self._settings.evaluator)
            try:
                pool.start()
            except BaseException:
                pool.close()
                raise
            self._pool = pool
        else:
            from pomabotd.config import resolve_evaluator

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
            me = os.getpid()
            self._pids = [me, *([] if pool is None else descendant_pids(me))]
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
        replaced = self._pool
        self._pool = None
        self._started = False
        try:
            self.start()
        except BaseException:
            self._settings = old
            self._pool = replaced
            self._started = True
            raise
        if replaced is not None:
            replaced.close()

    def evaluate_sync(
        self,
        markets: bytes,
        markets_source: str,
        signals: bytes,
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
                    markets,
                    markets_source,
                    signals,
                    signals_source,
                    as_of,
                    keep=keep,
                    on_lines=on_lines,
                    on_progress=on_progress,
                )
            )

        asyncio.run(run())
        return box[0]

    async def evaluate(
        self,
        markets: bytes,
        markets_source: str,
        signals: bytes,
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
        results come back (once per completed submission, so it costs nothing per market); the
        last call has `markets_done == markets_total`.
        `meter`, if given, is a running meter of a longer span (a whole cycle) whose figures
        the result reports; otherwise the run is measured on its own.
        """
        self.start()
        started = time.perf_counter()
        settings = self._settings
        pool = self._pool
        own_meter = meter is None
        if meter is None:
            meter = Meter(self.process_ids)
            meter.start()
        self._timeouts = self._retries = self._crashed = 0
        restarts_before = pool.restarts if pool is not None else 0
        enabled = gc.isenabled()
        gc.disable()  # millions of short-lived objects, no cycles: the collector only costs
        try:
            job = Job(
                as_of,
                markets_source,
                signals_source,
                on_lines is not None,
                settings.timeout_ms,
                settings.retry_attempts,
                kernel=settings.kernel,
                prior=settings.prior,
            )
            # Lines already handed to `on_lines` cannot be taken back, so only a cycle without
            # them may cut signals on the assumption of market order.
            plan = partial(
                plan_workload,
                markets,
                markets_source,
                signals,
                signals_source,
                settings.batch_size,
                keep,
            )
            work = plan(ordered=on_lines is None)
            try:
                sink = await self._run(work, job, on_lines, on_progress)
            except _Misrouted:
                work = plan(ordered=False)
                self._timeouts = self._retries = self._crashed = 0
                sink = await self._run(work, job, on_lines, on_progress)
        finally:
            if enabled:
                gc.enable()
            if own_meter:
                meter.stop()
        if not own_meter:
            meter.sample()
        wall_s = time.perf_counter() - started
        return sink.result(
            retries=self._retries,
            timeouts=self._timeouts,
            restarts=(pool.restarts - restarts_before) if pool is not None else 0,
            peak_rss_mb=meter.peak_mb,
            cpu_percent=meter.cpu_percent(),
            wall_s=wall_s,
        )

    async def _run(
        self,
        work: Workload,
        job: Job,
        on_lines: Callable[[bytes], None] | None,
        on_progress: Callable[[int, int], None] | None,
    ) -> _Sink:
        """Evaluate every chunk of `work`, in this process or in the pool."""
        settings = self._settings
        pool = self._pool
        sink = _Sink(work, on_lines, on_progress)
        if pool is None:
            self._run_inline(work, job, sink)
        elif settings.evaluator == _BUILTIN and work.markets_total < settings.inline_below:
            self._run_inline(work, job, sink, evaluate_market)
        else:
            await self._run_pool(pool, work, job, sink)
        sink.progress()
        return sink

    def _run_inline(
        self,
        work: Workload,
        job: Job,
        sink: _Sink,
        fn: worker.Evaluator | None = None,
    ) -> None:
        fn = fn or self._inline
        if fn is None:
            raise CycleError("the runtime is not started")
        # Chunks grouped as a one-worker pool would group them, so that the columnar kernel
        # takes as many markets at once here as in a worker.
        count = work.chunk_count
        step, _ = _grouping(self._settings, 1, count)
        with worker.inline_worker(fn) as state:
            for first in range(0, count, step):
                tasks = [work.task(index) for index in range(first, min(count, first + step))]
                for out in _OUTS.decode(worker.evaluate_chunks(tasks, job, state)):
                    sink.add(out)
                sink.progress()

    async def _run_pool(self, pool: WorkerPool, work: Workload, job: Job, sink: _Sink) -> None:
        settings = self._settings
        count = work.chunk_count
        per_submission, max_submissions = _grouping(settings, pool.workers, count)
        inflight: dict[asyncio.Future[bytes], list[int]] = {}
        lost: list[int] = []
        following = 0
        supervisor = asyncio.create_task(self._supervise(pool, job))
        try:
            while following < count or inflight or lost:
                if lost and not inflight:
                    pool.rebuild()
                    await self._isolate(pool, sorted(lost), work, job, sink)
                    sink.progress()
                    lost.clear()
                    continue
                while not lost and following < count and len(inflight) < max_submissions:
                    indexes = list(range(following, min(count, following + per_submission)))
                    following = indexes[-1] + 1
                    tasks = [work.task(index) for index in indexes]
                    try:
                        submitted = pool.submit(worker.run_submission, tasks, job)
                    except BrokenProcessPool:
                        lost.extend(indexes)
                        break
                    inflight[asyncio.wrap_future(submitted)] = indexes
                if not inflight:
                    continue
                done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    indexes = inflight.pop(finished)
                    error = finished.exception()
                    if error is None:
                        for out in _OUTS.decode(finished.result()):
                            sink.add(out)
                    elif isinstance(error, BrokenProcessPool):
                        lost.extend(indexes)
                    else:
                        raise CycleError(f"a worker failed: {error!r}") from error
                sink.progress()
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
            for pending in inflight:
                pending.cancel()

    async def _isolate(
        self, pool: WorkerPool, lost: list[int], work: Workload, job: Job, sink: _Sink
    ) -> None:
        """Replay chunks a dead worker took with it, one at a time, to corner the culprit."""
        for index in lost:
            if len(lost) > 1:
                try:
                    data = await self._alone(pool, work.task(index), job)
                except _Lost:
                    pass
                else:
                    for out in _OUTS.decode(data):
                        self._retries += out.evaluated + out.failed  # each market ran again
                        sink.add(out)
                    continue
            sink.add(await self._market_by_market(pool, work, index, job))

    async def _market_by_market(
        self, pool: WorkerPool, work: Workload, index: int, job: Job
    ) -> ChunkOut:
        """Evaluate a chunk one market per submission; a market that keeps killing its worker
        ends with `worker crashed` (or `timeout` when the supervisor had to kill it)."""
        task = work.task(index)
        markets, market_rejected = decode_markets(task.markets, job.markets_source)
        signals, signal_rejected = decode_signals(task.signals, job.signals_source)
        total = ChunkOut(
            index,
            b"",
            [],
            [],
            [],
            market_rejected,
            signal_rejected,
            [],
            0,
            0,
            len(signals) + len(signal_rejected),
            0,
            0,
            0.0,
        )
        parts: list[bytes] = []
        crash_cap = max(_CRASHED_MARKETS, -(-work.markets_total // _CRASH_LOOP_SHARE))
        policy = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(1 + job.retry_attempts),
            wait=tenacity.wait_none(),
            retry=tenacity.retry_if_exception_type(_Lost),
            reraise=True,
        )
        for position, market in enumerate(markets):
            single = Task(index, task.markets, task.signals, task.keep, position)
            try:
                async for attempt in policy:
                    with attempt:
                        self._retries += 1  # lost with its chunk's worker, so every run is a rerun
                        data = await self._alone(pool, single, job)
            except _Lost as lost:
                self._crashed += 1
                if self._crashed > crash_cap:
                    raise PoolCrashLoopError(
                        f"{self._crashed} markets killed their worker process in this cycle: "
                        f"evaluator {pool.evaluator!r} seems to crash on every market"
                    ) from lost
                out = _failed_out(index, market, lost.error, task.keep, job.want_lines)
            else:
                out = _OUTS.decode(data)[0]
                if out.misrouted:
                    raise _Misrouted
            parts.append(out.lines)
            total.candidates += out.candidates
            total.markets += out.markets
            total.kept += out.kept
            total.failures += out.failures
            total.evaluated += out.evaluated
            total.failed += out.failed
            total.retries += out.retries
            total.timeouts += out.timeouts
            total.eval_us += out.eval_us
        total.lines = b"".join(parts)
        return total

    async def _alone(self, pool: WorkerPool, task: Task, job: Job) -> bytes:
        """Run one task with nothing else in flight; a dead worker means rebuild and `_Lost`."""
        timeouts_before = self._timeouts
        try:
            return await asyncio.wrap_future(pool.submit(worker.run_submission, [task], job))
        except BrokenProcessPool:
            killed = self._timeouts > timeouts_before
            pool.rebuild()
            raise _Lost("timeout" if killed else "worker crashed") from None

    async def _supervise(self, pool: WorkerPool, job: Job) -> None:
        """Kill a worker stuck past its market's timeout plus a grace."""
        timeout_ns = job.timeout_ms * 1_000_000
        deadline_ns = timeout_ns + max(timeout_ns, _MIN_KILL_GRACE_NS)
        period = min(max(timeout_ns / 4e9, 0.005), _SUPERVISE_EVERY_S)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic_ns()
            for pid, started in pool.busy():
                if now - started > deadline_ns and pool.kill(pid):
                    self._timeouts += 1


def _grouping(settings: BatchSettings, workers: int, chunks: int) -> tuple[int, int]:
    """Chunks per submission, and submissions in flight, within `max_concurrency` chunks."""
    concurrency = max(1, settings.max_concurrency)
    queued = workers * _QUEUED_PER_WORKER
    wanted = -(-_SUBMISSION_MARKETS // max(1, settings.batch_size))
    balanced = max(1, -(-chunks // queued))  # small cycles: spread over every worker
    per_submission = max(1, min(wanted, balanced, concurrency // queued or 1))
    return per_submission, max(1, concurrency // per_submission)


def _failed_out(
    index: int, market: Market, error: str, keep: frozenset[str], want_lines: bool
) -> ChunkOut:
    evaluation = worker.failed_evaluation(market, error)
    kept = market.id in keep
    return ChunkOut(
        index,
        _LINES.encode(evaluation) + b"\n" if want_lines else b"",
        [],
        [market] if kept else [],
        [evaluation] if kept else [],
        [],
        [],
        [(market.id, error)],
        0,
        1,
        0,
        0,
        0,
        0.0,
    )


class _Sink:
    """Collects chunk results in any order; emits lines and assembles results in input order."""

    def __init__(
        self,
        work: Workload,
        on_lines: Callable[[bytes], None] | None,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self._work = work
        self._on_lines = on_lines
        self._on_progress = on_progress
        # Markets refused while planning are done before any chunk is.
        self._done = work.markets_total - sum(work.chunk_sizes()) if on_progress else 0
        self._reported = -1
        self._pending: dict[int, bytes] = {}
        self._next = 0
        self._candidates: dict[int, list[Evaluation]] = {}
        self._failures: dict[int, list[tuple[str, str]]] = {}
        self._markets: dict[str, Market] = {}
        self._kept: dict[str, Evaluation] = {}
        self._rejected: list[Rejected] = list(work.rejected)
        self._evaluated = 0
        self._failed = 0
        self._signals = 0
        self._retries = 0
        self._timeouts = 0
        self._eval_us = 0.0
        self._columnar = 0

    def add(self, out: ChunkOut) -> None:
        if out.misrouted:
            raise _Misrouted
        index = out.index
        work = self._work
        self._signals += out.signals
        if out.candidates:
            self._candidates[index] = out.candidates
        if out.failures:
            self._failures[index] = out.failures
        for market in out.markets:
            self._markets[market.id] = market
        for evaluation in out.kept:
            self._kept[evaluation.market_id] = evaluation
        for rejected in out.market_rejected:
            line = work.market_line(index, rejected.line)
            self._rejected.append(msgspec.structs.replace(rejected, line=line))
        for rejected in out.signal_rejected:
            line = work.signal_line(index, rejected.line)
            self._rejected.append(msgspec.structs.replace(rejected, line=line))
        if self._on_progress is not None:
            self._done += work.chunk_size(index)
        self._evaluated += out.evaluated
        self._failed += out.failed
        self._retries += out.retries
        self._timeouts += out.timeouts
        self._eval_us += out.eval_us
        self._columnar += out.columnar
        if self._on_lines is not None:
            self._pending[index] = out.lines
            while self._next in self._pending:
                lines = self._pending.pop(self._next)
                self._next += 1
                if lines:
                    self._on_lines(lines)

    def progress(self) -> None:
        """Tell `on_progress` how many markets are done, if that changed."""
        if self._on_progress is not None and self._done != self._reported:
            self._reported = self._done
            self._on_progress(self._done, self._work.markets_total)

    def result(
        self,
        *,
        retries: int,
        timeouts: int,
        restarts: int,
        peak_rss_mb: float,
        cpu_percent: float,
        wall_s: float,
    ) -> RunResult:
        work = self._work
        candidates = [e for i in sorted(self._candidates) for e in self._candidates[i]]
        failures = [f for i in sorted(self._failures) for f in self._failures[i]]
        markets_source = work.markets_source
        self._rejected.sort(key=lambda r: (r.source != markets_source, r.line))
        return RunResult(
            candidates=candidates,
            markets=self._markets,
            kept=self._kept,
            rejected=self._rejected,
            failures=failures,
            markets_total=work.markets_total,
            markets_evaluated=self._evaluated,
            markets_failed=self._failed,
            signals_total=self._signals if work.ordered else work.signals_total,
            retries=self._retries + retries,
            timeouts=self._timeouts + timeouts,
            worker_restarts=restarts,
            eval_us_total=self._eval_us,
            peak_rss_mb=peak_rss_mb,
            cpu_percent=cpu_percent,
            wall_s=wall_s,
            markets_columnar=self._columnar,
        )
