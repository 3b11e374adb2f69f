"""The evaluation runtime every cycle goes through: it owns the worker pool and schedules; it
does nothing per market.

A run opens its inputs (`inputs.py`: pomabotd holds them open, workers read their byte ranges
themselves), plans and schedules them (`schedule.py`, `plan.py`, `workload.py`), and feeds the
tasks to a supervised process pool (`pool.py`, `supervisor.py`); workers read, decode, evaluate
and return only what selection and the outputs need (`worker.py`, `chunk.py`, `kernels/`), and
the results are assembled as they arrive (`results.py`). What it cost is read from the OS
(`meter.py`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from pomabotd.engine import worker
from pomabotd.engine.inputs import Inputs
from pomabotd.engine.meter import Meter, descendant_pids
from pomabotd.engine.pool import WorkerPool
from pomabotd.engine.protocol import Job
from pomabotd.engine.results import RunResult
from pomabotd.engine.schedule import BatchSettings, Schedule
from pomabotd.engine.watchdog import Evaluator
from pomabotd.wire import Lines

__all__ = ["BatchSettings", "RunResult", "Runtime"]

_R = TypeVar("_R")


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
                run = Schedule(self._settings, pool, self._inline, job, keep, on_progress)
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
