"""The living world's resolved markets as a replay's input (`replay --markets synthetic`).

A replay of the world needs no file: the markets of the world of `sources.seed` that resolved
in the `REPLAY_DAYS` days before the replay's time are read as any resolved record is, with
the price each showed `D` days before its close (the world computes it at that time) and the
news the source showed then (the items of the news window before that time: nothing later
reaches the evaluator). A market listed fewer than `D` days before its close had no price then;
it is counted with the records without a price at the horizon and not replayed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from pomabotd.domain.models import Side
from pomabotd.replay.source import ResolvedInput, ResolvedMarket
from pomabotd.sources.encode import micros
from pomabotd.sources.synthetic import NAME
from pomabotd.sources.world import (
    World,
    cohort,
    market_ids,
    market_lines,
    resolved_between,
    signal_lines,
    yes_price,
)
from pomabotd.wire import decode_markets, decode_signals
from pomabotd.words import plural

__all__ = ["REPLAY_DAYS", "world_resolved"]

#: How far back from the replay's time the world's resolved markets are taken.
REPLAY_DAYS: Final = 30
_DAY_US: Final = 86_400_000_000
_SIDES: Final[tuple[Side, Side]] = ("NO", "YES")


def world_resolved(world: World, as_of: datetime, days: int) -> ResolvedInput:
    """The markets of `world` that resolved in the `REPLAY_DAYS` days up to `as_of`, each to be
    evaluated `days` days before its close, with the world's news."""
    until = micros(as_of)
    slot, generation = resolved_between(world.seed, world.markets,
                                        until - REPLAY_DAYS * _DAY_US, until)
    everything = cohort(world.seed, slot, generation)
    horizon = everything.closes_us - days * _DAY_US
    shown = everything.take(horizon >= everything.listed_us)
    at = shown.closes_us - days * _DAY_US
    ids = market_ids(shown)
    markets, rejected = decode_markets(market_lines(shown, shown.resolves_us, ids=ids), NAME)
    news, _ = decode_signals(signal_lines(shown, at, world.news_quality, ids=ids),
                             f"{NAME} signals")
    prices = yes_price(shown, at).tolist()
    kept = [
        ResolvedMarket(
            market=market, line=line, outcome=_SIDES[outcome],
            closes_at=market.closes_at, evaluated_at=market.closes_at - timedelta(days=days),
            horizon_price=price,
        )
        for line, (market, outcome, price) in enumerate(
            zip(markets, shown.outcome.tolist(), prices, strict=True), start=1)
        if market.closes_at is not None
    ]
    return ResolvedInput(
        markets=tuple(kept),
        signals=tuple(news),
        markets_source=NAME,
        signals_source=f"{NAME} signals",
        markets_rejected=tuple(rejected),
        records=len(everything),
        no_closes_at=0,
        unresolved=0,
        no_horizon_price=len(everything) - len(shown),
        signal_records=len(news),
        warnings=_warnings(len(everything) - len(shown), days),
    )


def _warnings(unlisted: int, days: int) -> tuple[str, ...]:
    if not unlisted:
        return ()
    return (
        f"{NAME}: {unlisted:,} of the markets resolved in the last {REPLAY_DAYS} days were listed "
        f"fewer than {plural(days, 'day')} before closing, so had no price then; they are not "
        "replayed",
    )

