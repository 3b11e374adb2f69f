"""The halt rules in operation (pure): latching, lifting, a fresh window, compaction, recovery."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pomabotd.domain.halt import HaltState, advance, compact_window, recover
from pomabotd.domain.models import CloseEvent, Position, Side
from pomabotd.domain.portfolio import HistoryError
from pomabotd.domain.research import ClosedPosition, HaltRules, halt_verdict

WHEN = datetime(2026, 3, 1, tzinfo=UTC)
RULES = HaltRules()
SETTINGS: dict[str, str | int | float | bool] = {"risk.min_edge": 15.0, "batch.evaluator": "x:y"}


def _closed(market_id: str, reason: str = "invalidated", outcome: Side | None = None,
            confidence: float = 70.0) -> ClosedPosition:
    return ClosedPosition(
        position_id=f"1-{market_id}", market_id=market_id, category="politics", side="YES",
        entry_price=30.0, size_usd=100.0, edge=20.0, belief_low=57.0, belief_high=67.0,
        confidence=confidence, exit_price=100.0 if outcome == "YES" else 29.0,
        exit_reason=reason,  # type: ignore[arg-type]
        pnl_usd=0.0, outcome=outcome,
    )


def _step(state: HaltState, cycle_id: int, closed: list[ClosedPosition], *,
          settings: dict[str, str | int | float | bool] = SETTINGS, resume: bool = False):
    return advance(state, cycle_id=cycle_id, closed=closed, rules=RULES, settings=settings,
                   resume=resume)


def _tripped() -> HaltState:
    step = _step(HaltState(), 2, [_closed("a"), _closed("b"), _closed("c")])
    assert step.tripped and step.state.halted
    return step.state


def test_a_streak_across_cycles_trips_once_and_the_halt_latches():
    """Two invalidations, then a third next cycle: halted at cycle 3 with the settings in force;
    later cycles stay halted without tripping again, whatever closes."""
    first = _step(HaltState(), 2, [_closed("a"), _closed("b")])
    assert not first.state.halted and len(first.state.window) == 2
    second = _step(first.state, 3, [_closed("c")])
    state = second.state
    assert second.tripped and state.halted and state.since_cycle == 3
    assert state.rule == "invalidation_streak" and "a, b, c" in (state.reason or "")
    assert state.settings == SETTINGS
    later = _step(state, 4, [_closed("r", "resolved", "YES")])
    assert later.state == state and not later.tripped and later.lifted is None


def test_a_streak_inside_one_cycle_trips_though_a_later_close_of_it_ends_the_run():
    """Three invalidations then a resolved close, all in one cycle: the streak happened, so the
    cycle trips, although the compacted window keeps only the resolved close."""
    step = _step(HaltState(), 2, [_closed("a"), _closed("b"), _closed("c"),
                                  _closed("d", "resolved", "YES")])
    assert step.tripped and step.state.rule == "invalidation_streak"
    assert "a, b, c" in (step.state.reason or "")
    assert [c.market_id for c in step.state.window] == ["d"]


def test_a_resume_lifts_the_halt_and_the_old_closes_are_not_judged_again():
    """After a resume at cycle 5 the window starts empty there: one more invalidation is not a
    streak, two more are not either; the closes of cycle 5 itself are judged."""
    step = _step(_tripped(), 5, [_closed("d")], resume=True)
    assert step.lifted == "resume" and not step.state.halted
    assert step.state.judging_since == 5
    assert [c.market_id for c in step.state.window] == ["d"]
    assert not _step(step.state, 6, [_closed("e")]).state.halted
    assert _step(step.state, 6, [_closed("e"), _closed("f")]).tripped


def test_a_change_of_the_decision_settings_lifts_the_halt_naming_the_keys():
    """Another min_edge lifts it and says so; the same settings keep it."""
    state = _tripped()
    assert _step(state, 3, []).state.halted
    step = _step(state, 3, [], settings={**SETTINGS, "risk.min_edge": 20.0})
    assert step.lifted == "configuration" and step.changed == ("risk.min_edge",)
    assert not step.state.halted and step.state.judging_since == 3


def test_a_recovered_halt_adopts_the_settings_of_the_next_cycle_instead_of_lifting():
    """A halt rebuilt from the files does not know its settings: the next cycle's are taken as
    those it halted under, and only a later change lifts it."""
    recovered = HaltState(halted=True, rule="invalidation_streak", reason="r", since_cycle=2)
    step = _step(recovered, 3, [])
    assert step.state.halted and step.lifted is None and step.state.settings == SETTINGS
    assert _step(step.state, 4, [], settings={}).lifted == "configuration"


def test_a_resume_without_a_halt_changes_nothing():
    """A stale request does not reset the window."""
    state = _step(HaltState(), 2, [_closed("a")]).state
    assert _step(state, 3, [], resume=True).state == state


def test_the_window_keeps_resolved_closes_and_the_trailing_invalidation_run():
    """Stop-losses and broken runs go; resolved closes and the run still going stay, in order."""
    closes = [_closed("a"), _closed("r1", "resolved", "NO"), _closed("s", "stop_loss"),
              _closed("b"), _closed("c", "converged"), _closed("d"), _closed("e")]
    assert [c.market_id for c in compact_window(closes)] == ["r1", "d", "e"]


_reasons = st.sampled_from(["invalidated", "invalidated", "stop_loss", "resolved", "converged"])
_closes = st.lists(
    st.tuples(_reasons, st.sampled_from(["YES", "NO"]), st.sampled_from([60.0, 85.0])),
    max_size=60,
).map(lambda rows: [
    _closed(f"m{i}", reason, outcome if reason == "resolved" else None, confidence)
    for i, (reason, outcome, confidence) in enumerate(rows)
])


@given(_closes)
def test_compaction_never_changes_a_verdict_reached_cycle_by_cycle(closes):
    """Judged one close at a time, the compacted window halts exactly when the full history
    does, with the same reason."""
    state = HaltState()
    for index, close in enumerate(closes):
        state = _step(state, index + 1, [close]).state
        if state.halted:
            break
    history = closes[: index + 1] if closes else []
    full = halt_verdict(history)
    if state.halted:
        assert full.halted and full.reason == state.reason
    else:
        assert not full.halted


def _open(cycle_id: int, market_id: str) -> Position:
    return Position(
        cycle_id=cycle_id, position_id=f"{cycle_id}-{market_id}", market_id=market_id,
        question="?", category="sports", side="YES", entry_price=40.0, size_usd=500.0,
        risk_usd=500.0, edge=17.0, belief_low=57.0, belief_high=67.0, confidence=70.0,
        stop_price=38.0, target_price=44.0, opened_at=WHEN,
    )


def _close(cycle_id: int, position: Position, reason: str, price: float) -> CloseEvent:
    return CloseEvent(
        cycle_id=cycle_id, position_id=position.position_id, market_id=position.market_id,
        exit_price=price, exit_reason=reason,  # type: ignore[arg-type]
        pnl_usd=0.0, closed_at=WHEN,
    )


def test_recovery_follows_the_halted_flag_of_each_cycle():
    """Cycle 2 closes a (carried from before) and b; cycle 3 is written halted; cycle 4 not
    halted (lifted there) closes c, which alone forms the new window."""
    a, b, c = _open(1, "a"), _open(2, "b"), _open(2, "c")
    events = [b, c, _close(2, a, "resolved", 100.0), _close(2, b, "invalidated", 41.0),
              _close(4, c, "invalidated", 41.0)]
    halted = recover(HaltState(judging_since=2), [a], events, [2, 3], {3: "invalidation_streak: x"})
    assert halted.halted and halted.rule == "invalidation_streak" and halted.since_cycle == 3
    assert [w.market_id for w in halted.window] == ["a", "b"] and halted.settings is None
    lifted = recover(HaltState(judging_since=2), [a], events, [2, 3, 4], {3: "x"})
    assert not lifted.halted and lifted.judging_since == 4
    assert [w.market_id for w in lifted.window] == ["c"]


def test_recovery_refuses_a_close_of_a_position_never_opened():
    """A close the files cannot pair is a history error, not a silent gap."""
    with pytest.raises(HistoryError):
        recover(HaltState(), [], [_close(1, _open(1, "z"), "invalidated", 1.0)], [1], {})


def test_a_caller_without_settings_never_sees_a_configuration_change():
    """Settings unknown (None) neither lift a halt nor overwrite the ones it tripped under."""
    state = _tripped()
    step = advance(state, cycle_id=3, closed=[], rules=RULES, settings=None, resume=False)
    assert step.state == state and step.lifted is None
