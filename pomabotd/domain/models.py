"""The value types of the domain: frozen msgspec Structs shared by every layer.

The per-market types hold only scalars and strings, never containers, so they are declared
`gc=False`: the garbage collector never tracks the millions of them a big cycle decodes.

Validation lives in the type annotations so that one typed decode at the edge (a JSONL line, an
API object) either yields a valid value or a message naming the field; the domain functions can
then trust their inputs. Everything here is plain data and crosses process boundaries as msgspec
bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct

__all__ = [
    "CATEGORIES",
    "CATEGORY_MIN_EDGE",
    "IMPACT_CAP",
    "SIGNAL_TYPES",
    "Belief",
    "CloseEvent",
    "Evaluation",
    "Market",
    "Position",
    "PositionEvent",
    "RiskLimits",
    "Side",
    "Signal",
    "normalize_category",
]

CATEGORIES: Final = (
    "politics",
    "crypto",
    "sports",
    "economics",
    "entertainment",
    "weather",
    "technology",
    "world",
    "other",
)

#: The gate's check 7 (`edge`): the minimum edge, in points, per category.
CATEGORY_MIN_EDGE: Final[dict[str, float]] = {
    "politics": 12.0,
    "crypto": 15.0,
    "sports": 10.0,
    "economics": 12.0,
    "entertainment": 18.0,
    "weather": 8.0,
    "technology": 15.0,
    "world": 20.0,
    "other": 25.0,
}

SIGNAL_TYPES: Final = ("authoritative", "procedural", "quantitative", "interpretive", "speculative")

#: The belief update: the most a signal of each type may move the range, in points, at strength 5.
IMPACT_CAP: Final[dict[str, float]] = {
    "authoritative": 20.0,
    "procedural": 15.0,
    "quantitative": 10.0,
    "interpretive": 7.0,
    "speculative": 3.0,
}

_CATEGORY_SET: Final = frozenset(CATEGORIES)

NonEmptyStr = Annotated[str, Meta(min_length=1)]
Points = Annotated[float, Meta(ge=0.0, le=100.0)]
NonNegative = Annotated[float, Meta(ge=0.0)]
AwareDatetime = Annotated[datetime, Meta(tz=True)]
Side = Literal["YES", "NO"]
SignalType = Literal["authoritative", "procedural", "quantitative", "interpretive", "speculative"]
Direction = Literal["up", "down", "neutral"]


def normalize_category(category: str) -> str:
    """Map a free-form category onto the nine known ones; anything unknown is `other`."""
    lowered = category.strip().lower()
    return lowered if lowered in _CATEGORY_SET else "other"


class Market(Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A binary market; prices are percentage points of YES (0-100; NO is `100 - price`)."""

    id: NonEmptyStr
    question: str
    category: str = "other"
    price: Points
    liquidity: NonNegative
    volume_24h: NonNegative = 0.0
    closes_at: AwareDatetime | None = None
    resolution_criteria: str | None = None
    authority_is_clear: bool = True
    outcome_is_objective: bool = True
    unknowns: Annotated[int, Meta(ge=0)] = 0
    outcome: Side | None = None
    #: What the YES and NO sides are called where they are not literally "Yes" and "No"
    #: (`Over`/`Under`, two teams); the first outcome of a two-outcome market plays YES.
    yes_outcome: str | None = None
    no_outcome: str | None = None

    def __post_init__(self) -> None:
        if self.category not in _CATEGORY_SET:
            msgspec.structs.force_setattr(self, "category", normalize_category(self.category))


class Signal(Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """One typed piece of news about one market, as a line of a signals file carries it."""

    market_id: NonEmptyStr
    type: SignalType
    direction: Direction
    strength: Annotated[int, Meta(ge=1, le=5)]
    timestamp: AwareDatetime
    conflicts_with_existing: bool = False
    source: str | None = None
    description: str | None = None


class Belief(Struct, frozen=True):
    """A belief range about the YES outcome, in points, with a confidence score (30-95)."""

    low: float
    high: float
    confidence: float
    unknowns: int


class Evaluation(Struct, frozen=True, kw_only=True, gc=False):
    """The outcome of evaluating one market through the gate; rejections are data, not errors."""

    market_id: str
    category: str
    price: float
    belief_low: float
    belief_high: float
    confidence: float
    side: Literal["YES", "NO", "NONE"]
    edge: float
    expected_edge: float
    failed_check: str | None
    reason: str
    signals_applied: int
    signals_rejected: int
    error: str | None = None
    elapsed_us: float = 0.0


class RiskLimits(Struct, frozen=True, kw_only=True):
    """The `risk.*` configuration the pure selection and portfolio code needs, with its defaults."""

    min_edge: float = 15.0
    max_portfolio_risk: float = 20.0
    require_diversification: bool = True
    max_positions_per_category: int = 2
    stop_loss_percent: float = 5.0
    profit_target_percent: float = 10.0
    kelly_fraction: float = 0.25
    max_position_percent: float = 5.0
    min_position_usd: float = 1.0
    portfolio_value: float = 10000.0


class Position(Struct, frozen=True, kw_only=True, tag_field="event", tag="open"):
    """An open paper position; encoded, it is the `open` line of `positions.jsonl`.

    Prices are the held side's price in points; the entry-time belief is kept because the
    `converged` exit is measured against its midpoint.
    """

    cycle_id: int
    position_id: str
    market_id: str
    question: str
    category: str
    side: Side
    entry_price: float
    size_usd: float
    risk_usd: float
    edge: float
    belief_low: float
    belief_high: float
    confidence: float
    stop_price: float
    target_price: float
    opened_at: datetime


class CloseEvent(Struct, frozen=True, kw_only=True, tag_field="event", tag="close"):
    """A `positions.jsonl` line recording that a position was closed, with its realized P&L."""

    cycle_id: int
    position_id: str
    market_id: str
    exit_price: float
    exit_reason: Literal["resolved", "stop_loss", "profit_target", "converged", "invalidated"]
    pnl_usd: float
    closed_at: datetime


PositionEvent = Position | CloseEvent
