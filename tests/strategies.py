"""Hypothesis strategies for the domain values, shared by every property test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from pomabotd.domain.models import CATEGORIES, SIGNAL_TYPES, Market, Signal

__all__ = ["AS_OF", "market_with_signals", "markets", "signals_for"]

#: The fixed evaluation time of the tests.
AS_OF = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

_NAIVE_AS_OF = AS_OF.replace(tzinfo=None)

_market_ids = st.from_regex(r"[a-z][a-z0-9-]{0,11}", fullmatch=True)
_points = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
_mostly_true = st.sampled_from([True, True, True, True, False])
_liquidity = st.sampled_from([5000.0, 1e6, 1000.0, 999.99, 0.0]) | st.floats(
    min_value=0.0, max_value=1e7, allow_nan=False
)
_closes_at = st.integers(min_value=-24, max_value=24 * 365).map(
    lambda hours: AS_OF + timedelta(hours=hours)
)


def _times(before: timedelta, after: timedelta) -> st.SearchStrategy[datetime]:
    return st.datetimes(
        min_value=_NAIVE_AS_OF - before,
        max_value=_NAIVE_AS_OF + after,
        timezones=st.just(UTC),
    )


@st.composite
def markets(draw: st.DrawFn, market_id: str | None = None) -> Market:
    """Valid markets, mostly open and well-formed so that every check is reached sometimes."""
    return Market(
        id=market_id if market_id is not None else draw(_market_ids),
        question=draw(st.text(max_size=40)),
        category=draw(st.sampled_from([*CATEGORIES, "Politics", "unknown"])),
        price=draw(_points),
        liquidity=draw(_liquidity),
        volume_24h=draw(st.floats(min_value=0.0, max_value=1e7, allow_nan=False)),
        closes_at=draw(st.sampled_from([None, None, AS_OF + timedelta(days=30)]) | _closes_at),
        authority_is_clear=draw(_mostly_true),
        outcome_is_objective=draw(_mostly_true),
        unknowns=draw(st.sampled_from([0, 0, 1, 2, 4])),
        outcome=draw(st.sampled_from([None] * 8 + ["YES", "NO"])),
    )


def signals_for(
    market_id: str, *, past: timedelta = timedelta(days=14), future: timedelta = timedelta(0)
) -> st.SearchStrategy[Signal]:
    """Valid signals about `market_id`, stamped from `past` before `AS_OF` to `future` after."""
    return st.builds(
        Signal,
        market_id=st.just(market_id),
        type=st.sampled_from(["authoritative", *SIGNAL_TYPES]),
        direction=st.sampled_from(["up", "down", "neutral"]),
        strength=st.integers(min_value=1, max_value=5),
        timestamp=_times(past, future),
        conflicts_with_existing=st.booleans(),
    )


@st.composite
def market_with_signals(
    draw: st.DrawFn,
    *,
    max_signals: int = 8,
    distinct_timestamps: bool = False,
    future: timedelta = timedelta(0),
) -> tuple[Market, list[Signal]]:
    """A market and a list of signals about it; `distinct_timestamps` makes their order total."""
    market = draw(markets())
    signals = draw(
        st.lists(
            signals_for(market.id, future=future),
            max_size=max_signals,
            unique_by=(lambda s: s.timestamp) if distinct_timestamps else None,
        )
    )
    return market, signals
