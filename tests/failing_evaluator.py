"""A strategy plugin that fails on every market, to drive the CLI's failure paths."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pomabotd import Evaluation, Market, Signal


def evaluate_market(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Raise, as a broken strategy would."""
    raise RuntimeError(f"no strategy for {market.id}")
