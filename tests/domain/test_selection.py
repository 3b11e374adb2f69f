"""Selection and fractional-Kelly sizing."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomabotd.domain.models import CATEGORIES, Evaluation, Position, RiskLimits, Side
from pomabotd.domain.selection import (
    Pick,
    Selection,
    Skip,
    kelly_size,
    portfolio_risk_pct,
    select,
)

DEFAULTS = RiskLimits()
OPENED_AT = datetime(2025, 1, 1, tzinfo=UTC)
MARKET_IDS = [f"m{i}" for i in range(12)]


def _evaluation(
    market_id: str,
    *,
    side: str = "YES",
    price: float = 30.0,
    low: float = 50.0,
    high: float = 60.0,
    category: str = "politics",
    edge: float | None = None,
    failed_check: str | None = None,
    error: str | None = None,
) -> Evaluation:
    if edge is None:
        edge = low - price if side == "YES" else price - high if side == "NO" else 0.0
    return Evaluation(
        market_id=market_id,
        category=category,
        price=price,
        belief_low=low,
        belief_high=high,
        confidence=80.0,
        side=side,  # type: ignore[arg-type]
        edge=edge,
        expected_edge=abs((low + high) / 2 - price),
        failed_check=failed_check,
        reason="test",
        signals_applied=1,
        signals_rejected=0,
        error=error,
    )


def _position(market_id: str, category: str = "politics", risk: float = 100.0) -> Position:
    return Position(
        cycle_id=1,
        position_id=f"1-{market_id}",
        market_id=market_id,
        question="?",
        category=category,
        side="YES",
        entry_price=30.0,
        size_usd=risk,
        risk_usd=risk,
        edge=20.0,
        belief_low=50.0,
        belief_high=60.0,
        confidence=80.0,
        stop_price=28.5,
        target_price=33.0,
        opened_at=OPENED_AT,
    )


# --- sizing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "price", "low", "high", "equity", "limits", "expected"),
    [
        # q=.40 p=.45: kelly=1/12, quarter Kelly 2.083% of 10000 -> 208.333 -> 208.33
        ("YES", 40.0, 45.0, 60.0, 10_000.0, DEFAULTS, 208.33),
        # NO: q=(100-70)/100=.30, p=(100-60)/100=.40: kelly=1/7 -> 3.5714% -> 357.14
        ("NO", 70.0, 30.0, 60.0, 10_000.0, DEFAULTS, 357.14),
        # q=.30 p=.50: quarter Kelly 7.14% is above the 5% cap -> 500.00
        ("YES", 30.0, 50.0, 60.0, 10_000.0, DEFAULTS, 500.0),
        ("NO", 80.0, 20.0, 40.0, 10_000.0, DEFAULTS, 500.0),
        # kelly <= 0: price inside or at the conservative end of the belief
        ("YES", 50.0, 45.0, 55.0, 10_000.0, DEFAULTS, 0.0),
        ("YES", 45.0, 45.0, 55.0, 10_000.0, DEFAULTS, 0.0),
        ("NO", 50.0, 45.0, 55.0, 10_000.0, DEFAULTS, 0.0),
        ("NO", 90.0, 5.0, 95.0, 10_000.0, DEFAULTS, 0.0),
        # 999.99 * 3.125% = 31.2496875: rounds DOWN to 31.24, not to 31.25
        ("YES", 20.0, 30.0, 40.0, 999.99, DEFAULTS, 31.24),
        # 29 * 1% = 0.29, which float arithmetic makes 28.999999999999996 cents
        ("YES", 10.0, 90.0, 95.0, 29.0, RiskLimits(max_position_percent=1.0), 0.29),
        # no equity, no stake
        ("YES", 30.0, 50.0, 60.0, 0.0, DEFAULTS, 0.0),
        # a held side priced at 0 or 100 is never sized
        ("YES", 0.0, 50.0, 60.0, 10_000.0, DEFAULTS, 0.0),
        ("NO", 100.0, 10.0, 20.0, 10_000.0, DEFAULTS, 0.0),
    ],
)
def test_kelly_size_table(
    side: Side,
    price: float,
    low: float,
    high: float,
    equity: float,
    limits: RiskLimits,
    expected: float,
) -> None:
    """The stake follows the fractional-Kelly formula, capped, rounded down to cents, never < 0."""
    assert kelly_size(side, price, low, high, equity, limits) == expected


def test_kelly_fraction_scales_the_stake() -> None:
    """Doubling kelly_fraction doubles an uncapped stake."""
    half = RiskLimits(kelly_fraction=0.5, max_position_percent=100.0)
    quarter = RiskLimits(kelly_fraction=0.25, max_position_percent=100.0)
    assert kelly_size("YES", 20.0, 30.0, 40.0, 1000.0, half) == 62.5
    assert kelly_size("YES", 20.0, 30.0, 40.0, 1000.0, quarter) == 31.25


def test_portfolio_risk_pct() -> None:
    """Risk is open risk over equity in percent; no equity with risk open reads 100%."""
    positions = [_position("a", risk=150.0), _position("b", risk=50.0)]
    assert portfolio_risk_pct(positions, 10_000.0) == pytest.approx(2.0)
    assert portfolio_risk_pct([], 10_000.0) == 0.0
    assert portfolio_risk_pct(positions, 0.0) == 100.0


# --- the walk -------------------------------------------------------------------------------


def test_orders_by_edge_then_market_id() -> None:
    """Picks come out by edge descending, ties by market id ascending."""
    evaluations = [
        _evaluation("c", price=35.0),  # edge 15
        _evaluation("b", price=30.0),  # edge 20
        _evaluation("a", price=30.0),  # edge 20
    ]
    limits = RiskLimits(require_diversification=False)
    selection = select(evaluations, 10_000.0, [], limits)
    assert [p.evaluation.market_id for p in selection.picks] == ["a", "b", "c"]
    assert selection.opportunities == 3
    assert all(p.risk_usd == p.size_usd > 0 for p in selection.picks)


def test_candidate_filter() -> None:
    """Errors, failed checks, NONE sides, small edges, held and excluded markets never count."""
    evaluations = [
        _evaluation("ok"),
        _evaluation("err", error="timeout"),
        _evaluation("failed", failed_check="confidence"),
        _evaluation("none", side="NONE", edge=20.0),
        _evaluation("small", price=36.0),  # edge 14 < 15
        _evaluation("held"),
        _evaluation("closed"),
    ]
    selection = select(evaluations, 10_000.0, [_position("held")], DEFAULTS, excluded={"closed"})
    assert selection == Selection(
        picks=(Pick(evaluations[0], 500.0, 500.0),), skipped=(), opportunities=1
    )


def test_category_cap_counts_open_positions_and_earlier_picks() -> None:
    """With one politics position open and a cap of 2, only one more politics pick fits."""
    evaluations = [_evaluation(m, price=30.0 - i) for i, m in enumerate(["p1", "p2", "p3"])]
    evaluations.append(_evaluation("s1", category="sports", price=25.0))
    selection = select(evaluations, 10_000.0, [_position("held")], DEFAULTS)
    assert [p.evaluation.market_id for p in selection.picks] == ["s1", "p3"]
    assert [s.market_id for s in selection.skipped] == ["p2", "p1"]
    assert all(s.reason.startswith("category_cap:") for s in selection.skipped)


def test_category_cap_off_without_diversification() -> None:
    """require_diversification = false lets one category take every pick."""
    evaluations = [_evaluation(m) for m in ["p1", "p2", "p3"]]
    limits = RiskLimits(require_diversification=False)
    assert len(select(evaluations, 10_000.0, [], limits).picks) == 3


def test_min_size_skip() -> None:
    """A stake under min_position_usd is skipped with its reason."""
    selection = select([_evaluation("tiny")], 10.0, [], DEFAULTS)  # 5% of $10 = $0.50
    assert selection.picks == ()
    assert selection.skipped == (Skip("tiny", "min_size: size $0.50 is below the $1.00 minimum"),)


def test_risk_cap_skip_does_not_stop_the_walk() -> None:
    """A pick that would break the cap is skipped, and a smaller later one still fits."""
    limits = RiskLimits(require_diversification=False, max_portfolio_risk=10.0)
    evaluations = [
        _evaluation("big1", price=30.0),  # $500, the 5% cap
        _evaluation("big2", price=30.0),  # $200 + $500 + $500 would pass the $1000 cap
        _evaluation("small", price=40.0, low=45.0, edge=15.0),  # $208.33 still fits
    ]
    open_positions = [_position("held", risk=200.0)]
    selection = select(evaluations, 10_000.0, open_positions, limits)
    assert [p.evaluation.market_id for p in selection.picks] == ["big1", "small"]
    assert [s.market_id for s in selection.skipped] == ["big2"]
    assert selection.skipped[0].reason.startswith("risk_cap:")


def test_risk_exactly_at_cap_is_allowed() -> None:
    """Reaching the portfolio-risk cap exactly is within it (float noise notwithstanding)."""
    limits = RiskLimits(require_diversification=False, max_portfolio_risk=15.0)
    evaluations = [_evaluation(m) for m in ["a", "b", "c", "d"]]  # $500 each
    selection = select(evaluations, 10_000.0, [], limits)
    assert [p.evaluation.market_id for p in selection.picks] == ["a", "b", "c"]


def test_duplicate_market_picked_once() -> None:
    """Two evaluations of one market yield at most one pick: the best-ranked one."""
    better = _evaluation("m", price=25.0)
    worse = _evaluation("m", price=30.0)
    selection = select([worse, better], 10_000.0, [], DEFAULTS)
    assert [p.evaluation for p in selection.picks] == [better]
    assert selection.skipped[0].reason.startswith("duplicate:")


def test_generator_input_is_accepted() -> None:
    """Evaluations may be streamed; they are consumed once."""
    selection = select((_evaluation(m) for m in ["a", "b"]), 10_000.0, [], DEFAULTS)
    assert selection.opportunities == 2


# --- properties -----------------------------------------------------------------------------

_points = st.integers(0, 10_000).map(lambda n: n / 100)


@st.composite
def _evaluations(draw: st.DrawFn) -> Evaluation:
    """Mostly tradeable evaluations (price outside the belief), with some rejections mixed in."""
    side = draw(st.sampled_from(["YES", "NO", "YES", "NO", "NONE"]))
    price = draw(_points)
    gap = draw(st.integers(0, 4000).map(lambda n: n / 100))
    width = draw(st.integers(0, 2500).map(lambda n: n / 100))
    if side == "NO":
        high = max(0.0, price - gap)
        low = max(0.0, high - width)
    else:
        low = min(100.0, price + gap)
        high = min(100.0, low + width)
    return _evaluation(
        draw(st.sampled_from(MARKET_IDS)),
        side=side,
        price=price,
        low=low,
        high=high,
        category=draw(st.sampled_from(CATEGORIES[:4])),
        failed_check=draw(st.sampled_from([None] * 5 + ["liquidity"])),
        error=draw(st.sampled_from([None] * 5 + ["timeout"])),
    )


_open_positions = st.lists(
    st.builds(
        _position,
        st.sampled_from(MARKET_IDS),
        st.sampled_from(CATEGORIES[:4]),
        st.integers(1, 80_000).map(lambda n: n / 100),
    ),
    max_size=4,
    unique_by=lambda p: p.market_id,
)

_limits = st.builds(
    RiskLimits,
    min_edge=st.sampled_from([0.0, 5.0, 15.0]),
    max_portfolio_risk=st.sampled_from([5.0, 20.0, 50.0]),
    require_diversification=st.booleans(),
    max_positions_per_category=st.integers(1, 3),
    kelly_fraction=st.sampled_from([0.1, 0.25, 1.0]),
    max_position_percent=st.sampled_from([2.0, 5.0, 25.0]),
    min_position_usd=st.sampled_from([0.0, 1.0, 50.0]),
)

_selection_inputs = st.tuples(
    st.lists(_evaluations(), max_size=20),
    st.sampled_from([1_000.0, 10_000.0, 25_000.0])
    | st.integers(0, 2_000_000).map(lambda n: n / 100),
    _open_positions,
    _limits,
    st.sets(st.sampled_from(MARKET_IDS), max_size=3),
)

_fast = settings(max_examples=100, deadline=None)


@_fast
@given(_selection_inputs)
def test_property_caps_hold(
    inputs: tuple[list[Evaluation], float, list[Position], RiskLimits, set[str]],
) -> None:
    """Picks never push total risk past the cap nor a category past its limit."""
    evaluations, equity, open_positions, limits, excluded = inputs
    selection = select(evaluations, equity, open_positions, limits, excluded)
    if selection.picks:
        total = math.fsum(p.risk_usd for p in open_positions) + math.fsum(
            p.risk_usd for p in selection.picks
        )
        assert total <= limits.max_portfolio_risk / 100 * equity + 1e-6
    if limits.require_diversification:
        for category in CATEGORIES:
            picked = sum(p.evaluation.category == category for p in selection.picks)
            held = sum(p.category == category for p in open_positions)
            assert picked == 0 or held + picked <= limits.max_positions_per_category
    assert len(selection.picks) + len(selection.skipped) == selection.opportunities


@_fast
@given(_selection_inputs)
def test_property_candidates_are_eligible(
    inputs: tuple[list[Evaluation], float, list[Position], RiskLimits, set[str]],
) -> None:
    """Every pick is tradeable, meets min_edge, is new and not excluded, and is picked once."""
    evaluations, equity, open_positions, limits, excluded = inputs
    selection = select(evaluations, equity, open_positions, limits, excluded)
    held = {p.market_id for p in open_positions}
    picked = [p.evaluation.market_id for p in selection.picks]
    assert len(picked) == len(set(picked))
    for pick in selection.picks:
        e = pick.evaluation
        assert e.error is None and e.failed_check is None and e.side in ("YES", "NO")
        assert e.edge >= limits.min_edge
        assert e.market_id not in held and e.market_id not in excluded
        assert pick.size_usd >= limits.min_position_usd


@_fast
@given(_selection_inputs, st.randoms(use_true_random=False))
def test_property_order_independent(
    inputs: tuple[list[Evaluation], float, list[Position], RiskLimits, set[str]],
    rng: random.Random,
) -> None:
    """Shuffling the evaluations does not change the selection."""
    evaluations, equity, open_positions, limits, excluded = inputs
    shuffled = list(evaluations)
    rng.shuffle(shuffled)
    assert select(shuffled, equity, open_positions, limits, excluded) == select(
        evaluations, equity, open_positions, limits, excluded
    )


@_fast
@given(
    st.sampled_from(["YES", "NO"]),
    _points,
    _points,
    _points,
    st.integers(0, 10_000_000).map(lambda n: n / 100),
    _limits,
)
def test_property_size_follows_kelly(
    side: Side, price: float, a: float, b: float, equity: float, limits: RiskLimits
) -> None:
    """The stake is the capped fractional-Kelly amount, at most one cent below it."""
    low, high = min(a, b), max(a, b)
    size = kelly_size(side, price, low, high, equity, limits)
    q = price / 100 if side == "YES" else (100 - price) / 100
    p = low / 100 if side == "YES" else (100 - high) / 100
    assert size >= 0.0
    assert round(size * 100, 6) == round(size * 100)  # whole cents
    if not 0 < q < 1 or p <= q:
        assert size == 0.0
        return
    exact = equity * min(
        limits.kelly_fraction * (p - q) / (1 - q), limits.max_position_percent / 100
    )
    assert exact - 0.01 - 1e-6 <= size <= exact + 1e-6
