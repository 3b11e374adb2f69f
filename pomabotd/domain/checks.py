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
    failed, side, edge, expected = _decide(market, low, high, confidence, as_of)
    reason = _explain(failed, market, low, high, confidence, as_of, edge)
    return failed, reason, side, edge, expected


def _early(market: Market, as_of: datetime) -> str | None:
    """Checks 0-3, which need no belief: the first one failed, or None."""
    if market.outcome is not None:
        return "market_open"
    closes_at = market.closes_at
    if closes_at is not None and closes_at <= as_of:
        return "market_open"
    if not market.authority_is_clear:
        return "resolution_authority"
    if not market.outcome_is_objective:
        return "objective_outcome"
    if market.liquidity < MIN_LIQUIDITY:
        return "liquidity"
    return None


def _decide(
    market: Market, low: float, high: float, confidence: float, as_of: datetime
) -> tuple[str | None, Literal["YES", "NO", "NONE"], float, float]:
    """The verdict without its sentence: failed check, side, edge and expected edge.

    Kept apart from `_explain` so that a caller keeping only tradeable markets decides every
    market with this same code yet formats sentences for the few that pass.
    """
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
    early = _early(market, as_of)
    if early is not None:
        return early, "NONE", edge, expected
    if round(high - low, _POINT_DIGITS) > MAX_BELIEF_WIDTH:
        return "belief_width", "NONE", edge, expected
    if confidence < MIN_CONFIDENCE:
        return "confidence", "NONE", edge, expected
    if not outside:
        return "price_outside_range", "NONE", edge, expected
    side: Side = "YES" if price < low else "NO"
    if edge < CATEGORY_MIN_EDGE.get(market.category, CATEGORY_MIN_EDGE["other"]):
        return "edge", "NONE", edge, expected
    if _entry(side, price) is None:
        return "exit_plan", "NONE", edge, expected
    return None, side, edge, expected


def _tradeable(market: Market, low: float, high: float, confidence: float) -> bool:
    """True exactly when `_decide` finds no failure for a market that passed `_early`.

    For the markets a cycle drops unseen: the cheap comparisons first, and a difference is
    rounded only when it falls short of its limit (rounding is monotonic and every limit has
    few digits, so a difference at or past a limit stays there once rounded).
    """
    if confidence < MIN_CONFIDENCE:
        return False
    width = high - low
    if width > MAX_BELIEF_WIDTH and round(width, _POINT_DIGITS) > MAX_BELIEF_WIDTH:
        return False
    price = market.price
    if price < low:
        gap = low - price
        entry = price
    elif price > high:
        gap = price - high
        entry = 100.0 - price
    else:
        return False
    minimum = CATEGORY_MIN_EDGE.get(market.category, CATEGORY_MIN_EDGE["other"])
    if gap < minimum and round(gap, _POINT_DIGITS) < minimum:
        return False
    return 0.0 < entry < 100.0


def _explain(
    failed: str | None,
    market: Market,
    low: float,
    high: float,
    confidence: float,
    as_of: datetime,
    edge: float,
) -> str:
    """The one sentence, with its numbers, saying why `_decide` reached `failed`."""
    price = market.price
    side: Side = "YES" if price < low else "NO"
    if failed is None:
        where = "below" if side == "YES" else "above"
        return (
            f"{side}: price {_pts(price)} is {_pts(edge)} points {where} "
            f"the belief range {_span(low, high)}"
        )
    if failed == "confidence":
        return f"confidence {_pts(confidence)} is below the 65 minimum"
    if failed == "market_open":
        if market.outcome is not None:
            return f"market is resolved ({market.outcome})"
        closes_at = market.closes_at
        closed = closes_at.isoformat() if closes_at is not None else "?"
        return f"market closed at {closed}, not after as_of {as_of.isoformat()}"
    if failed == "resolution_authority":
        return "no clear authority decides how the market resolves"
    if failed == "objective_outcome":
        return "the outcome is not objectively verifiable"
    if failed == "liquidity":
        return f"liquidity ${_money(market.liquidity)} is below the $1,000 minimum"
    if failed == "belief_width":
        width = round(high - low, _POINT_DIGITS)
        return (
            f"belief range {_span(low, high)} is {_pts(width)} points wide, "
            "over the 25-point maximum"
        )
    if failed == "price_outside_range":
        return f"price {_pts(price)} is inside the belief range {_span(low, high)}"
    if failed == "edge":
        minimum = CATEGORY_MIN_EDGE.get(market.category, CATEGORY_MIN_EDGE["other"])
        return (
            f"{side} edge {_pts(edge)} points is below the {_pts(minimum)}-point minimum "
            f"for {market.category}"
        )
    held = price if side == "YES" else 100.0 - price
    return f"no sane exit plan: the {side} entry price would be {_pts(held)}"


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
