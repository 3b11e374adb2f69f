"""The built-in evaluator: belief update then the trade gate, for one market.

This is the scalar reference every fast path is checked against. It folds the signals over
plain locals and runs the gate table once, building one `Row` and one `Evaluation`. Timing and
failures are the runtime's business: the domain has no clock, so `elapsed_us` is 0 and `error`
is None here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal

from pomabotd.domain.belief import Prior, _fold, _fold_own
from pomabotd.domain.gate import GATE, Row, edge, edges, explain, first_failure, side_of
from pomabotd.domain.models import Evaluation, Market, Signal

__all__ = ["evaluate_market", "evaluate_tradeable"]

_EARLY: Final = tuple(check.passes for check in GATE if not check.needs_belief)
_LATE: Final = tuple(check.passes for check in GATE if check.needs_belief)


def evaluate_market(
    market: Market, signals: Sequence[Signal], as_of: datetime, *, prior: Prior = "fixed"
) -> Evaluation:
    """Evaluate one market at `as_of` from its signals (others' signals are ignored), its
    belief starting from `prior` (`strategy.prior`)."""
    low, high, confidence, applied, rejected, _ = _fold(market, signals, as_of, prior)
    edge, expected = edges(market.price, low, high)
    row = Row(market, as_of, low, high, confidence, edge)
    failed = first_failure(row)
    return _evaluation(row, expected, failed, applied, rejected)


def evaluate_tradeable(
    market: Market, own_signals: Sequence[Signal], as_of: datetime, *, prior: Prior = "fixed"
) -> Evaluation | None:
    """`evaluate_market` when every check passes, else None; `own_signals` must all be about
    `market` (the runtime groups them by market before evaluating).

    For callers that keep only tradeable markets (a cycle without per-market output): the same
    decisions, but a market failing a check that needs no belief is not folded, and no rejection
    sentence or Evaluation is built for the markets that are dropped anyway.
    """
    row = Row(market, as_of)
    for passes in _EARLY:
        if not passes(row):
            return None
    low, high, confidence, applied, rejected, _ = _fold_own(market, own_signals, as_of, prior)
    row.low = low
    row.high = high
    row.confidence = confidence
    row.edge = edge(market.price, low, high)
    for passes in _LATE:
        if not passes(row):
            return None
    return _evaluation(row, edges(market.price, low, high)[1], None, applied, rejected)


def _evaluation(
    row: Row, expected: float, failed: str | None, applied: int, rejected: int
) -> Evaluation:
    market = row.market
    side: Literal["YES", "NO", "NONE"] = (
        "NONE" if failed is not None else side_of(market.price, row.low)
    )
    return Evaluation(
        market_id=market.id,
        category=market.category,
        price=market.price,
        belief_low=row.low,
        belief_high=row.high,
        confidence=row.confidence,
        side=side,
        edge=row.edge,
        expected_edge=expected,
        failed_check=failed,
        reason=explain(row, failed),
        signals_applied=applied,
        signals_rejected=rejected,
    )
