"""The ordered trade gate: each check, its order, its sentence and the edges it reports."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pomabotd.domain.gate import CHECK_NAMES
from pomabotd.domain.models import Belief, Market
from tests.domain.gate_verdict import Verdict, verdict
from tests.strategies import AS_OF, markets

NARROW = Belief(45.0, 55.0, 80.0, 0)
OPEN_YES = Market(id="m1", question="Will it?", category="politics", price=30.0, liquidity=5000.0)


def _market(**changes: Any) -> Market:
    return msgspec.structs.replace(OPEN_YES, **changes)


@pytest.mark.parametrize(
    ("market", "belief", "failed", "reason"),
    [
        (
            _market(outcome="YES"),
            NARROW,
            "market_open",
            "market is resolved (YES)",
        ),
        (
            _market(closes_at=AS_OF),
            NARROW,
            "market_open",
            "market closed at 2026-06-01T12:00:00+00:00, not after as_of 2026-06-01T12:00:00+00:00",
        ),
        (
            _market(authority_is_clear=False),
            NARROW,
            "resolution_authority",
            "no clear authority decides how the market resolves",
        ),
        (
            _market(outcome_is_objective=False),
            NARROW,
            "objective_outcome",
            "the outcome is not objectively verifiable",
        ),
        (
            _market(liquidity=500.0),
            NARROW,
            "liquidity",
            "liquidity $500 is below the $1,000 minimum",
        ),
        (
            _market(liquidity=999.5),
            NARROW,
            "liquidity",
            "liquidity $999.50 is below the $1,000 minimum",
        ),
        (
            _market(),
            Belief(40.0, 65.5, 80.0, 0),
            "belief_width",
            "belief range 40\u201365.5 is 25.5 points wide, over the 25-point maximum",
        ),
        (
            _market(),
            Belief(45.0, 55.0, 64.5, 0),
            "confidence",
            "confidence 64.5 is below the 65 minimum",
        ),
        (
            _market(price=50.0),
            NARROW,
            "price_outside_range",
            "price 50 is inside the belief range 45\u201355",
        ),
        (
            _market(price=45.0),
            NARROW,
            "price_outside_range",
            "price 45 is inside the belief range 45\u201355",
        ),
        (
            _market(price=40.0),
            NARROW,
            "edge",
            "YES edge 5 points is below the 12-point minimum for politics",
        ),
        (
            _market(price=60.0),
            NARROW,
            "edge",
            "NO edge 5 points is below the 12-point minimum for politics",
        ),
        (
            _market(price=0.0),
            NARROW,
            "exit_plan",
            "no sane exit plan: the YES entry price would be 0",
        ),
        (
            _market(price=100.0),
            NARROW,
            "exit_plan",
            "no sane exit plan: the NO entry price would be 0",
        ),
    ],
)
def test_each_check_fails_with_its_name_and_numbers(
    market: Market, belief: Belief, failed: str, reason: str
) -> None:
    """Every check can fail on its own, reported by name with a sentence giving the numbers."""
    result = verdict(market, belief, AS_OF)
    assert (result.failed_check, result.reason, result.side) == (failed, reason, "NONE")


@pytest.mark.parametrize(
    ("market", "belief", "expected"),
    [
        (
            _market(),
            NARROW,
            Verdict(
                None,
                "YES: price 30 is 15 points below the belief range 45\u201355",
                "YES",
                15.0,
                20.0,
            ),
        ),
        (
            _market(price=70.0),
            NARROW,
            Verdict(
                None,
                "NO: price 70 is 15 points above the belief range 45\u201355",
                "NO",
                15.0,
                20.0,
            ),
        ),
        (
            _market(price=33.0, closes_at=AS_OF + timedelta(seconds=1)),
            Belief(45.0, 70.0, 65.0, 3),
            Verdict(
                None,
                "YES: price 33 is 12 points below the belief range 45\u201370",
                "YES",
                12.0,
                24.5,
            ),
        ),
        (
            _market(price=65.0, category="weather", liquidity=1000.0),
            NARROW,
            Verdict(
                None,
                "NO: price 65 is 10 points above the belief range 45\u201355",
                "NO",
                10.0,
                15.0,
            ),
        ),
    ],
)
def test_tradeable_markets_pass_every_check(
    market: Market, belief: Belief, expected: Verdict
) -> None:
    """Both sides pass, including every threshold met exactly (width 25, confidence 65, edge)."""
    assert verdict(market, belief, AS_OF) == expected


@pytest.mark.parametrize(
    ("market", "belief", "reason"),
    [
        (_market(liquidity=999.996), NARROW, "liquidity $999.996 is below the $1,000 minimum"),
        (
            _market(),
            Belief(40.0, 65.004, 80.0, 0),
            "belief range 40\u201365.004 is 25.004 points wide, over the 25-point maximum",
        ),
        (_market(), Belief(45.0, 55.0, 64.996, 0), "confidence 64.996 is below the 65 minimum"),
        (
            _market(),
            Belief(45.0, 55.0, 64.99999999999999, 0),
            "confidence 64.99999999999999 is below the 65 minimum",
        ),
        (
            _market(price=33.004),
            NARROW,
            "YES edge 11.996 points is below the 12-point minimum for politics",
        ),
    ],
)
def test_a_value_just_short_of_its_limit_is_never_shown_at_it(
    market: Market, belief: Belief, reason: str
) -> None:
    """A refused value that two decimals would round onto its limit (64.996 as `65` against a
    minimum of 65) is shown with the decimals that keep it on its side."""
    assert verdict(market, belief, AS_OF).reason == reason


@given(st.floats(min_value=60.0, max_value=65.0, exclude_max=True))
def test_a_refused_confidence_always_reads_below_the_minimum(confidence: float) -> None:
    """Whatever the confidence under 65, the number its reason shows is under 65 too."""
    result = verdict(_market(), Belief(45.0, 55.0, confidence, 0), AS_OF)
    assert result.failed_check == "confidence"
    shown = result.reason.removeprefix("confidence ").removesuffix(" is below the 65 minimum")
    assert float(shown) < 65.0, result.reason


def test_unknown_category_needs_the_other_minimum() -> None:
    """A market whose category is unknown is held to the `other` minimum edge of 25."""
    result = verdict(_market(category="gardening", price=25.0), NARROW, AS_OF)
    assert (result.failed_check, result.edge) == ("edge", 20.0)
    assert result.reason == "YES edge 20 points is below the 25-point minimum for other"


def test_first_failure_wins() -> None:
    """A market failing several checks reports the earliest one in the gate's order."""
    market = _market(authority_is_clear=False, liquidity=0.0)
    result = verdict(market, Belief(10.0, 90.0, 30.0, 4), AS_OF)
    assert result.failed_check == "resolution_authority"


def test_edges_are_reported_even_when_an_earlier_check_fails() -> None:
    """Edge and expected edge describe the price against the range whichever check failed."""
    result = verdict(_market(liquidity=10.0, price=80.0), NARROW, AS_OF)
    assert (result.failed_check, result.edge, result.expected_edge) == ("liquidity", 25.0, 30.0)


def test_edges_are_zero_inside_the_range() -> None:
    """A price inside the range (even on its edge) has no edge and no expected edge."""
    for price in (45.0, 50.0, 55.0):
        result = verdict(_market(price=price, liquidity=0.0), NARROW, AS_OF)
        assert (result.edge, result.expected_edge) == (0.0, 0.0)


@given(markets())
def test_gate_result_is_consistent(market: Market) -> None:
    """A side is chosen only when nothing failed; edges follow the price's place in the range."""
    result = verdict(market, NARROW, AS_OF)
    assert result.failed_check in (None, *CHECK_NAMES)
    assert (result.side == "NONE") == (result.failed_check is not None)
    if 45.0 <= market.price <= 55.0:
        assert (result.edge, result.expected_edge) == (0.0, 0.0)
    else:
        assert result.edge > 0.0
        assert result.expected_edge == pytest.approx(abs(market.price - 50.0), abs=1e-9)
    if result.failed_check is None:
        entry = market.price if result.side == "YES" else 100.0 - market.price
        assert 0.0 < entry < 100.0


@pytest.mark.parametrize(
    ("price", "low", "high", "failed"),
    [
        (0.2, 8.2, 18.2, None),  # edge 8.2 - 0.2 is 7.999999999999999 in floats: exactly 8
        (0.2, 9.2, 34.2, None),  # width 34.2 - 9.2 is 25.000000000000004 in floats: exactly 25
    ],
)
def test_checks_at_their_exact_limits_ignore_float_noise(price, low, high, failed):
    """An edge or width exactly at its limit is judged as the exact number, not float noise."""
    market = Market(id="m", question="q", category="weather", price=price, liquidity=5000.0)
    result = verdict(market, Belief(low, high, 80.0, 0), AS_OF)
    assert result.failed_check == failed


def test_gate_table_is_the_documented_order() -> None:
    """The gate table holds the nine checks in order, each with its four parts."""
    from pomabotd.domain.gate import GATE

    assert CHECK_NAMES == (
        "market_open", "resolution_authority", "objective_outcome", "liquidity",
        "belief_width", "confidence", "price_outside_range", "edge", "exit_plan",
    )
    assert [check.needs_belief for check in GATE] == [False] * 4 + [True] * 5
