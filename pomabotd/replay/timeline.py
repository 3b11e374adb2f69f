"""Turn resolved markets into one engine input that shows each market as it stood D days
before it closed.

The engine evaluates a whole input at one `as_of`, but every resolved market has its own
evaluation time `closes_at - D days`. Rather than run the engine once per distinct time (with
thousands of markets closing at thousands of different times, that is thousands of runs, each
paying the pool's round trips), each market's own timeline is shifted so that its evaluation time
lands on one common `as_of`: its `closes_at` and the timestamps of its signals move by the same
offset. The belief update and the gate depend only on differences of times (signal order, the gap
between signals, decay to `as_of`, closing after `as_of`), so the built-in evaluator decides
exactly as it would have at the real time, and the engine runs once. The common `as_of` is the
latest evaluation time: every offset then moves time forward and no shifted time passes the
latest real `closes_at`, so the arithmetic cannot leave the calendar. A strategy plugin that
reads calendar dates (the weekday, the month) sees shifted dates; one that compares times sees
the truth.

What the evaluator must not know is removed here, before any evaluation: the outcome is
stripped, the price becomes the price at the horizon, and a signal stamped after the market's
evaluation time is dropped (it is news from the future; dropping it, rather than leaving the
evaluator to skip it, keeps it from a plugin as well). Only the fields of a `Market` reach the
workers, so extra fields of a record (other horizons' prices) stay behind too.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from pomabotd.domain.models import Market, Side, Signal
from pomabotd.replay.source import ResolvedInput
from pomabotd.wire import group_signals

__all__ = ["Case", "ReplayInput", "prepare_input"]

_NO_SIGNALS: tuple[Signal, ...] = ()
#: The `as_of` of a replay with nothing to evaluate; any time would do.
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class Case(msgspec.Struct, frozen=True, kw_only=True):
    """What scoring needs about one replayed market, kept out of the evaluator's sight.

    Times are real: `evaluated_at` is `closes_at - D days`.
    """

    question: str
    outcome: Side
    evaluated_at: datetime
    closes_at: datetime


class ReplayInput(msgspec.Struct, frozen=True, kw_only=True):
    """The engine's input for one replay: JSON lines evaluated at `as_of`, and the cases.

    `cases` is in the source's market order. `signals_used` counts the signals sent to the
    engine, `signals_late` those dropped because they were stamped after their market's
    evaluation time; signals about markets not replayed count in neither.
    """

    markets: bytes
    signals: bytes
    as_of: datetime
    cases: dict[str, Case]
    signals_used: int
    signals_late: int


def prepare_input(resolved: ResolvedInput) -> ReplayInput:
    """Prepare `resolved` for evaluation at each market's `evaluated_at`."""
    as_of = max((item.evaluated_at for item in resolved.markets), default=_NO_TIME)
    grouped = group_signals(resolved.signals)
    encoder = msgspec.json.Encoder()
    market_lines = bytearray()
    signal_lines = bytearray()
    cases: dict[str, Case] = {}
    used = late = 0
    for item in resolved.markets:
        market = item.market
        evaluated_at = item.evaluated_at
        offset = as_of - evaluated_at
        cases[market.id] = Case(
            question=market.question,
            outcome=item.outcome,
            evaluated_at=evaluated_at,
            closes_at=item.closes_at,
        )
        shown: Market = msgspec.structs.replace(
            market,
            price=market.price if item.horizon_price is None else item.horizon_price,
            closes_at=item.closes_at + offset,
            outcome=None,
        )
        encoder.encode_into(shown, market_lines, -1)
        market_lines.extend(b"\n")
        for signal in grouped.get(market.id, _NO_SIGNALS):
            if signal.timestamp > evaluated_at:
                late += 1
                continue
            used += 1
            moved = msgspec.structs.replace(signal, timestamp=signal.timestamp + offset)
            encoder.encode_into(moved, signal_lines, -1)
            signal_lines.extend(b"\n")
    return ReplayInput(
        markets=bytes(market_lines),
        signals=bytes(signal_lines),
        as_of=as_of,
        cases=cases,
        signals_used=used,
        signals_late=late,
    )
