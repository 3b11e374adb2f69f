"""Paper positions: opening, exits and their precedence, P&L, marking, ledger replay."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomabotd.domain.models import CloseEvent, Evaluation, Market, Position, RiskLimits, Side
from pomabotd.domain.portfolio import (
    HistoryError,
    LedgerState,
    close_position,
    close_reason,
    equity,
    held_price,
    mark_positions,
    open_position,
    replay_ledger,
)
from pomabotd.domain.selection import Pick

OPENED_AT = datetime(2025, 1, 1, tzinfo=UTC)
CLOSED_AT = datetime(2025, 1, 2, tzinfo=UTC)
DEFAULTS = RiskLimits()


def _evaluation(
    market_id: str = "m1",
    *,
    side: str = "YES",
    price: float = 40.0,
    low: float = 50.0,
    high: float = 60.0,
    error: str | None = None,
) -> Evaluation:
    edge = low - price if side == "YES" else price - high
    return Evaluation(
        market_id=market_id,
        category="sports",
        price=price,
        belief_low=low,
        belief_high=high,
        confidence=70.0,
        side=side,  # type: ignore[arg-type]
        edge=edge,
        expected_edge=abs((low + high) / 2 - price),
        failed_check=None,
        reason="test",
        signals_applied=2,
        signals_rejected=0,
        error=error,
    )


def _open(
    side: str = "YES",
    price: float = 40.0,
    low: float = 50.0,
    high: float = 60.0,
    *,
    market_id: str = "m1",
    size: float = 100.0,
    limits: RiskLimits = DEFAULTS,
    cycle_id: int = 7,
) -> Position:
    pick = Pick(_evaluation(market_id, side=side, price=price, low=low, high=high), size, size)
    return open_position(pick, "Will it?", cycle_id, OPENED_AT, limits)


def _market(market_id: str, price: float, outcome: Side | None = None) -> Market:
    return Market(id=market_id, question="Will it?", price=price, liquidity=5000.0, outcome=outcome)


# --- opening ----------------------------------------------------------------------------------


def test_held_price() -> None:
    """YES holds the price; NO holds its complement."""
    assert held_price("YES", 30.0) == 30.0
    assert held_price("NO", 30.0) == 70.0


def test_open_yes_position() -> None:
    """A YES position enters at the price, with stop and target from the limits."""
    position = _open("YES", 40.0)
    assert position == Position(
        cycle_id=7,
        position_id="7-m1",
        market_id="m1",
        question="Will it?",
        category="sports",
        side="YES",
        entry_price=40.0,
        size_usd=100.0,
        risk_usd=100.0,
        edge=10.0,
        belief_low=50.0,
        belief_high=60.0,
        confidence=70.0,
        stop_price=38.0,
        target_price=44.0,
        opened_at=OPENED_AT,
    )


def test_open_no_position_uses_the_no_price() -> None:
    """A NO position at a YES price of 70 enters at 30."""
    position = _open("NO", 70.0, 40.0, 55.0)
    assert (position.side, position.entry_price) == ("NO", 30.0)
    assert (position.stop_price, position.target_price) == (28.5, 33.0)
    assert position.edge == 15.0


def test_position_records_carry_no_float_noise() -> None:
    """Derived prices, levels and edges are written as people expect: 22.4, not
    22.400000000000006, whether the position opens or closes."""
    position = _open("NO", 77.6, 40.1, 62.4)
    assert 100.0 - 77.6 != 22.4 and 77.6 - 62.4 != 15.2  # the noise being rounded away
    assert position.entry_price == 22.4 and position.edge == 15.2
    encoded = msgspec.json.encode(position)
    assert b"22.4," in encoded and b"0000000" not in encoded
    close = close_position(position, "stop_loss", held_price("NO", 78.9), 8, CLOSED_AT)
    assert close.exit_price == 21.1 and b"0000000" not in msgspec.json.encode(close)


def test_target_is_capped_at_100() -> None:
    """A target above 100 points is unreachable, so it is capped at 100."""
    position = _open("YES", 95.0, 99.0, 100.0)
    assert position.target_price == 100.0


def test_open_refuses_side_none() -> None:
    """A NONE evaluation cannot become a position."""
    pick = Pick(_evaluation(side="NONE"), 10.0, 10.0)
    with pytest.raises(ValueError, match="side is NONE"):
        open_position(pick, "?", 1, OPENED_AT, DEFAULTS)


def test_open_event_encodes_as_spec_line() -> None:
    """The position encodes as the `open` line of positions.jsonl."""
    line = msgspec.json.decode(msgspec.json.encode(_open()))
    assert line["event"] == "open"
    assert line["position_id"] == "7-m1"
    assert line["opened_at"] == "2025-01-01T00:00:00Z"


# --- exits ------------------------------------------------------------------------------------
# YES at 40: stop 38, target 44, entry-time belief 50-60 (midpoint 55).


@pytest.mark.parametrize(
    ("yes_price", "outcome", "new_belief", "expected"),
    [
        (40.0, "YES", (50.0, 60.0), ("resolved", 100.0)),
        (40.0, "NO", (50.0, 60.0), ("resolved", 0.0)),
        (10.0, "YES", (50.0, 60.0), ("resolved", 100.0)),  # resolved beats stop_loss
        (38.0, None, (50.0, 60.0), ("stop_loss", 38.0)),  # at the stop counts
        (30.0, None, (20.0, 25.0), ("stop_loss", 30.0)),  # stop beats invalidated
        (44.0, None, (50.0, 60.0), ("profit_target", 44.0)),
        (56.0, None, (50.0, 60.0), ("profit_target", 56.0)),  # target beats converged
        (39.0, None, (30.0, 38.5), ("invalidated", 39.0)),  # price above the new range
        (39.0, None, (30.0, 39.0), None),  # at the top of the range is not outside it
        (39.0, None, None, None),  # no new belief, no invalidation
        (41.0, None, (50.0, 60.0), None),
    ],
)
def test_yes_exits(
    yes_price: float,
    outcome: Side | None,
    new_belief: tuple[float, float] | None,
    expected: tuple[str, float] | None,
) -> None:
    """YES exits apply in their documented order: resolved, stop, target, converged, invalidated."""
    low, high = new_belief if new_belief else (None, None)
    assert close_reason(_open("YES", 40.0), yes_price, outcome, low, high) == expected


def test_yes_converged() -> None:
    """A YES position converges once the YES price reaches the entry-time belief midpoint."""
    position = _open("YES", 40.0, 50.0, 60.0, limits=RiskLimits(profit_target_percent=50.0))
    assert close_reason(position, 54.9, None, 50.0, 60.0) is None
    assert close_reason(position, 55.0, None, 50.0, 60.0) == ("converged", 55.0)
    # converged is judged before invalidated
    assert close_reason(position, 56.0, None, 40.0, 50.0) == ("converged", 56.0)


def test_no_exits() -> None:
    """NO exits use the NO price, and its converge/invalidate sides are mirrored."""
    limits = RiskLimits(profit_target_percent=100.0)
    position = _open("NO", 70.0, 40.0, 50.0, limits=limits)  # entry 30, stop 28.5, mid 45
    assert close_reason(position, 70.0, "NO", None, None) == ("resolved", 100.0)
    assert close_reason(position, 70.0, "YES", None, None) == ("resolved", 0.0)
    assert close_reason(position, 71.5, None, None, None) == ("stop_loss", 28.5)
    assert close_reason(position, 45.0, None, None, None) == ("converged", 55.0)
    assert close_reason(position, 46.0, None, None, None) is None
    assert close_reason(position, 69.0, None, 69.5, 80.0) == ("invalidated", 31.0)
    assert close_reason(position, 69.0, None, 69.0, 80.0) is None
    # a YES price far above the new range is no invalidation for a NO position
    assert close_reason(position, 69.0, None, 10.0, 20.0) is None
    assert close_reason(_open("NO", 70.0, 40.0, 50.0), 67.0, None, None, None) == (
        "profit_target",
        33.0,
    )


# --- P&L and equity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "entry_yes", "side", "exit_price", "pnl"),
    [
        (100.0, 40.0, "YES", 44.0, 10.0),
        (100.0, 40.0, "YES", 0.0, -100.0),
        (100.0, 60.0, "NO", 100.0, 150.0),
        (33.33, 30.0, "YES", 31.0, 1.11),  # 1.111 rounded to cents
        (50.0, 30.0, "YES", 28.5, -2.5),
    ],
)
def test_close_position_pnl(
    size: float, entry_yes: float, side: str, exit_price: float, pnl: float
) -> None:
    """P&L is size * (exit - entry) / entry at held-side prices, rounded to cents."""
    low, high = (90.0, 95.0) if side == "YES" else (10.0, 20.0)
    position = _open(side, entry_yes, low, high, size=size)
    event = close_position(position, "converged", exit_price, 9, CLOSED_AT)
    assert event == CloseEvent(
        cycle_id=9,
        position_id=position.position_id,
        market_id="m1",
        exit_price=exit_price,
        exit_reason="converged",
        pnl_usd=pnl,
        closed_at=CLOSED_AT,
    )


def test_equity() -> None:
    """Equity is the starting value plus realized P&L, in cents."""
    assert equity(10_000.0, -250.5) == 9749.5
    assert equity(10_000.0, 0.1 + 0.2) == 10000.3


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["YES", "NO"]),
    st.integers(1, 99).map(float),
    st.integers(0, 100).map(float),
    st.integers(100, 100_000).map(lambda n: n / 100),
)
def test_property_loss_bounded_by_stake(
    side: Side, price: float, exit_yes: float, size: float
) -> None:
    """A binary stake can lose at most itself: P&L >= -risk_usd, and the sign follows the move."""
    low, high = (99.0, 100.0) if side == "YES" else (0.0, 1.0)
    position = _open(side, price, low, high, size=size)
    exit_price = held_price(side, exit_yes)
    pnl = close_position(position, "converged", exit_price, 1, CLOSED_AT).pnl_usd
    assert pnl >= -position.risk_usd
    assert (pnl > 0) <= (exit_price > position.entry_price)
    assert (pnl < 0) <= (exit_price < position.entry_price)


# --- marking ----------------------------------------------------------------------------------


def test_mark_positions() -> None:
    """Marking closes what hits an exit, keeps the rest (and absent markets) in order."""
    absent = _open(market_id="gone")
    resolved = _open(market_id="won")
    quiet = _open(market_id="quiet")
    stopped = _open(market_id="stopped")
    invalid = _open(market_id="invalid")
    markets = {
        "won": _market("won", 40.0, outcome="YES"),
        "quiet": _market("quiet", 41.0),
        "stopped": _market("stopped", 37.0),
        "invalid": _market("invalid", 41.0),
    }
    evaluations = {
        "quiet": _evaluation("quiet", price=41.0, low=30.0, high=40.0, error="timeout"),
        "invalid": _evaluation("invalid", price=41.0, low=30.0, high=40.0),
    }
    still_open, closes = mark_positions(
        [absent, resolved, quiet, stopped, invalid], markets, evaluations, 8, CLOSED_AT
    )
    assert still_open == (absent, quiet)  # a failed evaluation cannot invalidate
    assert [(c.market_id, c.exit_reason, c.exit_price, c.pnl_usd) for c in closes] == [
        ("won", "resolved", 100.0, 150.0),
        ("stopped", "stop_loss", 37.0, -7.5),
        ("invalid", "invalidated", 41.0, 2.5),
    ]
    assert all(c.cycle_id == 8 and c.closed_at == CLOSED_AT for c in closes)


# --- ledger replay ----------------------------------------------------------------------------


def test_replay_ledger_round_trip() -> None:
    """Events encoded as positions.jsonl lines replay to the same open book and P&L."""
    a = _open(market_id="a", cycle_id=1)
    b = _open(market_id="b", cycle_id=1)
    close_a = close_position(a, "profit_target", 44.0, 2, CLOSED_AT)
    a_again = _open(market_id="a", cycle_id=3)
    close_b = close_position(b, "stop_loss", 38.0, 3, CLOSED_AT)
    events = [a, b, close_a, a_again, close_b]
    decoder = msgspec.json.Decoder(Position | CloseEvent)
    lines = [decoder.decode(msgspec.json.encode(event)) for event in events]
    assert replay_ledger(lines) == LedgerState(
        open_positions=(a_again,), realized_pnl_usd=5.0, last_cycle_id=3
    )


def test_replay_empty_ledger() -> None:
    """No events: nothing open, no P&L, cycle 0."""
    assert replay_ledger([]) == LedgerState((), 0.0, 0)


def test_replay_refuses_double_open() -> None:
    """Opening a market that is already open means the ledger is inconsistent."""
    with pytest.raises(HistoryError, match="already has an open position"):
        replay_ledger([_open(cycle_id=1), _open(cycle_id=2)])


def test_replay_refuses_close_of_unknown_position() -> None:
    """A close with no matching open (or a repeated close) means the ledger is inconsistent."""
    position = _open()
    close = close_position(position, "converged", 55.0, 2, CLOSED_AT)
    with pytest.raises(HistoryError, match="not open"):
        replay_ledger([position, close, close])
