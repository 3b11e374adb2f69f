"""The belief update: prior, range shifts, confidence, and their worked examples."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pomabotd.domain.belief import (
    BeliefUpdate,
    check_invariant,
    decay_confidence,
    prior,
    prior_range,
    recompute_confidence,
    shift_range,
    update_belief,
)
from pomabotd.domain.models import Belief, Market, Signal
from tests.strategies import AS_OF, market_with_signals

MARKET = Market(id="m1", question="Will it?", price=50.0, liquidity=5000.0)


def _signal(
    type_: str = "authoritative",
    direction: str = "up",
    strength: int = 5,
    *,
    conflicting: bool = False,
    days_ago: float = 0.0,
    market_id: str = "m1",
) -> Signal:
    return msgspec.convert(
        {
            "market_id": market_id,
            "type": type_,
            "direction": direction,
            "strength": strength,
            "conflicts_with_existing": conflicting,
            "timestamp": AS_OF - timedelta(days=days_ago),
        },
        Signal,
    )


def test_prior_is_45_to_55_at_confidence_50() -> None:
    """Every market starts from the fixed prior, carrying its own unknowns."""
    assert prior(3) == Belief(45.0, 55.0, 50.0, 3)


def test_worked_example_authoritative_up() -> None:
    """Worked example: 40-60 + authoritative/up/4 -> 52-72 (the shift is capped at 0.6 * width)."""
    assert shift_range(40.0, 60.0, _signal("authoritative", "up", 4)) == (52.0, 72.0)


def test_worked_example_confidence_with_two_unknowns() -> None:
    """Worked example: an authoritative signal, two unknowns, no conflict, no gap: confidence 46."""
    assert recompute_confidence(1, 0, 2, False, 0.0) == 46.0


def test_worked_example_conflicting_procedural_down() -> None:
    """Worked example: 55-70 plus conflicting procedural/down/3 widens to 42.25-73.75."""
    signal = _signal("procedural", "down", 3, conflicting=True)
    assert shift_range(55.0, 70.0, signal) == (42.25, 73.75)


@pytest.mark.parametrize(
    ("direction", "conflicting", "expected"),
    [
        ("up", False, (47.0, 57.0)),
        ("down", False, (43.0, 53.0)),
        ("neutral", False, (45.0, 55.0)),
        ("up", True, (42.5, 59.5)),
        ("down", True, (40.5, 57.5)),
        ("neutral", True, (42.5, 57.5)),
    ],
)
def test_shift_range_directions(
    direction: str, conflicting: bool, expected: tuple[float, float]
) -> None:
    """Each direction moves or widens 45-55 as the formula says (a shift of 2, under the cap)."""
    signal = _signal("quantitative", direction, 1, conflicting=conflicting)
    assert shift_range(45.0, 55.0, signal) == expected


def test_shift_range_clamps_to_0_and_100() -> None:
    """A range pushed past either end is clamped to [0, 100]."""
    assert shift_range(90.0, 100.0, _signal("authoritative", "up", 5)) == (96.0, 100.0)
    assert shift_range(0.0, 10.0, _signal("authoritative", "down", 5, conflicting=True)) == (
        0.0,
        12.5,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((0, 0, 0, False, 0.0), 50.0),
        ((1, 1, 0, True, 4.0), 53.0),
        ((9, 0, 0, False, 0.0), 95.0),
        ((0, 0, 5, True, 0.0), 30.0),
    ],
)
def test_recompute_confidence_formula_and_clamp(
    args: tuple[int, int, int, bool, float], expected: float
) -> None:
    """Confidence follows the formula and stays within [30, 95]."""
    assert recompute_confidence(*args) == expected


def test_decay_confidence() -> None:
    """Confidence decays by half a point a day and never below 30."""
    assert decay_confidence(80.0, 10.0) == 75.0
    assert decay_confidence(40.0, 100.0) == 30.0


def test_update_belief_without_signals_is_the_prior() -> None:
    """No signal: the prior, undecayed, and nothing counted."""
    market = msgspec.structs.replace(MARKET, unknowns=2)
    assert update_belief(market, [], AS_OF) == BeliefUpdate(prior(2), 0, 0, None)


def test_update_belief_applies_in_timestamp_order_and_decays() -> None:
    """Signals apply oldest first, days between them cost confidence, then decay runs to as_of."""
    older = _signal("authoritative", "up", 5, days_ago=6.0)
    newer = _signal("procedural", "down", 5, conflicting=True, days_ago=2.0)
    result = update_belief(MARKET, [newer, older], AS_OF)
    low, high = shift_range(*shift_range(45.0, 55.0, older), newer)
    # 50 + 10 + 5 - 10 (conflict) - 0.5 * 4 days between, then - 0.5 * 2 days to as_of
    assert result == BeliefUpdate(Belief(low, high, 52.0, 0), 2, 0, newer.timestamp)


def test_update_belief_ties_keep_input_order() -> None:
    """Signals with equal timestamps apply in the order given."""
    first = _signal("quantitative", "up", 5)
    second = _signal("authoritative", "down", 5, conflicting=True)
    expected = shift_range(*shift_range(45.0, 55.0, first), second)
    belief = update_belief(MARKET, [first, second], AS_OF).belief
    assert (belief.low, belief.high) == expected
    assert expected != shift_range(*shift_range(45.0, 55.0, second), first)


def test_speculative_signal_is_rejected_until_another_applies() -> None:
    """A leading speculative signal is rejected; one after an applied signal counts."""
    lead = _signal("speculative", "up", 5, days_ago=3.0)
    base = _signal("interpretive", "up", 5, days_ago=2.0)
    follow = _signal("speculative", "up", 5, days_ago=1.0)
    result = update_belief(MARKET, [lead, base, follow], AS_OF)
    assert (result.applied, result.rejected) == (2, 1)
    low, high = shift_range(*shift_range(45.0, 55.0, base), follow)
    assert (result.belief.low, result.belief.high) == (low, high)


def test_only_speculative_signals_leave_the_prior() -> None:
    """With nothing but speculation, every signal is rejected and the prior stands."""
    result = update_belief(MARKET, [_signal("speculative"), _signal("speculative")], AS_OF)
    assert result == BeliefUpdate(prior(0), 0, 2, None)


def test_other_markets_signals_are_ignored_and_not_counted() -> None:
    """A signal about another market neither moves the belief nor counts as rejected."""
    result = update_belief(MARKET, [_signal(market_id="other")], AS_OF)
    assert result == BeliefUpdate(prior(0), 0, 0, None)


def test_future_signals_are_rejected() -> None:
    """A signal stamped after as_of cannot be known yet: it is rejected, not applied."""
    result = update_belief(MARKET, [_signal(days_ago=-1.0), _signal(days_ago=1.0)], AS_OF)
    assert (result.applied, result.rejected) == (1, 1)
    assert result.last_applied_at == AS_OF - timedelta(days=1)


def test_conflict_lowers_confidence_for_the_rest_of_the_sequence() -> None:
    """Once any applied signal conflicted, every later recompute keeps the 10-point penalty."""
    signals = [
        _signal("procedural", "neutral", 1, conflicting=True),
        _signal("procedural", "neutral", 1),
    ]
    assert update_belief(MARKET, signals, AS_OF).belief.confidence == 50.0


def test_check_invariant_flags_more_unknowns_with_more_confidence() -> None:
    """The invariant checker rejects a belief that gained unknowns and confidence together."""
    assert not check_invariant(Belief(45, 55, 60, 1), Belief(45, 55, 61, 2))
    assert check_invariant(Belief(45, 55, 60, 1), Belief(45, 55, 60, 2))
    assert check_invariant(Belief(45, 55, 60, 2), Belief(45, 55, 70, 1))


@given(market_with_signals(max_signals=12, future=timedelta(days=5)))
def test_beliefs_stay_within_bounds(case: tuple[Market, list[Signal]]) -> None:
    """For any signal sequence, 0 <= low <= high <= 100 and 30 <= confidence <= 95."""
    market, signals = case
    result = update_belief(market, signals, AS_OF)
    belief = result.belief
    assert 0.0 <= belief.low <= belief.high <= 100.0
    assert 30.0 <= belief.confidence <= 95.0
    assert result.applied + result.rejected == len(signals)


@given(market_with_signals(), st.integers(min_value=1, max_value=5))
def test_more_unknowns_never_raise_confidence(
    case: tuple[Market, list[Signal]], extra: int
) -> None:
    """The same signals with more unknowns never give a higher confidence."""
    market, signals = case
    before = update_belief(market, signals, AS_OF).belief
    more = msgspec.structs.replace(market, unknowns=market.unknowns + extra)
    after = update_belief(more, signals, AS_OF).belief
    assert after.unknowns > before.unknowns
    assert check_invariant(before, after)


def _reference_fold(market: Market, signals: list[Signal]) -> tuple[float, float, float, int, int]:
    """The belief rules (docs/decisions.md#belief) step by step, from public pieces, no shortcut."""
    mine = sorted((s for s in signals if s.market_id == market.id), key=lambda s: s.timestamp)
    low, high, confidence = 45.0, 55.0, 50.0
    applied = rejected = authoritative = procedural = 0
    conflict = False
    last = None
    for signal in mine:
        if signal.timestamp > AS_OF or (applied == 0 and signal.type == "speculative"):
            rejected += 1
            continue
        low, high = shift_range(low, high, signal)
        authoritative += signal.type == "authoritative"
        procedural += signal.type == "procedural"
        conflict = conflict or signal.conflicts_with_existing
        days = 0.0 if last is None else abs((signal.timestamp - last).total_seconds()) / 86400.0
        confidence = recompute_confidence(
            authoritative, procedural, market.unknowns, conflict, days
        )
        applied += 1
        last = signal.timestamp
    if last is not None:
        confidence = decay_confidence(confidence, (AS_OF - last).total_seconds() / 86400.0)
    return low, high, confidence, applied, rejected


@given(market_with_signals(future=timedelta(days=3)))
def test_update_belief_is_bit_identical_to_the_step_by_step_fold(
    case: tuple[Market, list[Signal]],
) -> None:
    """The inlined fold gives exactly the floats that folding with the public steps gives."""
    market, signals = case
    update = update_belief(market, signals, AS_OF)
    belief = update.belief
    got = (belief.low, belief.high, belief.confidence, update.applied, update.rejected)
    assert got == _reference_fold(market, signals)


@pytest.mark.parametrize(
    ("price", "expected"),
    [(50.0, (45.0, 55.0)), (3.0, (0.0, 8.0)), (97.5, (92.5, 100.0)), (0.0, (0.0, 5.0))],
)
def test_market_prior_centres_the_range_on_the_price(price: float, expected: tuple) -> None:
    """`strategy.prior = "market"` starts at price +- 5, clamped to 0-100; fixed stays 45-55."""
    assert prior_range(price, "market") == expected
    assert prior_range(price, "fixed") == (45.0, 55.0)
    market = Market(id="m", question="q", price=price, liquidity=5000.0)
    update = update_belief(market, [], AS_OF, prior="market")
    assert (update.belief.low, update.belief.high, update.belief.confidence) == (*expected, 50.0)
