"""What the daemon knows about itself, shared by its loop and its status endpoint.

The loop writes it between awaits and the endpoint reads it on the same event loop, so no lock
is needed. Totals live here once; the Prometheus exposition and `/healthz` both read them. The
last `RECENT_CYCLES` cycles' metrics are kept (read back from the ledger's tail at start) for
the status page, with the prices the last cycle marked open positions at; `changes` tells the
page's update channel when anything it shows changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter, deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec

from pomabotd._version import __version__
from pomabotd.config import Config
from pomabotd.cycle import CycleReport, Portfolio
from pomabotd.domain.portfolio import equity
from pomabotd.domain.research import HaltFigures, halt_figures
from pomabotd.domain.selection import portfolio_risk_pct
from pomabotd.engine.kernels.native import decoder_in_use
from pomabotd.engine.runtime import ExecutorInfo
from pomabotd.money import usd
from pomabotd.output import CycleMetrics
from pomabotd.progress import CycleProgress
from pomabotd.resume import RESUME_FILE
from pomabotd.sources import SourceStats
from pomabotd.words import plural

__all__ = [
    "FEED_RESULTS",
    "NEWS_TOTALS",
    "NOTIFY_RESULTS",
    "RECENT_CYCLES",
    "TOTALS",
    "Changes",
    "DaemonState",
]

#: Cumulative counts over the daemon's life, summed from each finished cycle's metrics.
TOTALS: Final = (
    "markets_evaluated",
    "markets_failed",
    "markets_rejected",
    "timeouts",
    "retries",
    "worker_restarts",
)
#: Feed reads by result, summed from each finished cycle's `sources` counts (`feeds_<result>`).
FEED_RESULTS: Final = ("ok", "unchanged", "failed")
#: News counts summed from each finished cycle's `sources` counts.
NEWS_TOTALS: Final = ("news_items", "news_duplicates", "news_signals")
#: Notifications by what became of them: posted, failed for good, dropped over
#: `notify.max_per_minute`, dropped because the queue was full.
NOTIFY_RESULTS: Final = ("sent", "failed", "rate_limited", "queue_full")
#: Finished cycles whose metrics the daemon keeps for the status page.
RECENT_CYCLES: Final = 50


class Changes:
    """A count of the changes worth showing, which coroutines on the loop can wait on."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        """Count a change and wake every waiter."""
        self.version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seen: int, timeout: float) -> int:
        """The version once it passes `seen`, or as it is after `timeout` seconds."""
        if self.version <= seen:
            event = self._event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        return self.version


class DaemonState:
    """The running configuration and portfolio, the last cycle, and the daemon's counters."""

    def __init__(
        self, config: Config, portfolio: Portfolio, recent: tuple[CycleMetrics, ...] = ()
    ) -> None:
        self.config = config
        self.portfolio = portfolio
        #: The last finished cycles' metrics, oldest first.
        self.recent_cycles: deque[CycleMetrics] = deque(recent, maxlen=RECENT_CYCLES)
        #: market id -> the YES price the last cycle saw, for the open positions.
        self.marks: dict[str, float] = {}
        self.changes = Changes()
        self.pid = os.getpid()
        self.started_at = datetime.now(UTC)
        self.started_monotonic = time.monotonic()
        self.status_addr: str | None = None
        self.last_report: CycleReport | None = None
        self.last_error: str | None = None
        self.last_failed_cycle: int | None = None
        self.cycle_started: float | None = None  # monotonic start of the cycle in flight
        #: Where the cycle in flight is (None between cycles).
        self.cycle_progress: CycleProgress | None = None
        #: When (monotonic) the next cycle is due, while the loop waits for it; None while a
        #: cycle runs or none is scheduled (batch disabled).
        self.next_cycle_at: float | None = None
        #: What the loop is busy with between cycles, when it is not waiting ("reloading").
        self.busy_with: str | None = None
        self.cycles_ok = 0
        self.cycles_failed = 0
        #: Cycles failed in a row since the last that succeeded.
        self.failed_in_a_row = 0
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.stopping = False
        #: Why the output directory is broken (its ledger failed its check on a reload), or
        #: None: while it is set, no cycle runs into it.
        self.ledger_problem: str | None = None
        self.totals = dict.fromkeys(TOTALS, 0)
        self.feeds = dict.fromkeys(FEED_RESULTS, 0)
        self.news = dict.fromkeys(NEWS_TOTALS, 0)
        self.notifications = dict.fromkeys(NOTIFY_RESULTS, 0)
        #: Requests that failed for good, and input records refused, per source name.
        self.fetch_errors: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        #: What evaluates the cycles (set by the loop once the runtime started, and after
        #: each cycle and reload).
        self.executor = ExecutorInfo(name="inline", workers=0)

    def cycle_finished(self, report: CycleReport) -> None:
        """Count a cycle that wrote its lines."""
        self.last_report = report
        self.executor = report.executor
        self.last_error = None
        self.last_failed_cycle = None
        self.failed_in_a_row = 0
        self.cycles_ok += 1
        metrics = report.metrics
        for name in TOTALS:
            self.totals[name] += getattr(metrics, name)
        self._count_sources(metrics.sources)
        self.refused.update(record.source for record in report.rejected)
        self.recent_cycles.append(metrics)
        self.marks = dict(report.marks)
        self.changes.bump()

    def cycle_failed(
        self,
        cycle_id: int,
        error: str,
        stats: SourceStats | None = None,
        source: str | None = None,
    ) -> None:
        """Count a cycle that wrote nothing, and what its loading ran into (`stats`, from
        `source` when one source gave up)."""
        self.last_error = error
        self.last_failed_cycle = cycle_id
        self.cycles_failed += 1
        self.failed_in_a_row += 1
        if stats is not None:
            self._count_sources(stats)
            if source is not None and stats.records_refused:
                self.refused[source] += stats.records_refused
        self.changes.bump()

    def ledger_replaced(self, portfolio: Portfolio, recent: tuple[CycleMetrics, ...]) -> None:
        """Show another ledger (a reload that changed the output directory): its portfolio
        and its last cycles; no price is known for its positions until a cycle marks them."""
        self.portfolio = portfolio
        self.recent_cycles = deque(recent, maxlen=RECENT_CYCLES)
        self.marks = {}

    def _count_sources(self, stats: SourceStats) -> None:
        for result in FEED_RESULTS:
            self.feeds[result] += getattr(stats, f"feeds_{result}")
        for name in NEWS_TOTALS:
            self.news[name] += getattr(stats, name)
        self.fetch_errors.update(stats.fetch_errors)

    def equity_usd(self) -> float:
        """Starting value plus realized P&L."""
        return equity(self.config.risk.portfolio_value, self.portfolio.realized_pnl_usd)

    def risk_pct(self) -> float:
        """Open risk in % of equity."""
        return portfolio_risk_pct(self.portfolio.open_positions, self.equity_usd())

    def stall(self, grace_s: float = 0.0) -> str | None:
        """Why the daemon is not making progress now, or None.

        A cycle makes progress until it outruns `daemon.cycle_timeout_s` (it is then being
        abandoned, which takes moments); between cycles the loop makes progress until the next
        cycle is overdue by as long (it is stuck elsewhere, say in a reload that cannot end).
        `grace_s` is added to both, for the watchdog.
        """
        if self.stopping:
            return None
        now = time.monotonic()
        deadline = self.config.daemon.cycle_timeout_s
        if self.cycle_started is not None:
            ran = now - self.cycle_started
            if ran > deadline + grace_s:
                where = self.cycle_progress.describe() if self.cycle_progress else "running"
                return (f"cycle {self.portfolio.last_cycle_id + 1} has run {ran:.1f} s, past "
                        f"daemon.cycle_timeout_s = {deadline:g} s, {where}")
        elif self.next_cycle_at is not None and self.config.batch.enabled:
            late = now - self.next_cycle_at
            if late > deadline + grace_s:
                return (f"no cycle has started for {late:.1f} s since one was due (more than "
                        f"daemon.cycle_timeout_s = {deadline:g} s): the daemon is "
                        f"{self.busy_with or 'stuck between cycles'}")
        return None

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, body): healthy while not stopping, the output directory is sound, the
        daemon makes progress (`stall`), and the last cycle, if any, succeeded.

        A halt leaves the daemon healthy: it is alive and doing what it was built to do (it
        still evaluates, marks and closes); the body says `halted` and why, and whether a
        `pomabotd resume` request waits for the next cycle.
        """
        if self.stopping:
            reason: str | None = "stopping"
        else:
            reason = self.ledger_problem or self.stall()
        if reason is None and self.last_error is not None:
            reason = f"cycle {self.last_failed_cycle} failed: {self.last_error}"
        healthy = reason is None
        progress = self.cycle_progress
        body: dict[str, Any] = {
            "status": "ok" if healthy else "unhealthy",
            "reason": reason,
            "pid": self.pid,
            "version": __version__,
            "started_at": self.started_at,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "batch_enabled": self.config.batch.enabled,
            "decoder": decoder_in_use(self.config.batch.decoder),
            "executor": {"name": self.executor.name, "workers": self.executor.workers},
            "cycles_ok": self.cycles_ok,
            "cycles_failed": self.cycles_failed,
            "cycles_failed_in_a_row": self.failed_in_a_row,
            "cycle_running_s": (
                None if self.cycle_started is None
                else round(time.monotonic() - self.cycle_started, 3)
            ),
            "cycle_phase": (
                progress.describe() if progress is not None and self.cycle_started is not None
                else None
            ),
            "cycle_timeout_s": self.config.daemon.cycle_timeout_s,
            "last_cycle": (
                None if self.last_report is None
                else msgspec.to_builtins(self.last_report.metrics)
            ),
            "reloads_ok": self.reloads_ok,
            "reloads_failed": self.reloads_failed,
            "output_broken": self.ledger_problem is not None,
            **self.halt_fields(),
        }
        return healthy, body

    def halt_fields(self) -> dict[str, Any]:
        """The halt rules' state for `/healthz`: whether they halted, and the figures they
        judge as they stand (visible before a rule trips); the held markets the last cycle's
        input lacked."""
        halt = self.portfolio.halt
        return {
            "halted": halt.halted,
            "halt_rule": halt.rule,
            "halt_reason": halt.reason,
            "halted_since_cycle": halt.since_cycle,
            "halt_judging_since_cycle": halt.judging_since,
            "resume_pending": (Path(self.config.daemon.output_dir) / RESUME_FILE).exists(),
            "halt_figures": msgspec.to_builtins(self.halt_figures()),
            "held_missing": len(self.portfolio.missing_since),
        }

    def halt_figures(self) -> HaltFigures:
        """The figures the halt rules judge now, over the closes since they last started."""
        return halt_figures(self.portfolio.halt.window, self.config.halt)

    def summary(self) -> str:
        """One line on the last cycle, for systemd's `STATUS=` and for `pomabotd status`."""
        if self.ledger_problem is not None:
            return self.ledger_problem
        if not self.config.batch.enabled:
            prefix = "batch disabled, no cycles run"
        elif self.last_error is not None:
            return f"cycle {self.last_failed_cycle} failed: {self.last_error}"
        else:
            prefix = ""
        report = self.last_report
        if report is None:
            return prefix or "waiting for the first cycle"
        m = report.metrics
        line = (
            f"cycle {m.cycle_id}: {plural(m.markets_total, 'market')}, "
            f"{plural(m.opportunities, 'opportunity', 'opportunities')}, "
            f"{m.selected} opened, {m.closed} closed in {m.processing_time_ms / 1000:.2f} s; "
            f"{m.open_positions} open, equity {usd(m.equity_usd)}"
        )
        halt = self.portfolio.halt
        if halt.halted:
            line += f"; HALTED since cycle {halt.since_cycle} ({halt.rule}), opening nothing"
        return f"{prefix}; last {line}" if prefix else line
