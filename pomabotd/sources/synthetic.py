"""`sources.markets = "synthetic"`: the living world (`pomabotd.sources.world`), the embedded
default source.

Each cycle asks the world as it stands at the cycle's `as_of`: every slot's current market
(open, or closed and waiting for its result) with the news of the last days, and the markets
the portfolio holds that the listing no longer shows (a market that resolved is delivered with
its outcome, so its position settles `resolved`). Nothing is carried from one cycle to the
next: the same seed and time give the same bytes, so two runs of the same cycles write the same
positions, and `--as-of` shows any moment again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final

import numpy as np

from pomabotd.config import SourcesConfig
from pomabotd.sources.base import FetchContext, Source, SourceBatch
from pomabotd.sources.encode import micros
from pomabotd.sources.offload import checkpoint, off_loop
from pomabotd.sources.world import (
    Cohort,
    World,
    cohort,
    current,
    listing,
    market_ids,
    market_lines,
    parse_id,
    signal_lines,
)

__all__ = ["BLOCK", "NAME", "SyntheticSource", "world_jsonl", "world_of"]

NAME: Final = "synthetic"
#: Slots made at once; the work stops between two blocks once its cycle is cancelled.
BLOCK: Final = 1 << 15


def world_of(config: SourcesConfig) -> World:
    """The world the configuration names: `sources.seed`, `sources.synthetic_markets` slots, its
    news as informative as `sources.synthetic_news_quality`."""
    return World(seed=config.seed, markets=config.synthetic_markets,
                 news_quality=config.synthetic_news_quality)


def world_jsonl(
    world: World, as_of: datetime, held: Iterable[str] = ()
) -> tuple[bytes, bytes]:
    """The world at `as_of` as wire lines, markets and signals: the listing slot by slot, then
    the `held` markets of this world it does not show (resolved ones, or those of slots beyond
    `world.markets`), in id order. Held ids of another world, or of markets not listed yet at
    `as_of`, are left out: the cycle counts them missing."""
    at = micros(as_of)
    market_parts: list[bytes] = []
    signal_parts: list[bytes] = []
    for first in range(0, world.markets, BLOCK):
        checkpoint()
        slot = np.arange(first, min(first + BLOCK, world.markets), dtype=np.int64)
        _encode(listing(world.seed, slot, at), at, world.news_quality, market_parts, signal_parts)
    extra = _unlisted(world, at, held)
    if extra is not None:
        _encode(extra, at, world.news_quality, market_parts, signal_parts)
    markets = b"".join(market_parts)
    market_parts.clear()  # before the signals are joined: a million markets' lines are 260 MB
    return markets, b"".join(signal_parts)


def _encode(
    markets: Cohort, at: int, news_quality: float, market_parts: list[bytes],
    signal_parts: list[bytes],
) -> None:
    ids = market_ids(markets)
    market_parts.append(market_lines(markets, at, ids=ids))
    signal_parts.append(signal_lines(markets, at, news_quality, ids=ids))


def _unlisted(world: World, at: int, held: Iterable[str]) -> Cohort | None:
    """The cohort of the held markets of this world that the listing at `at` lacks."""
    wanted = sorted(
        (slot, generation) for seed, slot, generation in filter(None, map(parse_id, held))
        if seed == world.seed
    )
    if not wanted:
        return None
    slot = np.array([s for s, _ in wanted], np.int64)
    generation = np.array([g for _, g in wanted], np.int64)
    now = current(world.seed, slot, at)
    keep = (generation <= now) & ((slot >= world.markets) | (generation != now))
    if not keep.any():
        return None
    return cohort(world.seed, slot[keep], generation[keep])


class SyntheticSource(Source):
    """The living world, with its own news unless a signals file is configured (then the
    file's signals are the cycle's)."""

    reads = frozenset({"sources.synthetic_markets", "sources.synthetic_news_quality",
                       "sources.seed"})

    def __init__(self, world: World, *, with_signals: bool = True) -> None:
        self.name = NAME
        self.world = world
        self._with_signals = with_signals

    @classmethod
    def from_config(cls, argument: str, config: SourcesConfig) -> SyntheticSource:
        """`sources.synthetic_markets` slots of the world of `sources.seed`, its news as
        informative as `sources.synthetic_news_quality`."""
        return cls(world_of(config), with_signals=not config.signals)

    async def fetch(self, context: FetchContext) -> SourceBatch:
        """The world at `as_of`, with the held markets it no longer lists, generated off the
        event loop (a daemon keeps answering its status endpoint meanwhile) and stopped within
        a block when the cycle is cancelled."""
        markets, signals = await off_loop(world_jsonl, self.world, context.as_of, context.held)
        return SourceBatch(markets=markets, signals=signals if self._with_signals else b"")
