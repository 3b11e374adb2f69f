"""Research figures and halt rules (pure), against answers computed by hand in each test."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pomabotd.domain.models import CATEGORIES, CloseEvent, Evaluation, Position, Side
from pomabotd.domain.portfolio import HistoryError
from pomabotd.domain.research import (
    BucketRate,
    ClosedPosition,
    Graded,
    HaltRules,
    brier_score,
    closed_positions,
    covers,
    describe_halt_figures,
    halt_figures,
    halt_verdict,
    implied_coverage,
    scorecard,
    unit_pnl,
    wilson_interval,
)

WHEN = datetime(2026, 3, 1, tzinfo=UTC)


def _evaluation(
    market_id: str,
    low: float,
    high: float,
    *,
    price: float = 50.0,
    category: str = "politics",
    confidence: float = 70.0,
    side: str = "NONE",
    edge: float = 0.0,
    failed_check: str | None = "confidence",
) -> Evaluation:
    return Evaluation(
        market_id=market_id,
        category=category,
        price=price,
        belief_low=low,
        belief_high=high,
        confidence=confidence,
        side=side,  # type: ignore[arg-type]
        edge=edge,
        expected_edge=0.0,
        failed_check=None if side != "NONE" else failed_check,
        reason="",
        signals_applied=0,
        signals_rejected=0,
    )


def _graded(evaluation: Evaluation, outcome: Side) -> Graded:
    return Graded(evaluation=evaluation, outcome=outcome)


def _closed(
    market_id: str,
    *,
    outcome: Side | None,
    side: Side = "YES",
    low: float = 57.0,
    high: float = 67.0,
    confidence: float = 70.0,
    exit_reason: str = "resolved",
    pnl_usd: float = 0.0,
    category: str = "politics",
) -> ClosedPosition:
    return ClosedPosition(
        position_id=f"1-{market_id}",
        market_id=market_id,
        category=category,
        side=side,
        entry_price=30.0,
        size_usd=100.0,
        edge=20.0,
        belief_low=low,
        belief_high=high,
        confidence=confidence,
        exit_price=100.0 if outcome == side else 0.0,
        exit_reason=exit_reason,  # type: ignore[arg-type]
        pnl_usd=pnl_usd,
        outcome=outcome,
    )


def test_brier_is_the_mean_squared_miss_of_the_midpoint():
    """Midpoints 62 (YES), 38 (YES), 50 (NO): (0.1444 + 0.3844 + 0.25) / 3."""
    graded = [
        _graded(_evaluation("a", 57, 67), "YES"),
        _graded(_evaluation("b", 33, 43), "YES"),
        _graded(_evaluation("c", 45, 55), "NO"),
    ]
    assert brier_score(graded) == pytest.approx((0.1444 + 0.3844 + 0.25) / 3)
    assert brier_score([]) is None


@pytest.mark.parametrize(
    ("low", "high", "outcome", "covered"),
    [
        (57, 67, "YES", True),
        (57, 67, "NO", False),
        (33, 43, "NO", True),
        (33, 43, "YES", False),
        (45, 55, "YES", True),
        (45, 55, "NO", True),
        (40, 50, "YES", True),  # a range reaching 50 leaves room for YES
        (50, 60, "NO", True),
    ],
)
def test_a_range_covers_the_outcomes_it_does_not_rule_out(low, high, outcome, covered):
    """YES is covered when belief_high >= 50, NO when belief_low <= 50."""
    assert covers(low, high, outcome) is covered


def test_implied_coverage_is_one_across_50_and_the_midpoint_chance_elsewhere():
    """45-55 and 50-60 contain 50 (1.0); 57-67 covers YES only (0.62); 33-43 NO only (0.62)."""
    assert implied_coverage(45, 55) == 1.0
    assert implied_coverage(50, 60) == 1.0
    assert implied_coverage(57, 67) == pytest.approx(0.62)
    assert implied_coverage(33, 43) == pytest.approx(0.62)


def test_unit_pnl_settles_the_held_side_at_100_or_0():
    """YES at 30 that wins returns 70/30; NO at YES price 80 (entry 20) returns 4 or loses 1."""
    assert unit_pnl("YES", 30.0, "YES") == pytest.approx(70 / 30)
    assert unit_pnl("YES", 30.0, "NO") == -1.0
    assert unit_pnl("NO", 80.0, "NO") == pytest.approx(4.0)
    assert unit_pnl("NO", 80.0, "YES") == -1.0


def test_scorecard_overall_and_by_category():
    """Five graded markets and three settled positions give the figures worked out below."""
    graded = [
        # politics, YES at 30 below 57-67, won: unit P&L 70/30
        _graded(_evaluation("p-yes", 57, 67, price=30, side="YES", edge=27), "YES"),
        # politics, NO at 80 above 33-43 (entry 20), lost: unit P&L -1
        _graded(_evaluation("p-no", 33, 43, price=80, side="NO", edge=37), "YES"),
        # crypto, YES at 20, won: unit P&L 80/20 = 4
        _graded(_evaluation("c-yes", 57, 67, price=20, side="YES", edge=37,
                            category="crypto"), "YES"),
        # sports, the prior, not tradeable
        _graded(_evaluation("s-flat", 45, 55, price=40, category="sports",
                            confidence=50), "NO"),
        # weather, one signal up, not tradeable; range above 50 but NO happened
        _graded(_evaluation("w-one", 51, 61, price=50, category="weather",
                            confidence=59.98), "NO"),
    ]
    closed = [
        _closed("c-yes", outcome="YES", pnl_usd=2000.0, category="crypto"),
        _closed("p-no", outcome="YES", side="NO", low=33, high=43, pnl_usd=-500.0),
        _closed("p-yes", outcome="YES", pnl_usd=1166.67),
    ]
    card = scorecard(graded, closed, 10000.0)

    assert card.markets == 5
    # (0.62-1)^2 + (0.38-1)^2 + (0.62-1)^2 + (0.5-0)^2 + (0.56-0)^2 = 1.2368
    assert card.brier == pytest.approx(1.2368 / 5)
    # covered: p-yes, c-yes, s-flat; not: p-no (33-43, YES), w-one (51-61, NO)
    assert card.coverage == pytest.approx(3 / 5)
    assert card.expected_coverage == pytest.approx((0.62 + 0.62 + 0.62 + 1.0 + 0.56) / 5)
    assert card.tradeable == 3
    assert card.hit_rate == pytest.approx(2 / 3)
    assert card.mean_edge == pytest.approx((27 + 37 + 37) / 3)
    assert card.pnl_per_unit == pytest.approx((70 / 30 - 1 + 4) / 3)
    assert card.selected == 3
    assert card.realized_pnl_usd == pytest.approx(2666.67)
    assert card.return_on_equity_pct == pytest.approx(26.6667)
    assert card.worst_position is not None and card.worst_position.market_id == "p-no"

    assert list(card.by_category) == ["politics", "crypto", "sports", "weather"]
    politics = card.by_category["politics"]
    assert politics.markets == 2 and politics.tradeable == 2 and politics.selected == 2
    assert politics.brier == pytest.approx((0.1444 + 0.3844) / 2)
    assert politics.coverage == 0.5 and politics.hit_rate == 0.5
    assert politics.pnl_per_unit == pytest.approx((70 / 30 - 1) / 2)
    assert politics.realized_pnl_usd == pytest.approx(666.67)
    sports = card.by_category["sports"]
    assert sports.tradeable == 0 and sports.hit_rate is None and sports.pnl_per_unit is None
    assert sports.selected == 0 and sports.realized_pnl_usd == 0 and sports.worst_position is None
    assert card.by_category["weather"].coverage == 0.0


def test_calibration_buckets_hold_midpoints_and_observed_yes_share():
    """Midpoints 62 and 68 share the 60-70 bucket; 50 opens the 50-60 one, 49.99 closes the one
    before; 100 lands in the last, 5 in the first."""
    graded = [
        _graded(_evaluation("a", 57, 67), "YES"),
        _graded(_evaluation("b", 63, 73), "NO"),
        _graded(_evaluation("c", 100, 100), "YES"),
        _graded(_evaluation("d", 0, 10), "NO"),
        _graded(_evaluation("e", 45, 55), "NO"),
        _graded(_evaluation("f", 44.99, 54.99), "NO"),
    ]
    buckets = scorecard(graded, [], 10000.0).calibration
    assert [(b.low, b.high) for b in buckets] == [(10.0 * i, 10.0 * i + 10) for i in range(10)]
    assert [b.count for b in buckets] == [1, 0, 0, 0, 1, 1, 2, 0, 0, 1]
    assert buckets[6].predicted == pytest.approx(0.65) and buckets[6].observed == 0.5
    assert buckets[9].predicted == 1.0 and buckets[9].observed == 1.0
    assert buckets[0].predicted == pytest.approx(0.05) and buckets[0].observed == 0.0
    assert buckets[1].predicted is None and buckets[1].observed is None


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [(0, 9, 0.0, 0.2991), (9, 9, 0.7009, 1.0), (5, 10, 0.2366, 0.7634),
     (2734, 4557, 0.58565, 0.61409)],
)
def test_wilson_intervals_match_the_textbook_values(successes, trials, low, high):
    """The 95% Wilson interval: 0 of 9 reaches 29.9%, 5 of 10 spans 23.7-76.3%, and 2,734 of
    4,557 less than three points."""
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=5e-5)
    assert wilson_interval(0, 0) is None


def test_calibration_buckets_carry_intervals_and_the_crowds_own_figures():
    """Each filled bucket has an interval around its share; the crowd's Brier score and
    calibration use the evaluated price as the forecast, bucketed by that price."""
    graded = [
        _graded(_evaluation("a", 57, 67, price=20.0), "YES"),
        _graded(_evaluation("b", 63, 73, price=25.0), "NO"),
        _graded(_evaluation("c", 45, 55, price=90.0), "NO"),
    ]
    card = scorecard(graded, [], 10000.0)
    bucket = card.calibration[6]
    assert bucket.observed_low < bucket.observed == 0.5 < bucket.observed_high
    assert card.calibration[1].observed_low is None
    assert card.crowd_brier == pytest.approx(((0.2 - 1) ** 2 + 0.25**2 + 0.9**2) / 3)
    crowd = {b.low: (b.count, b.observed) for b in card.crowd_calibration if b.count}
    assert crowd == {20.0: (2, 0.5), 90.0: (1, 0.0)}


def test_confidence_buckets_split_at_50_65_and_80():
    """Lower bounds are inclusive, 95 falls in the top bucket, below 30 in the bottom one."""
    confidences = [20, 30, 49.99, 50, 64.99, 65, 79.99, 80, 95]
    graded = [
        _graded(_evaluation(f"m{i}", 57, 67, confidence=c), "YES")
        for i, c in enumerate(confidences)
    ]
    buckets = scorecard(graded, [], 10000.0).confidence_buckets
    assert [(b.low, b.high, b.count) for b in buckets] == [
        (30, 50, 3), (50, 65, 2), (65, 80, 2), (80, 95, 2)
    ]
    assert all(b.coverage == 1.0 and b.brier == pytest.approx(0.1444) for b in buckets)
    assert all(b.tradeable == 0 and b.hit_rate is None for b in buckets)


def _open(market_id: str, side: Side, confidence: float = 70.0) -> Position:
    return Position(
        cycle_id=1, position_id=f"1-{market_id}", market_id=market_id, question="?",
        category="crypto", side=side, entry_price=20.0, size_usd=50.0, risk_usd=50.0,
        edge=30.0, belief_low=55.0, belief_high=65.0, confidence=confidence,
        stop_price=19.0, target_price=22.0, opened_at=WHEN,
    )


def _close(market_id: str, exit_price: float, reason: str, pnl: float) -> CloseEvent:
    return CloseEvent(
        cycle_id=2, position_id=f"1-{market_id}", market_id=market_id, exit_price=exit_price,
        exit_reason=reason, pnl_usd=pnl, closed_at=WHEN,  # type: ignore[arg-type]
    )


def test_closed_positions_pair_ledger_events_in_close_order():
    """Opens and closes pair by position id; an open position is left out; a resolved exit at
    100 means the held side won, at 0 that the other side did; other exits have no outcome."""
    events = [
        _open("a", "YES"), _open("b", "NO"), _open("c", "YES"), _open("d", "NO"),
        _close("b", 0.0, "resolved", -50.0),
        _close("a", 100.0, "resolved", 200.0),
        _close("d", 25.0, "profit_target", 12.5),
    ]
    closed = closed_positions(events)
    assert [(c.market_id, c.outcome) for c in closed] == [("b", "YES"), ("a", "YES"), ("d", None)]
    assert closed[0].side == "NO" and closed[0].pnl_usd == -50.0
    assert closed[0].belief_low == 55.0 and closed[0].category == "crypto"


def test_a_close_without_its_open_is_a_ledger_error():
    """A close of a position never opened names the position."""
    with pytest.raises(HistoryError, match="1-zz"):
        closed_positions([_close("zz", 0.0, "resolved", -1.0)])


def test_coverage_halt_needs_20_resolved_positions_and_names_its_figures():
    """20 YES positions on 57-67 (expected 62%) that all lost cover 0%: 62 points off, halt;
    19 of them are not enough evidence yet."""
    lost = [_closed(f"m{i:02d}", outcome="NO") for i in range(20)]
    verdict = halt_verdict(lost)
    assert verdict.halted and verdict.rule == "coverage_deviation"
    assert verdict.reason is not None
    for figure in ("0.0%", "62.0%", "62.0 points", "20 resolved positions", "limit 15"):
        assert figure in verdict.reason
    assert not halt_verdict(lost[:19]).halted


def test_coverage_within_15_points_does_not_halt():
    """12 of 20 won on 57-67 cover 60% against 62% expected: 2 points, no halt; unresolved
    closes do not count."""
    closes = [_closed(f"w{i}", outcome="YES") for i in range(12)]
    closes += [_closed(f"l{i}", outcome="NO") for i in range(8)]
    closes += [_closed(f"s{i}", outcome=None, exit_reason="stop_loss") for i in range(30)]
    assert halt_verdict(closes).halted is False


def test_high_confidence_bucket_losing_to_low_confidence_halts():
    """High confidence (>= 80) won 4 of 10, low won 6 of 10: halt; with 9 high, no verdict yet.

    The ranges contain 50, so coverage is always as expected and that rule stays quiet.
    """
    def bucket(prefix: str, confidence: float, wins: int) -> list[ClosedPosition]:
        return [
            _closed(f"{prefix}{i}", outcome="YES" if i < wins else "NO", low=40, high=60,
                    confidence=confidence)
            for i in range(10)
        ]

    closes = bucket("h", 85.0, 4) + bucket("l", 70.0, 6)
    verdict = halt_verdict(closes)
    assert verdict.rule == "confidence_inversion"
    assert verdict.reason is not None
    assert "40.0% of 10" in verdict.reason and "60.0% of 10" in verdict.reason
    assert not halt_verdict(closes[1:]).halted
    assert not halt_verdict(bucket("h", 85.0, 6) + bucket("l", 70.0, 6)).halted


def test_three_invalidations_in_a_row_halt_and_any_other_exit_breaks_the_run():
    """inv, inv, stop, inv, inv is no streak; a third in a row halts, naming the markets."""
    def close(market_id: str, reason: str) -> ClosedPosition:
        return _closed(market_id, outcome=None, exit_reason=reason)

    broken = [close("a", "invalidated"), close("b", "invalidated"), close("c", "stop_loss"),
              close("d", "invalidated"), close("e", "invalidated")]
    assert halt_verdict(broken) == halt_verdict([])
    assert not halt_verdict(broken).halted
    verdict = halt_verdict([*broken, close("f", "invalidated"), close("g", "converged")])
    assert verdict.rule == "invalidation_streak"
    assert verdict.reason is not None and "d, e, f" in verdict.reason
    assert not halt_verdict([*broken, close("f", "invalidated")],
                            HaltRules(invalidation_streak=4)).halted


def test_the_halt_figures_show_what_the_rules_judge_before_any_trips():
    """Three won and one lost on 57-67 (one of them at confidence 85), a stop-loss, then two
    invalidations: 4 resolved, coverage 75% against 62% expected (13 points, under 15), the
    high bucket 1 of 1 won, the low one 2 of 3, a streak of 2; no rule trips, and the line
    names each figure with its limit."""
    closes = [_closed("a", outcome="YES", confidence=85.0), _closed("b", outcome="YES"),
              _closed("c", outcome="YES"), _closed("d", outcome="NO"),
              _closed("e", outcome=None, exit_reason="stop_loss"),
              _closed("f", outcome=None, exit_reason="invalidated"),
              _closed("g", outcome=None, exit_reason="invalidated")]
    figures = halt_figures(closes)
    assert figures.resolved == 4 and figures.invalidation_streak == 2
    assert figures.coverage_observed == 0.75
    assert figures.coverage_expected == pytest.approx(0.62)
    assert figures.coverage_deviation_points == pytest.approx(13.0)
    assert figures.high_confidence == BucketRate(count=1, hit_rate=1.0)
    assert figures.low_confidence.count == 3
    assert figures.low_confidence.hit_rate == pytest.approx(2 / 3)
    assert not halt_verdict(closes).halted
    assert describe_halt_figures(figures) == (
        "4 resolved, coverage 75.0% against 62.0% expected (limit 15 points after 20); "
        "confidence >= 80 won 100.0% of 1, below it 66.7% of 3 (judged at 10 each); "
        "2 invalidated in a row (limit 3)"
    )
    empty = halt_figures([])
    assert (empty.resolved, empty.coverage_observed, empty.high_confidence.hit_rate) == (
        0, None, None)
    assert describe_halt_figures(halt_figures(closes[4:])) == (
        "no resolved position yet; 2 invalidated in a row (limit 3)"
    )


_graded_values = st.builds(
    lambda low, width, confidence, category, outcome, tradeable, index: _graded(
        _evaluation(f"m{index}", low, min(100.0, low + width), price=5.0,
                    category=category, confidence=confidence,
                    side="YES" if tradeable else "NONE", edge=low - 5.0),
        outcome,
    ),
    st.floats(min_value=5.0, max_value=95.0),
    st.floats(min_value=0.0, max_value=30.0),
    st.floats(min_value=30.0, max_value=95.0),
    st.sampled_from(CATEGORIES),
    st.sampled_from(["YES", "NO"]),
    st.booleans(),
    st.integers(min_value=0, max_value=10**6),
)


@given(st.lists(_graded_values, max_size=30), st.randoms(use_true_random=False))
def test_scorecard_is_bounded_and_does_not_depend_on_order(graded, rng: random.Random):
    """Shares stay within 0-1, bucket counts add up, and shuffling the input changes nothing."""
    card = scorecard(graded, [], 10000.0)
    for share in (card.brier, card.coverage, card.expected_coverage, card.hit_rate):
        assert share is None or 0.0 <= share <= 1.0
    assert sum(b.count for b in card.calibration) == len(graded)
    assert sum(b.count for b in card.confidence_buckets) == len(graded)
    shuffled = list(graded)
    rng.shuffle(shuffled)
    assert scorecard(shuffled, [], 10000.0) == card
