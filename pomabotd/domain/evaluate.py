"""The built-in evaluator: belief update then the trade gate, for one market.

This runs up to a million times a cycle inside the workers, so it folds the signals and runs the
gate over plain locals and builds exactly one Struct, the `Evaluation`. Timing and failures are
the runtime's business: the domain has no clock, so `elapsed_us` is 0 and `error` is None here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pomabotd.domain.belief import _fold, _fold_own
from pomabotd.domain.checks import _decide, _early, _explain, _gate, _tradeable
from pomabotd.domain.models import Evaluation, Market, Signal

__all__ = ["evaluate_market", "evaluate_tradeable"]


def evaluate_market(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Evaluate one market at `as_of` from its signals (others' signals are ignored)."""
    low, high, confidence, applied, rejected, _ = _fold(market, signals, as_of)
    failed, reason, side, edge, expected = _gate(market, low, high, confidence, as_of)
    return _evaluation(
        market, low, high, confidence, side, edge, expected, failed, reason, applied, rejected
    )


def evaluate_tradeable(
    market: Market, own_signals: Sequence[Signal], as_of: datetime
) -> Evaluation | None:
    """`evaluate_market` when every check passes, else None; `own_signals` must all be about
    `market` (the runtime groups them by market before evaluating).

    For callers that keep only tradeable markets (a cycle without per-market output): the same
    decisions, but a market failing a check that needs no belief is not folded, and no rejection
    sentence or Evaluation is built for the markets that are dropped anyway.
    """
    if _early(market, as_of) is not None:
        return None
    low, high, confidence, applied, rejected, _ = _fold_own(market.unknowns, own_signals, as_of)
    if not _tradeable(market, low, high, confidence):
        return None
    failed, side, edge, expected = _decide(market, low, high, confidence, as_of)
    reason = _explain(failed, market, low, high, confidence, as_of, edge)
    return _evaluation(
        market, low, high, confidence, side, edge, expected, failed, reason, applied, rejected
    )


def _evaluation(
    market: Market,
    low: float,
    high: float,
    confidence: float,
    side: Literal["YES", "NO", "NONE"],
    edge: float,
    expected: float,
    failed: str | None,
    reason: str,
    applied: int,
    rejected: int,
) -> Evaluation:
    return Evaluation(
        market_id=market.id,
        category=market.category,
        price=market.price,
        belief_low=low,
        belief_high=high,
        confidence=confidence,
        side=side,
        edge=edge,
        expected_edge=expected,
        failed_check=failed,
        reason=reason,
        signals_applied=applied,
        signals_rejected=rejected,
    )
