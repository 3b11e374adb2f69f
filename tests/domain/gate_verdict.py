"""The gate's verdict on a market with a given belief, from the gate module's public parts.

`evaluate_market` forms the belief from signals; the gate tests need beliefs chosen exactly, so
they ask the gate table directly, composing its parts as the evaluator does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from pomabotd.domain.gate import Row, edges, explain, first_failure, side_of
from pomabotd.domain.models import Belief, Market


class Verdict(NamedTuple):
    """The first failed check (None when tradeable), its sentence, the side and the edges."""

    failed_check: str | None
    reason: str
    side: Literal["YES", "NO", "NONE"]
    edge: float
    expected_edge: float


def verdict(market: Market, belief: Belief, as_of: datetime) -> Verdict:
    """Run the gate's checks in order on `market` held at `belief`, as of `as_of`."""
    edge, expected = edges(market.price, belief.low, belief.high)
    row = Row(market, as_of, belief.low, belief.high, belief.confidence, edge)
    failed = first_failure(row)
    side: Literal["YES", "NO", "NONE"] = (
        "NONE" if failed is not None else side_of(market.price, belief.low)
    )
    return Verdict(failed, explain(row, failed), side, edge, expected)
