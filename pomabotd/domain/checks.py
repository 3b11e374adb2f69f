"""The gate's verdict on one market (SPEC section 4) and the exits a trade carries.

The checks themselves, their order and their sentences live in `gate.GATE`; this module runs
them on one market and belief and says which side to take. A rejection is a value, never an
exception.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from msgspec import Struct

from pomabotd.domain.gate import Row, edges, explain, first_failure, side_of
from pomabotd.domain.models import Belief, ExitPlan, Market, Side

__all__ = ["GateResult", "exit_plan", "run_checks"]


class GateResult(Struct, frozen=True):
    """The gate's verdict: the first failed check (None when tradeable) and the edges."""

    failed_check: str | None
    reason: str
    side: Literal["YES", "NO", "NONE"]
    edge: float
    expected_edge: float


def exit_plan(
    side: Side,
    price: float,
    belief: Belief,
    stop_loss_percent: float = 5.0,
    profit_target_percent: float = 10.0,
) -> ExitPlan | None:
    """The exit levels for holding `side` at the YES `price`, in the held side's price.

    None when the held side's entry is 0 or 100: P&L is relative to the entry, and a contract
    bought at 100 can only lose, so neither has a sane plan.
    """
    entry = price if side == "YES" else 100.0 - price
    if not 0.0 < entry < 100.0:
        return None
    mid = (belief.low + belief.high) / 2.0
    return ExitPlan(
        entry_price=entry,
        stop_price=entry * (1.0 - stop_loss_percent / 100.0),
        target_price=min(100.0, entry * (1.0 + profit_target_percent / 100.0)),
        emergency_price=entry * (1.0 - 2.0 * stop_loss_percent / 100.0),
        convergence_price=mid if side == "YES" else 100.0 - mid,
        invalidation_price=belief.high if side == "YES" else 100.0 - belief.low,
    )


def run_checks(market: Market, belief: Belief, as_of: datetime) -> GateResult:
    """Run the SPEC section 4 checks in order; report the first failure, or the side to take."""
    edge, expected = edges(market.price, belief.low, belief.high)
    row = Row(market, as_of, belief.low, belief.high, belief.confidence, edge)
    failed = first_failure(row)
    side: Literal["YES", "NO", "NONE"] = (
        "NONE" if failed is not None else side_of(market.price, belief.low)
    )
    return GateResult(failed, explain(row, failed), side, edge, expected)
