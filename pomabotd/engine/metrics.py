"""The per-cycle metrics record (SPEC section 8), one `metrics.jsonl` line per finished cycle."""

from __future__ import annotations

from datetime import datetime

from msgspec import Struct

__all__ = ["CycleMetrics"]


class CycleMetrics(Struct, frozen=True, kw_only=True):
    """What one cycle did and what it cost; every resource figure is measured, never estimated.

    Its line is written last, so it also marks the cycle as finished: positions lines whose
    `cycle_id` has no metrics line belong to a cycle that never completed.
    """

    cycle_id: int
    started_at: datetime
    finished_at: datetime
    markets_total: int
    markets_evaluated: int
    markets_failed: int
    markets_rejected: int
    retries: int
    timeouts: int
    worker_restarts: int
    processing_time_ms: float
    throughput_per_s: float
    avg_eval_us: float
    rss_mb: float
    cpu_percent: float
    opportunities: int
    selected: int
    closed: int
    open_positions: int
    portfolio_risk_pct: float
    equity_usd: float
    realized_pnl_usd: float
    success_rate: float
