"""The ordered trade-eligibility gate of SPEC section 4 and the exits a trade carries.

The checks run in the fixed order of `CHECK_NAMES` and stop at the first failure, which is
reported by name with a sentence giving the numbers, so a user can see why a market was passed
over without re-deriving anything. A rejection is a value, never an exception.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from msgspec import Struct

from pomabotd.domain.models import CATEGORY_MIN_EDGE, Belief, ExitPlan, Market, Side

__all__ = [
    "MAX_BELIEF_WIDTH",
    "MIN_CONFIDENCE",
    "MIN_LIQUIDITY",
    "GateResult",
    "exit_plan",
    "run_checks",
]

MIN_LIQUIDITY: Final = 1000.0
MAX_BELIEF_WIDTH: Final = 25.0
MIN_CONFIDENCE: Final = 65.0


class GateResult(Struct, frozen=True):
    """The gate's verdict: the first failed check (None when tradeable) and the edges."""

    failed_check: str | None
    reason: str
    side: Literal["YES", "NO", "NONE"]
    edge: float
    expected_edge: float

#: Differences of points are rounded to this many digits before a check compares them, so that
#: float noise (8.2 - 0.2 = 7.999999999999999) never fails a check sitting exactly at its limit.
_POINT_DIGITS: Final = 9

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
    entry = _entry(side, price)
    if entry is None:
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
    failed, reason, side, edge, expected = _gate(
        market, belief.low, belief.high, belief.confidence, as_of
    )
    return GateResult(failed, reason, side, edge, expected)


def _gate(
    market: Market, low: float, high: float, confidence: float, as_of: datetime
) -> tuple[str | None, str, Literal["YES", "NO", "NONE"], float, float]:
    """The gate over plain values, so the hot evaluator builds no intermediate Structs."""
    price = market.price
    outside = True
    if price < low:
        edge = round(low - price, _POINT_DIGITS)
        expected = round((low + high) / 2.0 - price, _POINT_DIGITS)
    elif price > high:
        edge = round(price - high, _POINT_DIGITS)
        expected = round(price - (low + high) / 2.0, _POINT_DIGITS)
    else:
        outside = False
        edge = expected = 0.0

    if market.outcome is not None:
        return "market_open", f"market is resolved ({market.outcome})", "NONE", edge, expected
    closes_at = market.closes_at
    if closes_at is not None and closes_at <= as_of:
        reason = f"market closed at {closes_at.isoformat()}, not after as_of {as_of.isoformat()}"
        return "market_open", reason, "NONE", edge, expected
    if not market.authority_is_clear:
        reason = "no clear authority decides how the market resolves"
        return "resolution_authority", reason, "NONE", edge, expected
    if not market.outcome_is_objective:
        reason = "the outcome is not objectively verifiable"
        return "objective_outcome", reason, "NONE", edge, expected
    if market.liquidity < MIN_LIQUIDITY:
        reason = f"liquidity ${_money(market.liquidity)} is below the $1,000 minimum"
        return "liquidity", reason, "NONE", edge, expected
    width = round(high - low, _POINT_DIGITS)
    if width > MAX_BELIEF_WIDTH:
        reason = (
            f"belief range {_span(low, high)} is {_pts(width)} points wide, "
            "over the 25-point maximum"
        )
        return "belief_width", reason, "NONE", edge, expected
    if confidence < MIN_CONFIDENCE:
        reason = f"confidence {_pts(confidence)} is below the 65 minimum"
        return "confidence", reason, "NONE", edge, expected
    if not outside:
        reason = f"price {_pts(price)} is inside the belief range {_span(low, high)}"
        return "price_outside_range", reason, "NONE", edge, expected
    side: Side = "YES" if price < low else "NO"
    minimum = CATEGORY_MIN_EDGE.get(market.category, CATEGORY_MIN_EDGE["other"])
    if edge < minimum:
        reason = (
            f"{side} edge {_pts(edge)} points is below the {_pts(minimum)}-point minimum "
            f"for {market.category}"
        )
        return "edge", reason, "NONE", edge, expected
    if _entry(side, price) is None:
        held = price if side == "YES" else 100.0 - price
        reason = f"no sane exit plan: the {side} entry price would be {_pts(held)}"
        return "exit_plan", reason, "NONE", edge, expected
    where = "below" if side == "YES" else "above"
    reason = (
        f"{side}: price {_pts(price)} is {_pts(edge)} points {where} "
        f"the belief range {_span(low, high)}"
    )
    return None, reason, side, edge, expected


def _entry(side: Side, price: float) -> float | None:
    """The held side's entry price, or None at 0 or 100 where exits make no sense."""
    entry = price if side == "YES" else 100.0 - price
    return entry if 0.0 < entry < 100.0 else None


def _span(low: float, high: float) -> str:
    return f"{_pts(low)}\u2013{_pts(high)}"


def _pts(value: float) -> str:
    """Points for a human sentence: at most two decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _money(value: float) -> str:
    return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
