"""Paper positions: opening, marking, closing and rebuilding them from the ledger.

The rules (entry and exit prices, stop and target levels, the exits in order, P&L) are those
of docs/decisions.md#positions.

Prices here are the held side's price in points unless named `yes_price`. Everything is pure so
that the daemon can replay `positions.jsonl` on restart and arrive at the same portfolio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal, TypeAlias

from msgspec import Struct

from pomabotd.domain.models import CloseEvent, Evaluation, Market, Position, RiskLimits, Side
from pomabotd.domain.selection import Pick

__all__ = [
    "ExitReason",
    "HistoryError",
    "LedgerState",
    "close_position",
    "close_reason",
    "equity",
    "held_price",
    "mark_positions",
    "open_position",
    "replay_ledger",
]

ExitReason: TypeAlias = Literal[
    "resolved", "stop_loss", "profit_target", "converged", "invalidated"
]

class HistoryError(ValueError):
    """Position events that cannot follow from a consistent history: a second open of a held
    market, a close of a position that is not open. The output layer names the file."""


#: Decimal places kept on derived prices and levels, so that e.g. 40 * 0.95 compares equal to
#: 38 and the files people read carry no float noise.
_PRICE_DIGITS = 6


class LedgerState(Struct, frozen=True):
    """The portfolio as rebuilt from `positions.jsonl`: open positions in opening order."""

    open_positions: tuple[Position, ...]
    realized_pnl_usd: float
    last_cycle_id: int


def held_price(side: Side, yes_price: float) -> float:
    """The price of the side we hold, in points (`100 - 77.6` is 22.4, not 22.400000000000006)."""
    return yes_price if side == "YES" else round(100.0 - yes_price, _PRICE_DIGITS)


def open_position(
    pick: Pick, question: str, cycle_id: int, opened_at: datetime, limits: RiskLimits
) -> Position:
    """Turn a pick into a position; the id is derived from cycle and market so replays match."""
    evaluation = pick.evaluation
    side: Side
    if evaluation.side == "YES":
        side = "YES"
    elif evaluation.side == "NO":
        side = "NO"
    else:
        raise ValueError(f"cannot open a position on {evaluation.market_id}: side is NONE")
    entry = held_price(side, evaluation.price)
    stop = entry * (1.0 - limits.stop_loss_percent / 100.0)
    target = min(100.0, entry * (1.0 + limits.profit_target_percent / 100.0))
    return Position(
        cycle_id=cycle_id,
        position_id=f"{cycle_id}-{evaluation.market_id}",
        market_id=evaluation.market_id,
        question=question,
        category=evaluation.category,
        side=side,
        entry_price=entry,
        size_usd=pick.size_usd,
        risk_usd=pick.risk_usd,
        edge=round(evaluation.edge, _PRICE_DIGITS),
        belief_low=round(evaluation.belief_low, _PRICE_DIGITS),
        belief_high=round(evaluation.belief_high, _PRICE_DIGITS),
        confidence=round(evaluation.confidence, _PRICE_DIGITS),
        stop_price=round(stop, _PRICE_DIGITS),
        target_price=round(target, _PRICE_DIGITS),
        opened_at=opened_at,
    )


def close_reason(
    position: Position,
    yes_price: float,
    outcome: Side | None,
    belief_low: float | None,
    belief_high: float | None,
) -> tuple[ExitReason, float] | None:
    """The first exit that applies, with the held-side exit price, or None to stay open.

    Order: resolved, stop_loss, profit_target, converged (against the entry-time belief
    midpoint), invalidated (against the new belief; skipped when there is none).
    """
    side = position.side
    if outcome is not None:
        return "resolved", 100.0 if outcome == side else 0.0
    held = held_price(side, yes_price)
    if held <= position.stop_price:
        return "stop_loss", held
    if held >= position.target_price:
        return "profit_target", held
    midpoint = (position.belief_low + position.belief_high) / 2.0
    if (yes_price >= midpoint) if side == "YES" else (yes_price <= midpoint):
        return "converged", held
    if side == "YES":
        if belief_high is not None and yes_price > belief_high:
            return "invalidated", held
    elif belief_low is not None and yes_price < belief_low:
        return "invalidated", held
    return None


def close_position(
    position: Position,
    reason: ExitReason,
    exit_price: float,
    cycle_id: int,
    closed_at: datetime,
) -> CloseEvent:
    """Record the close; P&L is the stake's return at the held-side prices, in cents."""
    entry = position.entry_price
    pnl = position.size_usd * (exit_price - entry) / entry if entry > 0.0 else 0.0
    return CloseEvent(
        cycle_id=cycle_id,
        position_id=position.position_id,
        market_id=position.market_id,
        exit_price=exit_price,
        exit_reason=reason,
        pnl_usd=round(pnl, 2),
        closed_at=closed_at,
    )


def mark_positions(
    open_positions: Sequence[Position],
    markets: Mapping[str, Market],
    evaluations: Mapping[str, Evaluation],
    cycle_id: int,
    as_of: datetime,
) -> tuple[tuple[Position, ...], tuple[CloseEvent, ...]]:
    """Close what hits an exit at this cycle's prices; return (still open, closes) in input order.

    A position whose market is missing this cycle stays open unchanged: a gap in the feed is
    not news. A failed evaluation gives no new belief, so it cannot invalidate.
    """
    still_open: list[Position] = []
    closes: list[CloseEvent] = []
    for position in open_positions:
        market = markets.get(position.market_id)
        if market is None:
            still_open.append(position)
            continue
        evaluation = evaluations.get(position.market_id)
        low: float | None = None
        high: float | None = None
        if evaluation is not None and evaluation.error is None:
            low, high = evaluation.belief_low, evaluation.belief_high
        decision = close_reason(position, market.price, market.outcome, low, high)
        if decision is None:
            still_open.append(position)
        else:
            reason, exit_price = decision
            closes.append(close_position(position, reason, exit_price, cycle_id, as_of))
    return tuple(still_open), tuple(closes)


def equity(portfolio_value: float, realized_pnl: float) -> float:
    """Starting value plus realized P&L, in cents; open positions are not marked to market."""
    return round(portfolio_value + realized_pnl, 2)


def replay_ledger(events: Iterable[Position | CloseEvent]) -> LedgerState:
    """Rebuild open positions and realized P&L from `positions.jsonl` events, in file order.

    Raises HistoryError for events that cannot follow from a consistent history (a second open
    of a held market, a close of a position that is not open), since continuing could re-open
    or double-count positions.
    """
    open_by_id: dict[str, Position] = {}
    held_markets: set[str] = set()
    pnls: list[float] = []
    last_cycle_id = 0
    for event in events:
        last_cycle_id = max(last_cycle_id, event.cycle_id)
        if isinstance(event, Position):
            if event.market_id in held_markets or event.position_id in open_by_id:
                raise HistoryError(
                    f"position {event.position_id} opens market {event.market_id}, "
                    "which already has an open position"
                )
            open_by_id[event.position_id] = event
            held_markets.add(event.market_id)
        else:
            opened = open_by_id.pop(event.position_id, None)
            if opened is None:
                raise HistoryError(f"close of position {event.position_id}, which is not open")
            held_markets.discard(opened.market_id)
            pnls.append(event.pnl_usd)
    return LedgerState(
        open_positions=tuple(open_by_id.values()),
        realized_pnl_usd=round(math.fsum(pnls), 2),
        last_cycle_id=last_cycle_id,
    )
