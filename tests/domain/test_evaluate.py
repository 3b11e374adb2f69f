"""The built-in evaluator: belief update then the gate, for one market."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pomabotd.domain.belief import update_belief
from pomabotd.domain.evaluate import evaluate_market, evaluate_tradeable
from pomabotd.domain.models import Evaluation, Market, Signal
from tests.domain.gate_verdict import verdict
from tests.strategies import AS_OF, market_with_signals, signals_for

MARKET = Market(id="m1", question="Will it?", category="politics", price=20.0, liquidity=5000.0)


def _signal(days_ago: float, **fields: Any) -> Signal:
    record = {"market_id": "m1", "strength": 5, "timestamp": AS_OF - timedelta(days=days_ago)}
    return msgspec.convert(record | fields, Signal)


def test_tradeable_market_end_to_end() -> None:
    """Signals move the range and lift confidence until the market is a YES trade."""
    signals = [
        _signal(1.0, type="procedural", direction="neutral"),
        _signal(4.0, type="speculative", direction="down"),
        _signal(3.0, type="authoritative", direction="up"),
        _signal(2.0, type="authoritative", direction="up"),
        _signal(0.0, type="authoritative", direction="down", market_id="m2"),
    ]
    assert evaluate_market(MARKET, signals, AS_OF) == Evaluation(
        market_id="m1",
        category="politics",
        price=20.0,
        belief_low=57.0,
        belief_high=67.0,
        confidence=74.0,
        side="YES",
        edge=37.0,
        expected_edge=42.0,
        failed_check=None,
        reason="YES: price 20 is 37 points below the belief range 57\u201367",
        signals_applied=3,
        signals_rejected=1,
        error=None,
        elapsed_us=0.0,
    )


def test_rejected_market_still_carries_its_belief() -> None:
    """A market failing the gate reports the failed check alongside its belief and edge."""
    market = msgspec.structs.replace(MARKET, price=90.0, liquidity=10.0, unknowns=1)
    result = evaluate_market(market, [_signal(0.0, type="authoritative", direction="up")], AS_OF)
    assert (result.failed_check, result.side) == ("liquidity", "NONE")
    assert (result.belief_low, result.belief_high, result.confidence) == (51.0, 61.0, 53.0)
    assert (result.edge, result.expected_edge) == (29.0, 34.0)
    assert (result.signals_applied, result.signals_rejected) == (1, 0)


@given(
    market_with_signals(future=timedelta(days=3)),
    st.lists(signals_for("someone-else"), max_size=3),
)
def test_evaluation_agrees_with_its_public_parts(
    case: tuple[Market, list[Signal]], noise: list[Signal]
) -> None:
    """The lean evaluator gives exactly what update_belief and the gate give."""
    market, signals = case
    signals = signals + noise
    update = update_belief(market, signals, AS_OF)
    gate = verdict(market, update.belief, AS_OF)
    result = evaluate_market(market, signals, AS_OF)
    assert result == Evaluation(
        market_id=market.id,
        category=market.category,
        price=market.price,
        belief_low=update.belief.low,
        belief_high=update.belief.high,
        confidence=update.belief.confidence,
        side=gate.side,
        edge=gate.edge,
        expected_edge=gate.expected_edge,
        failed_check=gate.failed_check,
        reason=gate.reason,
        signals_applied=update.applied,
        signals_rejected=update.rejected,
    )


@given(st.data())
def test_signal_order_does_not_matter(data: st.DataObject) -> None:
    """With distinct timestamps, the signals' input order never changes the evaluation."""
    market, signals = data.draw(market_with_signals(distinct_timestamps=True))
    shuffled = data.draw(st.permutations(signals))
    assert evaluate_market(market, shuffled, AS_OF) == evaluate_market(market, signals, AS_OF)


def test_evaluator_is_importable_from_the_package() -> None:
    """The built-in evaluator is importable as `pomabotd.evaluate_market`."""
    import pomabotd

    assert pomabotd.evaluate_market is evaluate_market


@given(
    market_with_signals(future=timedelta(days=3)),
    st.lists(signals_for("someone-else"), max_size=3),
)
def test_tradeable_is_the_evaluation_exactly_when_every_check_passes(
    case: tuple[Market, list[Signal]], noise: list[Signal]
) -> None:
    """`evaluate_tradeable` (given the market's own signals) is `evaluate_market`'s result
    (given any signals) when tradeable, else None."""
    market, signals = case
    full = evaluate_market(market, signals + noise, AS_OF)
    expected = full if full.failed_check is None else None
    assert evaluate_tradeable(market, signals, AS_OF) == expected


_NEAR = (-1e-8, -1e-9, -1e-10, -1e-12, -1e-14, 0.0, 1e-14, 1e-12, 1e-10, 1e-9, 1e-8)


@pytest.mark.parametrize("nudge", _NEAR)
@pytest.mark.parametrize(("category", "side"), [("weather", "YES"), ("sports", "NO")])
def test_tradeable_agrees_with_the_full_gate_at_the_edge_limit(
    nudge: float, category: str, side: str
) -> None:
    """Edges within float noise of the category minimum get the full gate's verdict."""
    strong = [
        _signal(3.0, type="authoritative", direction="up"),
        _signal(2.0, type="authoritative", direction="up"),
    ]  # belief 57-67
    limit = {"weather": 8.0, "sports": 10.0}[category]
    price = 57.0 - limit + nudge if side == "YES" else 67.0 + limit + nudge
    market = msgspec.structs.replace(MARKET, category=category, price=price)
    full = evaluate_market(market, strong, AS_OF)
    assert evaluate_tradeable(market, strong, AS_OF) == (
        full if full.failed_check is None else None
    )


def test_tradeable_market_is_returned_in_full() -> None:
    """A tradeable market comes back with its sentence; a rejected one as None."""
    strong = [
        _signal(3.0, type="authoritative", direction="up"),
        _signal(2.0, type="authoritative", direction="up"),
    ]
    result = evaluate_tradeable(MARKET, strong, AS_OF)
    assert result == evaluate_market(MARKET, strong, AS_OF)
    assert result is not None and result.reason.startswith("YES: price 20")
    illiquid = msgspec.structs.replace(MARKET, liquidity=10.0)
    assert evaluate_tradeable(illiquid, strong, AS_OF) is None
