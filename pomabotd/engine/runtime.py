"""The evaluation runtime every cycle goes through: it owns the executor and schedules; it
does nothing per market.

A run opens its inputs (`inputs.py`: pomabotd holds them open; the executor's workers reach them
as it says), plans and schedules them (`schedule.py`, `plan.py`, `workload.py`), and feeds the
tasks to the executor (`engine/executor/`: in this process, a local pool, or a cluster) under
the fault policy (`supervisor.py`); workers read, decode, evaluate and return only what
selection and the outputs need (`chunk.py`, `kernels/`), and the results are assembled as they
arrive (`results.py`). What it cost is measured by the executor's gauge.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from msgspec import Struct

from pomabotd.engine.executor import Executor, Gauge, backend_name, open_executor
from pomabotd.engine.executor.inline import InlineExecutor
from pomabotd.engine.inputs import Inputs
from pomabotd.engine.kernels.native import Decoder, decoder_in_use
from pomabotd.engine.protocol import Job
from pomabotd.engine.results import RunResult
from pomabotd.engine.schedule import BatchSettings, Schedule
from pomabotd.wire import Lines

__all__ = ["BatchSettings", "ExecutorInfo", "RunResult", "Runtime"]

_R = TypeVar("_R")
_BUILTIN = "pomabotd:evaluate_market"


class ExecutorInfo(Struct, frozen=True, kw_only=True):
    """What runs the cycles, as status and logs name it."""

    #: The backend (`inline`, `local`, `dask`).
    name: str
    #: Its workers now (0 in this process).
    workers: int


class Runtime:
    """Owns the executor across cycles; `start` it before loading a cycle's data."""

    def __init__(self, settings: BatchSettings) -> None:
        self._settings = settings
        self._executor: Executor | None = None
        self._here: Executor | None = None

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

    @property
    def executor(self) -> Executor:
        """The executor, started."""
        self.start()
        assert self._executor is not None
        return self._executor

    def info(self) -> ExecutorInfo:
        """The backend in use and how many workers it has now (without starting it)."""
        executor = self._executor
        if executor is None:
            return ExecutorInfo(name=backend_name(self._settings),
                                workers=self._settings.workers)
        return ExecutorInfo(name=executor.name, workers=executor.workers)

    @property
    def decoder(self) -> Decoder:
        """The decoder the workers use for the columnar kernel (`batch.decoder` resolved:
        `auto` is `native` where the native decoder is built)."""
        return decoder_in_use(self._settings.decoder)

    def start(self) -> None:
        """Start the executor (every worker, evaluator imported)."""
        if self._executor is None:
            self._executor = _started(self._settings)

    def gauge(self) -> Gauge:
        """A new, unstarted measure of this process and the executor's workers."""
        return self.executor.gauge()

    def close(self) -> None:
        """Stop the workers; no child process is left behind."""
        executor, self._executor = self._executor, None
        self._here = None
        if executor is not None:
            executor.close()

    def reconfigure(self, settings: BatchSettings) -> None:
        """Take new settings; the executor is replaced only if what it runs on changed
        (`workers`, `evaluator`, `executor`, the Dask settings): the new one is started
        first, and the old one kept if it cannot start."""
        old = self._settings
        running = self._executor
        if running is None or _same_executor(old, settings):
            self._settings = settings
            return
        replacement = _started(settings)
        self._settings = settings
        self._executor = replacement
        self._here = None
        running.close()

    async def map(self, fn: Callable[..., _R], calls: Sequence[tuple[Any, ...]]) -> list[_R]:
        """`fn(*args)` for each of `calls`, spread over the workers (here if they cannot
        share this machine's files), in order.

        For work other than evaluating, such as generating a synthetic input by blocks; `fn`
        must be importable by name in a worker.
        """
        executor = self.executor
        if not executor.capabilities.shares_files:
            executor = self._in_process()
        return await executor.map(fn, calls)

    def _in_process(self) -> Executor:
        """The built-in evaluator in this process, for small cycles and local work."""
        if self._here is None:
            here = InlineExecutor(_BUILTIN)
            here.start()
            self._here = here
        return self._here

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
        meter: Gauge | None = None,
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
        executor = self.executor
        started = time.perf_counter()
        own_meter = meter is None
        if meter is None:
            meter = executor.gauge()
            meter.start()
        restarts_before = executor.restarts
        enabled = gc.isenabled()
        gc.disable()  # millions of short-lived objects, no cycles: the collector only costs
        try:
            with Inputs(markets, markets_source, signals, signals_source,
                        sharing=executor.sharing()) as inputs:
                job = Job(
                    as_of=as_of,
                    markets=inputs.markets,
                    signals=inputs.signals,
                    want_lines=on_lines is not None,
                    timeout_ms=self._settings.timeout_ms,
                    retry_attempts=self._settings.retry_attempts,
                    kernel=self._settings.kernel,
                    prior=self._settings.prior,
                    decoder=self.decoder,
                )
                run = Schedule(self._settings, executor, self._in_process, job, keep,
                               on_progress)
                outcome = None if on_lines is not None else await run.by_pieces()
                if outcome is None:
                    outcome = await run.by_lines(inputs, on_lines)
        finally:
            if enabled:
                gc.enable()
            if own_meter:
                meter.stop()
        return outcome.sink.result(
            outcome.numbers,
            markets_source=markets_source,
            markets_total=outcome.markets_total,
            signals_total=outcome.signals_total,
            retries=outcome.retries,
            timeouts=outcome.timeouts,
            restarts=executor.restarts - restarts_before,
            kills=outcome.kills,
            peak_rss_mb=meter.peak_mb,
            cpu_percent=meter.cpu_percent(),
            wall_s=time.perf_counter() - started,
        )


def _same_executor(old: BatchSettings, new: BatchSettings) -> bool:
    """True if the settings run on the same workers (only the scheduling changed)."""
    return _workers_of(old) == _workers_of(new)


def _workers_of(settings: BatchSettings) -> tuple[object, ...]:
    """What the executor's workers are, run and reached by."""
    backend = backend_name(settings)
    cluster = ((settings.dask_scheduler, settings.dask_shared_files) if backend == "dask"
               else ())
    return (backend, settings.workers, settings.evaluator, *cluster)


def _started(settings: BatchSettings) -> Executor:
    """A new executor of `settings`, started (closed again if it cannot start)."""
    executor = open_executor(settings)
    try:
        executor.start()
    except BaseException:
        executor.close()
        raise
    return executor
