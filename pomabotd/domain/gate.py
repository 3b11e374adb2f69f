"""The trade-eligibility gate, as one ordered table (the checks: docs/decisions.md#gate).

Every path that judges a market reads `GATE`: the scalar evaluator and the screen for markets a
cycle drops unseen call each check's `passes` on one market, the columnar kernel calls its
`passes_all` on whole columns, and the reason text is its `sentence`. Adding a check on fields
the kernel already has as columns (`Columns`) is adding one entry here; its position is its
place in the order, and the first failure is reported. A check on another market field also
needs that field as a column: in `Columns` here, `MarketColumns` and `market_columns`
(`engine/kernels/columns.py`) and `_GateColumns` (`engine/kernels/columnar.py`); until it has
one, the kernel's pass fails and every piece runs market by market (`kernel_failed`).

The vectorised tests use only operators (`< <= > >= & | ~` and arithmetic), so they work on the
numpy arrays the kernel passes in while the domain stays free of numpy. Sentences take their
limits from the constants, so the words cannot drift from the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Protocol

from msgspec import Struct

from pomabotd.domain.models import CATEGORY_MIN_EDGE, Market, Side

__all__ = [
    "CHECK_NAMES",
    "GATE",
    "MAX_BELIEF_WIDTH",
    "MIN_CONFIDENCE",
    "MIN_LIQUIDITY",
    "POINT_DIGITS",
    "Check",
    "Columns",
    "Row",
    "edge",
    "edges",
    "explain",
    "first_failure",
    "min_edge",
    "side_of",
]

MIN_LIQUIDITY: Final = 1000.0
MAX_BELIEF_WIDTH: Final = 25.0
MIN_CONFIDENCE: Final = 65.0
#: Differences of points are rounded to this many digits before a check compares them, so that
#: float noise (8.2 - 0.2 = 7.999999999999999) never fails a check sitting exactly at its limit.
POINT_DIGITS: Final = 9


class Row(Struct, gc=False):
    """One market as the scalar checks read it: the market, `as_of`, its belief at `as_of`
    and its check-7 edge (`edges`). Mutable so that the screen can fill the belief in only for
    markets that pass the checks which need none."""

    market: Market
    as_of: datetime
    low: float = 0.0
    high: float = 0.0
    confidence: float = 0.0
    edge: float = 0.0


class Columns(Protocol):
    """What the vectorised checks read: one array per value, one element per market.

    `closes_at` and `as_of` are comparable instants, a market that never closes being later
    than any `as_of`; `resolved` says the market has an outcome. `width` (`high - low`) and
    `edge` are rounded to `POINT_DIGITS` exactly as Python's `round` rounds them, and
    `min_edge` is each market's category minimum.
    """

    resolved: Any
    closes_at: Any
    as_of: Any
    authority_is_clear: Any
    outcome_is_objective: Any
    liquidity: Any
    price: Any
    low: Any
    high: Any
    width: Any
    confidence: Any
    edge: Any
    min_edge: Any


class Check(Struct, frozen=True, kw_only=True):
    """One gate check: its name (`failed_check`), its test on one market (`passes`), the same
    test over columns (`passes_all`, true where a market passes) and the sentence saying why a
    market failed it. `needs_belief` is false for checks that read only the market and `as_of`."""

    name: str
    needs_belief: bool
    passes: Callable[[Row], bool]
    passes_all: Callable[[Columns], Any]
    sentence: Callable[[Row], str]


def min_edge(category: str) -> float:
    """The category's minimum edge (check 7); an unknown category is held to `other`'s."""
    return CATEGORY_MIN_EDGE.get(category, CATEGORY_MIN_EDGE["other"])


def side_of(price: float, low: float) -> Side:
    """The side a price outside the range would take: YES below it, NO above it."""
    return "YES" if price < low else "NO"


def edge(price: float, low: float, high: float) -> float:
    """The check-7 edge alone, as `edges` gives it."""
    if price < low:
        return round(low - price, POINT_DIGITS)
    if price > high:
        return round(price - high, POINT_DIGITS)
    return 0.0


def edges(price: float, low: float, high: float) -> tuple[float, float]:
    """The check-7 edge and the expected edge (to the range's midpoint), rounded to
    `POINT_DIGITS`; both 0 while the price is inside the range."""
    if price < low:
        return (
            round(low - price, POINT_DIGITS),
            round((low + high) / 2.0 - price, POINT_DIGITS),
        )
    if price > high:
        return (
            round(price - high, POINT_DIGITS),
            round(price - (low + high) / 2.0, POINT_DIGITS),
        )
    return 0.0, 0.0


def first_failure(row: Row) -> str | None:
    """The name of the first check `row` fails, or None when it passes them all."""
    for check in GATE:
        if not check.passes(row):
            return check.name
    return None


def explain(row: Row, failed: str | None) -> str:
    """The one sentence, with its numbers, for a market that failed `failed` (None: passed)."""
    if failed is None:
        market = row.market
        side = side_of(market.price, row.low)
        where = "below" if side == "YES" else "above"
        return (
            f"{side}: price {_pts(market.price)} is {_pts(row.edge)} points {where} "
            f"the belief range {_span(row.low, row.high)}"
        )
    return _BY_NAME[failed].sentence(row)


def _at_most(value: float, limit: float) -> bool:
    """`round(value, POINT_DIGITS) <= limit`, rounding only when it can change the answer
    (rounding is monotonic and every limit has few digits)."""
    return value <= limit or round(value, POINT_DIGITS) <= limit


def _is_open(row: Row) -> bool:
    market = row.market
    closes_at = market.closes_at
    return market.outcome is None and (closes_at is None or closes_at > row.as_of)


def _closed(row: Row) -> str:
    market = row.market
    if market.outcome is not None:
        return f"market is resolved ({market.outcome})"
    closes_at = market.closes_at
    closed = closes_at.isoformat() if closes_at is not None else "?"
    return f"market closed at {closed}, not after as_of {row.as_of.isoformat()}"


def _low_liquidity(row: Row) -> str:
    liquidity = row.market.liquidity
    shown = _money(liquidity, _digits_beside(liquidity, MIN_LIQUIDITY))
    return f"liquidity ${shown} is below the ${_money(MIN_LIQUIDITY)} minimum"


def _too_wide(row: Row) -> str:
    width = round(row.high - row.low, POINT_DIGITS)
    digits = _digits_beside(width, MAX_BELIEF_WIDTH)
    return (
        f"belief range {_span(row.low, row.high, digits)} is {_pts(width, digits)} points "
        f"wide, over the {_pts(MAX_BELIEF_WIDTH)}-point maximum"
    )


def _has_exit_plan(row: Row) -> bool:
    price = row.market.price
    entry = price if price < row.low else 100.0 - price
    return 0.0 < entry < 100.0


def _exit_plans(c: Columns) -> Any:
    held = 100.0 - c.price
    yes = c.price < c.low
    return (yes & (c.price > 0.0) & (c.price < 100.0)) | (~yes & (held > 0.0) & (held < 100.0))


def _small_edge(row: Row) -> str:
    market = row.market
    side = side_of(market.price, row.low)
    minimum = min_edge(market.category)
    return (
        f"{side} edge {_beside(row.edge, minimum)} points is below the "
        f"{_pts(minimum)}-point minimum for {market.category}"
    )


def _no_exit_plan(row: Row) -> str:
    price = row.market.price
    side = side_of(price, row.low)
    held = price if side == "YES" else 100.0 - price
    return f"no sane exit plan: the {side} entry price would be {_pts(held)}"


#: The checks in the order they run: the first that fails is the one reported.
GATE: Final[tuple[Check, ...]] = (
    Check(
        name="market_open",
        needs_belief=False,
        passes=_is_open,
        passes_all=lambda c: ~c.resolved & (c.closes_at > c.as_of),
        sentence=_closed,
    ),
    Check(
        name="resolution_authority",
        needs_belief=False,
        passes=lambda r: r.market.authority_is_clear,
        passes_all=lambda c: c.authority_is_clear,
        sentence=lambda r: "no clear authority decides how the market resolves",
    ),
    Check(
        name="objective_outcome",
        needs_belief=False,
        passes=lambda r: r.market.outcome_is_objective,
        passes_all=lambda c: c.outcome_is_objective,
        sentence=lambda r: "the outcome is not objectively verifiable",
    ),
    Check(
        name="liquidity",
        needs_belief=False,
        passes=lambda r: r.market.liquidity >= MIN_LIQUIDITY,
        passes_all=lambda c: c.liquidity >= MIN_LIQUIDITY,
        sentence=_low_liquidity,
    ),
    Check(
        name="belief_width",
        needs_belief=True,
        passes=lambda r: _at_most(r.high - r.low, MAX_BELIEF_WIDTH),
        passes_all=lambda c: c.width <= MAX_BELIEF_WIDTH,
        sentence=_too_wide,
    ),
    Check(
        name="confidence",
        needs_belief=True,
        passes=lambda r: r.confidence >= MIN_CONFIDENCE,
        passes_all=lambda c: c.confidence >= MIN_CONFIDENCE,
        sentence=lambda r: (
            f"confidence {_beside(r.confidence, MIN_CONFIDENCE)} is below the "
            f"{_pts(MIN_CONFIDENCE)} minimum"
        ),
    ),
    Check(
        name="price_outside_range",
        needs_belief=True,
        passes=lambda r: r.market.price < r.low or r.market.price > r.high,
        passes_all=lambda c: (c.price < c.low) | (c.price > c.high),
        sentence=lambda r: (
            f"price {_pts(r.market.price)} is inside the belief range {_span(r.low, r.high)}"
        ),
    ),
    Check(
        name="edge",
        needs_belief=True,
        passes=lambda r: r.edge >= min_edge(r.market.category),
        passes_all=lambda c: c.edge >= c.min_edge,
        sentence=_small_edge,
    ),
    Check(
        name="exit_plan",
        needs_belief=True,
        passes=_has_exit_plan,
        passes_all=_exit_plans,
        sentence=_no_exit_plan,
    ),
)

#: The check names in gate order.
CHECK_NAMES: Final = tuple(check.name for check in GATE)
_BY_NAME: Final = {check.name: check for check in GATE}

def _span(low: float, high: float, digits: int = 2) -> str:
    return f"{_pts(low, digits)}\u2013{_pts(high, digits)}"


def _pts(value: float, digits: int = 2) -> str:
    """Points for a human sentence: at most `digits` decimals, no trailing zeros."""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _money(value: float, digits: int = 2) -> str:
    return f"{value:,.0f}" if value.is_integer() else f"{value:,.{digits}f}"


def _beside(value: float, limit: float) -> str:
    """`value` in points beside the `limit` it is compared with (`_digits_beside`)."""
    return _pts(value, _digits_beside(value, limit))


def _digits_beside(value: float, limit: float) -> int:
    """The decimals that show `value` on its own side of `limit`: two unless two would round
    it onto the limit (64.996 against 65 shows `64.996`, never `65`), so that a refusal never
    reads as a value that meets the rule it failed."""
    for digits in range(2, 18):
        shown = round(value, digits)
        if (shown < limit) == (value < limit) and (shown > limit) == (value > limit):
            return digits
    return 17
