"""One paper-trading cycle as a coroutine: load, evaluate, mark and close, select, write.

This is the imperative shell around the pure domain: it owns the order of the steps and the
portfolio carried from one cycle to the next, and nothing else. Loading inputs is the sources'
job (`pomabotd.sources.open_sources`, kept across cycles, behind the small `InputLoader`
seam), evaluating markets the runtime's, writing lines the ledger's. `run-once`, `stress` and
the daemon all await `run_cycle`; nothing in here starts an event loop or reads the
configuration: the parts a cycle runs on are built by the composition root (`pomabotd.app`).

The halt rules (`pomabotd.domain.halt`) run inside the cycle, after marking and before opening:
a pending `pomabotd resume` request or a change of the decision settings lifts a halt, the
cycle's closes are judged, and a halted cycle still evaluates, marks and closes but opens
nothing. What changed is logged only once the cycle is written.

A cycle can be cancelled (a stop signal) at any of its awaits, which all come before the ledger
is touched; appending its lines has no await inside, so a cancelled cycle leaves nothing of
itself in the files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol

import msgspec

from pomabotd.domain.halt import HaltState, HaltStep, Settings, advance
from pomabotd.domain.models import CloseEvent, Market, Position, RiskLimits
from pomabotd.domain.portfolio import (
    LedgerState,
    equity,
    mark_positions,
    open_position,
)
from pomabotd.domain.research import (
    HaltRules,
    closed_positions,
    describe_halt_figures,
    halt_figures,
)
from pomabotd.domain.selection import Selection, Skip, portfolio_risk_pct, select
from pomabotd.engine.executor import Gauge
from pomabotd.engine.runtime import ExecutorInfo, RunResult, Runtime
from pomabotd.errors import CycleError, CycleTimeoutError, LedgerError
from pomabotd.log import logger
from pomabotd.output import (
    CycleMetrics,
    Ledger,
    LedgerScan,
    LedgerSnapshot,
    read_ledger,
    scan_ledger,
)
from pomabotd.progress import EVALUATING, LOADING, SELECTING, WRITING, CycleProgress, tracking
from pomabotd.resume import clear_resume, pending_resume
from pomabotd.sources import CycleInput
from pomabotd.wire import Rejected
from pomabotd.words import plural

__all__ = [
    "CycleReport",
    "HaltPolicy",
    "InputLoader",
    "LedgerOnDemand",
    "Portfolio",
    "PreparedInput",
    "run_cycle",
]

#: How many market ids a log line names before it counts the rest.
_NAMED = 10


class HaltPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The halt rules' thresholds, and the decision settings in force (a change lifts a halt;
    None: unknown, nothing is compared)."""

    rules: HaltRules = msgspec.field(default_factory=HaltRules)
    settings: Settings | None = None


class InputLoader(Protocol):
    """Where a cycle's markets and signals come from; built once, kept across cycles.

    `pomabotd.sources.Sources` is the real one.
    """

    async def load(self, as_of: datetime, *, held: frozenset[str] = frozenset()) -> CycleInput:
        """One cycle's input, as of `as_of`, with the `held` markets (of open positions)."""
        ...

    async def aclose(self) -> None:
        """Release what the loader holds (connections, caches)."""
        ...


class PreparedInput:
    """An input built before the cycle (stress times its generation apart from the cycle)."""

    def __init__(self, cycle_input: CycleInput) -> None:
        self._input = cycle_input

    async def load(self, as_of: datetime, *, held: frozenset[str] = frozenset()) -> CycleInput:
        """The prepared input, whatever `as_of` and `held` are."""
        return self._input

    async def aclose(self) -> None:
        """Nothing to release."""


class CycleReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a finished cycle did, for the summary printed or logged after it."""

    metrics: CycleMetrics
    as_of: datetime
    opened: tuple[Position, ...]
    closed: tuple[CloseEvent, ...]
    selection: Selection
    rejected: tuple[Rejected, ...]
    failures: tuple[tuple[str, str], ...]
    output_dir: str
    halt: HaltStep = msgspec.field(default_factory=lambda: HaltStep(state=HaltState()))
    #: The decoder the workers used for the columnar kernel, and how many markets it decoded
    #: (the others: msgspec, or market by market).
    decoder: str = "msgspec"
    markets_native: int = 0
    #: What evaluated the cycle, and how many workers it had.
    executor: ExecutorInfo = ExecutorInfo(name="inline", workers=0)
    #: Whether the peak memory (`metrics.rss_mb`) includes the executor's workers.
    memory_covers_workers: bool = True
    #: The YES price this cycle saw for each market of a position open after it (a held
    #: market missing from the input has none).
    marks: dict[str, float] = msgspec.field(default_factory=dict)

    def first_failures(self) -> list[dict[str, str]]:
        """The first markets that failed (up to ten, in input order) with why, as the cycle's
        log line, its summary and `run-once --json` show them; `metrics.markets_failed`
        counts them all."""
        return [{"market_id": market_id, "error": error}
                for market_id, error in self.failures[:_NAMED]]


class Portfolio:
    """The paper portfolio between cycles, rebuilt from the output directory."""

    def __init__(self, state: LedgerState, halt: HaltState | None = None) -> None:
        self.open_positions: tuple[Position, ...] = state.open_positions
        self.realized_pnl_usd: float = state.realized_pnl_usd
        self.last_cycle_id: int = state.last_cycle_id
        self.halt: HaltState = HaltState() if halt is None else halt
        self.last_metrics: CycleMetrics | None = None
        #: Held markets missing from the last cycle's input -> the cycle they went missing
        #: in (counted since this process read the portfolio).
        self.missing_since: dict[str, int] = {}

    @classmethod
    def recover(cls, ledger: Ledger, scanned: LedgerScan | None = None) -> Portfolio:
        """Read the ledger back, cutting off any cycle a crash left unfinished (`scanned`:
        see `Ledger.recover`)."""
        snapshot = ledger.recover(scanned)
        if snapshot.truncated_bytes:
            unfinished = (
                f" ({plural(snapshot.dropped_lines, 'line')} of unfinished cycle "
                f"{snapshot.dropped_cycle_id})"
                if snapshot.dropped_cycle_id is not None
                else ""
            )
            logger.bind(
                event="ledger_recovered", output_dir=str(ledger.directory),
                truncated_bytes=snapshot.truncated_bytes, dropped_lines=snapshot.dropped_lines,
                dropped_cycle_id=snapshot.dropped_cycle_id,
            ).warning(
                "recovered {}: cut {} left by an interrupted cycle{}",
                str(ledger.directory), plural(snapshot.truncated_bytes, "byte"), unfinished,
            )
        return cls.from_snapshot(snapshot)

    @classmethod
    def read(cls, directory: Path) -> Portfolio:
        """The portfolio an output directory holds, read without creating or locking it."""
        return cls.from_snapshot(read_ledger(directory))

    @classmethod
    def from_snapshot(cls, snapshot: LedgerSnapshot) -> Portfolio:
        """`state.json`'s portfolio and halt state, with the finished cycles after it replayed
        on top."""
        portfolio = cls(snapshot.portfolio(), snapshot.halt_state())
        portfolio.last_metrics = snapshot.last_metrics
        return portfolio

    def state(self) -> LedgerState:
        """The portfolio as `state.json` records it."""
        return LedgerState(
            open_positions=self.open_positions,
            realized_pnl_usd=self.realized_pnl_usd,
            last_cycle_id=self.last_cycle_id,
        )


class LedgerOnDemand:
    """An output directory that is created and locked only once a cycle has something to
    write, so a cycle that fails leaves no trace; `run-once` uses it.

    The portfolio is first read (and the history checked) without a lock; once the ledger is
    open and locked, the directory must still end at the cycle it was read at, and the check
    is not run again when its files are still the ones read.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._ledger: Ledger | None = None
        self._scanned: LedgerScan | None = None

    def __enter__(self) -> LedgerOnDemand:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def portfolio(self) -> Portfolio:
        """The portfolio the directory holds now (empty if it does not exist)."""
        self._scanned = scan_ledger(self.directory)
        return Portfolio.from_snapshot(self._scanned.snapshot)

    def open_for(self, portfolio: Portfolio) -> Ledger:
        """Open and lock the directory, recover it, and check nobody wrote meanwhile."""
        if self._ledger is None:
            ledger = Ledger(self.directory)
            try:
                recovered = Portfolio.recover(ledger, self._scanned)
            except BaseException:
                ledger.close()
                raise
            self._ledger = ledger
            if recovered.last_cycle_id != portfolio.last_cycle_id:
                raise LedgerError(
                    f"{self.directory} moved on to cycle {recovered.last_cycle_id} while cycle "
                    f"{portfolio.last_cycle_id + 1} ran; run it again"
                )
        return self._ledger

    def close(self) -> None:
        """Release the directory, if it was opened."""
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            ledger.close()


async def run_cycle(
    runtime: Runtime,
    inputs: InputLoader,
    portfolio: Portfolio,
    ledger: Ledger | LedgerOnDemand,
    limits: RiskLimits,
    *,
    as_of: datetime | None,
    clock: Callable[[], datetime],
    on_progress: Callable[[int, int], None] | None = None,
    halt: HaltPolicy | None = None,
    deadline_s: float | None = None,
    progress: CycleProgress | None = None,
) -> CycleReport:
    """Run one cycle against `portfolio` and append its lines to `ledger`.

    Without `as_of` the cycle runs as of its own start (`started_at`), so positions never open
    before the cycle that opened them started. A cycle with no usable market, or whose every
    signal line was refused, fails with `CycleError` before a `LedgerOnDemand` is opened. The
    portfolio is only updated once the cycle's lines are written, so a failure anywhere leaves
    the files and the in-memory state at the previous finished cycle. `halt` holds the halt
    rules' thresholds and the decision settings (default: the default thresholds, and settings
    unknown, so that no configuration change can lift a halt).

    A cycle still loading or evaluating `deadline_s` seconds after it started is abandoned
    with `CycleTimeoutError`, saying where it was, nothing of it written (`daemon.
    cycle_timeout_s`; None: no deadline). `progress`, if given, follows the cycle's phases
    for whoever wants to know where it is meanwhile.
    """
    policy = HaltPolicy() if halt is None else halt
    progress = CycleProgress() if progress is None else progress
    cycle_id = portfolio.last_cycle_id + 1
    started_at = clock()
    when = started_at if as_of is None else as_of
    held = frozenset(position.market_id for position in portfolio.open_positions)

    def evaluated(done: int, total: int) -> None:
        progress.evaluated(done, total)
        if on_progress is not None:
            on_progress(done, total)

    # Every line logged while the cycle runs (its sources' included) carries its cycle_id.
    with (
        runtime.gauge() as meter,
        logger.contextualize(cycle_id=cycle_id),
        tracking(progress),
    ):
        deadline = asyncio.timeout(deadline_s)
        try:
            async with deadline:
                progress.enter(LOADING)
                cycle_input = await inputs.load(when, held=held)
                progress.enter(EVALUATING)
                result = await runtime.evaluate(
                    cycle_input.markets,
                    cycle_input.markets_source,
                    cycle_input.signals,
                    cycle_input.signals_source,
                    when,
                    keep=held,
                    on_progress=evaluated,
                    meter=meter,
                )
        except TimeoutError:
            if not deadline.expired():
                raise
            raise _timed_out(cycle_id, deadline_s, progress) from None
        progress.enter(SELECTING)
        rejected = (*cycle_input.rejected, *result.rejected)
        _warn_refused(cycle_input, result, rejected)
        _warn_kernel(result.kernel_errors)
        _warn_kills(result.worker_kills)
        _warn_failures(result.failures)
        _require_usable(cycle_input, result, rejected)
        writer = ledger if isinstance(ledger, Ledger) else ledger.open_for(portfolio)
        still_open, closes = mark_positions(
            portfolio.open_positions, result.markets, result.kept, cycle_id, when
        )
        missing = {market_id: portfolio.missing_since.get(market_id, cycle_id)
                   for market_id in sorted(held - result.markets.keys())}
        realized = round(portfolio.realized_pnl_usd + sum(c.pnl_usd for c in closes), 2)
        current_equity = equity(limits.portfolio_value, realized)
        resume = pending_resume(writer.directory)
        step = advance(
            portfolio.halt,
            cycle_id=cycle_id,
            closed=closed_positions((*portfolio.open_positions, *closes)),
            rules=policy.rules,
            settings=policy.settings,
            resume=resume is not None,
        )
        selection = select(
            result.candidates,
            current_equity,
            still_open,
            limits,
            excluded={close.market_id for close in closes},
        )
        if step.state.halted:
            selection = _held_back(selection, step.state)
        opened = tuple(
            open_position(pick, _question(result, pick.evaluation.market_id), cycle_id, when,
                          limits)
            for pick in selection.picks
        )
        open_now = still_open + opened
        finished_at = clock()
    metrics = msgspec.structs.replace(
        _metrics(
            cycle_id, started_at, finished_at, result, selection, closes, open_now,
            current_equity, realized, cycle_input, len(rejected), meter,
        ),
        halted=step.state.halted,
        halt_reason=step.state.reason,
        held_missing=len(missing),
    )
    progress.enter(WRITING)
    writer.append_cycle((*closes, *opened), metrics)
    portfolio.open_positions = open_now
    portfolio.realized_pnl_usd = realized
    portfolio.last_cycle_id = cycle_id
    portfolio.last_metrics = metrics
    portfolio.halt = step.state
    newly_missing = [m for m, since in missing.items() if since == cycle_id]
    portfolio.missing_since = missing
    try:
        writer.save_state(portfolio.state(), step.state)
    except LedgerError as exc:
        logger.bind(event="state_not_saved", cycle_id=cycle_id).warning(
            "{}; the output files must not be rotated until it can be written", exc
        )
    if resume is not None:
        with contextlib.suppress(LedgerError):
            clear_resume(writer.directory, resume)
    _log_halt(step, cycle_id, writer.directory)
    _log_missing(newly_missing, missing, cycle_id, cycle_input.markets_source)
    figures = halt_figures(step.state.window, policy.rules)
    executor = runtime.info()
    logger.bind(
        event="cycle",
        cycle_id=cycle_id,
        markets=metrics.markets_total,
        opportunities=metrics.opportunities,
        opened=len(opened),
        closed=len(closes),
        wall_s=round(metrics.processing_time_ms / 1000.0, 4),
        throughput_per_s=metrics.throughput_per_s,
        peak_rss_mb=metrics.rss_mb,
        peak_covers_workers=meter.covers_workers,
        executor=executor.name,
        workers=executor.workers,
        halted=metrics.halted,
        held_missing=len(missing),
        halt_figures=msgspec.to_builtins(figures),
        decoder=runtime.decoder,
        markets_native=result.markets_native,
    ).info(
        "cycle {} done: {}, {}, {} opened, {} closed in {:.3f} s "
        "({:,.0f} markets/s, peak {:.1f} MB{}, {} decoder) on {}{}; halt rules: {}",
        cycle_id, plural(metrics.markets_total, "market"),
        plural(metrics.opportunities, "opportunity", "opportunities"), len(opened), len(closes),
        metrics.processing_time_ms / 1000.0, metrics.throughput_per_s, metrics.rss_mb,
        "" if meter.covers_workers else " in pomabotd alone: the workers' was not measured",
        runtime.decoder, _described(executor),
        f"; {plural(len(missing), 'held market')} missing from the input" if missing else "",
        describe_halt_figures(figures, policy.rules),
    )
    return CycleReport(
        metrics=metrics,
        as_of=when,
        opened=opened,
        closed=closes,
        selection=selection,
        rejected=rejected,
        failures=tuple(result.failures),
        executor=executor,
        memory_covers_workers=meter.covers_workers,
        output_dir=str(writer.directory),
        halt=step,
        decoder=runtime.decoder,
        markets_native=result.markets_native,
        marks={position.market_id: result.markets[position.market_id].price
               for position in open_now if position.market_id in result.markets},
    )


def _timed_out(
    cycle_id: int, deadline_s: float | None, progress: CycleProgress
) -> CycleTimeoutError:
    """The error of a cycle abandoned at its deadline, saying where it was."""
    where = progress.describe()
    return CycleTimeoutError(
        f"abandoned at its deadline of {deadline_s:g} s (daemon.cycle_timeout_s) while "
        f"{where}; nothing of cycle {cycle_id} was written",
        phase=where,
    )


def _warn_kernel(errors: list[str]) -> None:
    """One WARNING when the columnar kernel failed on some pieces: they ran market by market,
    with the same results, at a fraction of the speed."""
    if errors:
        logger.bind(event="kernel_failed", pieces=len(errors), error=errors[0]).warning(
            "the columnar kernel failed on {} ({}); they were evaluated market by "
            "market instead", plural(len(errors), "piece"), errors[0],
        )


def _warn_failures(failures: list[tuple[str, str]]) -> None:
    """One WARNING naming the first markets whose evaluation failed and why (`timeout`,
    `worker crashed`, the exception), and counting the rest."""
    if not failures:
        return
    named = ", ".join(f"{market_id} ({error})" for market_id, error in failures[:_NAMED])
    rest = len(failures) - _NAMED
    logger.bind(
        event="markets_failed", failed=len(failures),
        failures=[{"market_id": m, "error": e} for m, e in failures[:_NAMED]],
    ).warning(
        "{} markets failed: {}{}", len(failures), named,
        f" and {rest} more" if rest > 0 else "",
    )


def _warn_kills(kills: list[str]) -> None:
    """One WARNING per worker the runtime killed (stuck in a market, stopped, or standing
    still while work waited): its work ran again on a new worker."""
    for kill in kills:
        logger.bind(event="worker_killed").warning("{}; its work ran again", kill)


def _log_missing(newly: list[str], missing: dict[str, int], cycle_id: int, source: str) -> None:
    """One WARNING when held markets go missing from the input (the cycle line counts them
    every cycle while they stay missing)."""
    if not newly:
        return
    logger.bind(event="held_missing", cycle_id=cycle_id, markets=newly,
                held_missing=len(missing)).warning(
        "cycle {}: {} missing from {} ({}): their positions stay open, unmarked, until it "
        "delivers them again",
        cycle_id, plural(len(newly), "held market is", "held markets are"), source,
        ", ".join(newly[:_NAMED]) + (
            f" and {len(newly) - _NAMED} more" if len(newly) > _NAMED else ""),
    )


def _held_back(selection: Selection, halt: HaltState) -> Selection:
    """A halted cycle opens nothing: every pick becomes a skip naming the halt's rule."""
    held = tuple(
        Skip(market_id=pick.evaluation.market_id, reason=f"halted: {halt.rule or 'halt rules'}")
        for pick in selection.picks
    )
    return Selection(
        picks=(), skipped=(*selection.skipped, *held), opportunities=selection.opportunities
    )


def _log_halt(step: HaltStep, cycle_id: int, directory: Path) -> None:
    """One INFO line when a halt is lifted, one WARNING line when the rules trip."""
    if step.lifted is not None:
        why = (
            "a resume request" if step.lifted == "resume"
            else f"a configuration change ({', '.join(step.changed)})"
        )
        logger.bind(
            event="halt_lifted", cycle_id=cycle_id, lifted_by=step.lifted,
            changed=list(step.changed),
        ).info(
            "cycle {}: halt lifted by {}; the halt rules judge what closes from now on",
            cycle_id, why,
        )
    if step.tripped:
        state = step.state
        logger.bind(
            event="halt", cycle_id=cycle_id, rule=state.rule, reason=state.reason,
        ).warning(
            "cycle {}: halted, opening no positions until `pomabotd resume --out {}` or a "
            "change of [risk], [strategy] or batch.evaluator: {}",
            cycle_id, directory, state.reason,
        )


def _warn_refused(
    cycle_input: CycleInput, result: RunResult, rejected: tuple[Rejected, ...]
) -> None:
    """One WARNING per input source with refused records, with its counts."""
    totals = {
        cycle_input.markets_source: result.markets_total + len(cycle_input.rejected),
        cycle_input.signals_source: result.signals_total,
    }
    by_source: dict[str, list[Rejected]] = {}
    for record in rejected:
        by_source.setdefault(record.source, []).append(record)
    for source, records in by_source.items():
        total = totals.get(source, len(records))
        logger.bind(event="records_refused", source=source, refused=len(records),
                    records=total).warning(
            "{}: {} of {} refused (first: {})", source, len(records), plural(total, "record"),
            records[0],
        )


def _require_usable(
    cycle_input: CycleInput, result: RunResult, rejected: tuple[Rejected, ...]
) -> None:
    """A cycle on nothing, or on news of which not one line could be read, is a failure: the
    input is surely wrong, and an empty cycle in the files would hide it."""
    markets_source = cycle_input.markets_source
    if result.markets_evaluated + result.markets_failed == 0:
        refused = [r for r in rejected if r.source == markets_source]
        if not refused:
            raise CycleError(f"no market to evaluate: {markets_source} holds no record")
        raise CycleError(
            f"no usable market: every record of {markets_source} was refused "
            f"({plural(len(refused), 'record')}; first: {refused[0]})"
        )
    signals_source = cycle_input.signals_source
    refused_signals = [r for r in rejected if r.source == signals_source]
    if result.signals_total and len(refused_signals) >= result.signals_total:
        raise CycleError(
            f"no usable signal: every record of {signals_source} was refused "
            f"({plural(len(refused_signals), 'record')}; first: {refused_signals[0]})"
        )


def _described(executor: ExecutorInfo) -> str:
    """`dask with 2 workers`, `local with 1 worker`, `inline` (in pomabotd's process)."""
    if not executor.workers:
        return f"{executor.name} (in pomabotd's process)"
    return f"{executor.name} with {plural(executor.workers, 'worker')}"


def _question(result: RunResult, market_id: str) -> str:
    market: Market | None = result.markets.get(market_id)
    return market.question if market is not None else ""


def _metrics(
    cycle_id: int,
    started_at: datetime,
    finished_at: datetime,
    result: RunResult,
    selection: Selection,
    closes: tuple[CloseEvent, ...],
    open_now: tuple[Position, ...],
    current_equity: float,
    realized: float,
    cycle_input: CycleInput,
    refused: int,
    meter: Gauge,
) -> CycleMetrics:
    """The cycle's metrics line. `refused` counts every record of the cycle's input that was
    refused (by a source's adapter or by the decoder, markets and signals alike): the one
    count the summary, `metrics.jsonl` and the daemon's `/metrics` all show."""
    elapsed_s = max((finished_at - started_at).total_seconds(), 1e-9)
    rejected_before_run = len(cycle_input.rejected)
    rejected_markets = rejected_before_run + sum(
        1 for r in result.rejected if r.source == cycle_input.markets_source
    )
    total = result.markets_total + rejected_before_run
    evaluated = result.markets_evaluated
    return CycleMetrics(
        cycle_id=cycle_id,
        started_at=started_at,
        finished_at=finished_at,
        markets_total=total,
        markets_evaluated=evaluated,
        markets_failed=result.markets_failed,
        markets_rejected=rejected_markets,
        retries=result.retries,
        timeouts=result.timeouts,
        worker_restarts=result.worker_restarts,
        processing_time_ms=round(elapsed_s * 1000.0, 3),
        throughput_per_s=round(evaluated / elapsed_s, 1),
        avg_eval_us=round(result.eval_us_total / evaluated, 3) if evaluated else 0.0,
        rss_mb=round(meter.peak_mb, 1),
        cpu_percent=round(meter.cpu_percent(), 1),
        opportunities=selection.opportunities,
        selected=len(selection.picks),
        closed=len(closes),
        open_positions=len(open_now),
        portfolio_risk_pct=round(portfolio_risk_pct(open_now, current_equity), 4),
        equity_usd=round(current_equity, 2),
        realized_pnl_usd=realized,
        success_rate=round(evaluated / total, 6) if total else 1.0,
        sources=msgspec.structs.replace(cycle_input.stats, records_refused=refused),
    )

