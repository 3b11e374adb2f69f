"""One paper-trading cycle: evaluate, mark and close, select, open, write.

This is the imperative shell around the pure domain: it owns the order of the steps and the
portfolio carried from one cycle to the next, and nothing else. Loading inputs is the sources'
job, evaluating markets the runtime's, writing lines the ledger's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec

from pomabotd.domain.models import CloseEvent, Market, Position, RiskLimits
from pomabotd.domain.portfolio import (
    LedgerState,
    equity,
    mark_positions,
    open_position,
    replay_ledger,
)
from pomabotd.domain.selection import Selection, portfolio_risk_pct, select
from pomabotd.engine.metrics import CycleMetrics
from pomabotd.engine.runtime import RunResult, Runtime
from pomabotd.log import logger
from pomabotd.output import Ledger
from pomabotd.sources.inputs import CycleInput
from pomabotd.wire import Rejected

__all__ = ["CycleReport", "Portfolio", "run_cycle"]


class CycleReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a finished cycle did, for the summary printed or logged after it."""

    metrics: CycleMetrics
    opened: tuple[Position, ...]
    closed: tuple[CloseEvent, ...]
    selection: Selection
    rejected: tuple[Rejected, ...]
    failures: tuple[tuple[str, str], ...]
    output_dir: str


class Portfolio:
    """The paper portfolio between cycles, rebuilt from `positions.jsonl` when a ledger opens."""

    def __init__(self, state: LedgerState) -> None:
        self.open_positions: tuple[Position, ...] = state.open_positions
        self.realized_pnl_usd: float = state.realized_pnl_usd
        self.last_cycle_id: int = state.last_cycle_id

    @classmethod
    def recover(cls, ledger: Ledger) -> Portfolio:
        """Read the ledger back, dropping any cycle a crash left unfinished."""
        snapshot = ledger.recover()
        if snapshot.truncated_bytes:
            unfinished = (
                f" ({snapshot.dropped_lines} lines of unfinished cycle {snapshot.dropped_cycle_id})"
                if snapshot.dropped_cycle_id is not None
                else ""
            )
            logger.warning(
                "recovered {}: cut {} bytes left by an interrupted cycle{}",
                ledger.directory, snapshot.truncated_bytes, unfinished,
            )
        state = replay_ledger(snapshot.events)
        portfolio = cls(state)
        portfolio.last_cycle_id = max(state.last_cycle_id, snapshot.last_cycle_id)
        return portfolio


def run_cycle(
    runtime: Runtime,
    ledger: Ledger,
    portfolio: Portfolio,
    cycle_input: CycleInput,
    limits: RiskLimits,
    as_of: datetime,
    *,
    clock: Callable[[], datetime],
    on_progress: Callable[[int, int], None] | None = None,
) -> CycleReport:
    """Run one cycle against `portfolio` and append its lines to `ledger`.

    The portfolio is only updated once the cycle's lines are written, so a failure anywhere
    leaves both the files and the in-memory state at the previous finished cycle.
    """
    cycle_id = portfolio.last_cycle_id + 1
    started_at = clock()
    held = {position.market_id for position in portfolio.open_positions}
    result = runtime.evaluate_sync(
        cycle_input.markets,
        cycle_input.markets_source,
        cycle_input.signals,
        cycle_input.signals_source,
        as_of,
        keep=held,
        on_progress=on_progress,
    )
    still_open, closes = mark_positions(
        portfolio.open_positions, result.markets, result.kept, cycle_id, as_of
    )
    realized = round(portfolio.realized_pnl_usd + sum(c.pnl_usd for c in closes), 2)
    current_equity = equity(limits.portfolio_value, realized)
    selection = select(
        result.candidates,
        current_equity,
        still_open,
        limits,
        excluded={close.market_id for close in closes},
    )
    opened = tuple(
        open_position(pick, _question(result, pick.evaluation.market_id), cycle_id, as_of, limits)
        for pick in selection.picks
    )
    open_now = still_open + opened
    finished_at = clock()
    metrics = _metrics(
        cycle_id, started_at, finished_at, result, selection, closes, open_now, current_equity,
        realized, len(cycle_input.rejected), cycle_input.markets_source,
    )
    ledger.append_cycle((*closes, *opened), metrics)
    portfolio.open_positions = open_now
    portfolio.realized_pnl_usd = realized
    portfolio.last_cycle_id = cycle_id
    return CycleReport(
        metrics=metrics,
        opened=opened,
        closed=closes,
        selection=selection,
        rejected=(*cycle_input.rejected, *result.rejected),
        failures=tuple(result.failures),
        output_dir=str(ledger.directory),
    )


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
    rejected_before_run: int,
    markets_source: str,
) -> CycleMetrics:
    elapsed_s = max((finished_at - started_at).total_seconds(), 1e-9)
    rejected_markets = rejected_before_run + sum(
        1 for r in result.rejected if r.source == markets_source
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
        rss_mb=round(result.peak_rss_mb, 1),
        cpu_percent=round(result.cpu_percent, 1),
        opportunities=selection.opportunities,
        selected=len(selection.picks),
        closed=len(closes),
        open_positions=len(open_now),
        portfolio_risk_pct=round(portfolio_risk_pct(open_now, current_equity), 4),
        equity_usd=round(current_equity, 2),
        realized_pnl_usd=realized,
        success_rate=round(evaluated / total, 6) if total else 1.0,
    )
