"""Seeded synthetic markets and signals: the embedded default source and the stress workload.

The mix is built to exercise the whole gate rather than to look random: every category, prices
from 1 to 99, illiquid, closed and resolved markets, unclear authority, 0-6 signals of every type
(some conflicting, some speculative ones arriving first), and prices placed relative to the belief
the signals will produce, so that a realistic minority of markets (about one in ten) passes every
check and selection has real work to do. The same seed and `as_of` always give the same data.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

import msgspec

from pomabotd.config import SourcesConfig
from pomabotd.domain.belief import update_belief
from pomabotd.domain.models import CATEGORIES, SIGNAL_TYPES, Direction, Market, Signal
from pomabotd.sources.base import FetchContext, Source, SourceBatch
from pomabotd.sources.offload import SLICE, checkpoint, off_loop

__all__ = ["DEFAULT_SEED", "NAME", "SyntheticData", "SyntheticSource", "generate", "generate_jsonl"]

DEFAULT_SEED = 7
NAME = "synthetic"

_TOPICS = {
    "politics": ("Will the incumbent win the {n} district race?", "Will the {n} bill pass?"),
    "crypto": ("Will BTC close above ${n}k this month?", "Will token #{n} list on an exchange?"),
    "sports": ("Will team {n} win the final?", "Will player #{n} score in the next match?"),
    "economics": ("Will CPI print above {n}.0% YoY?", "Will the central bank cut {n} bp?"),
    "entertainment": ("Will film #{n} top the box office?", "Will album #{n} debut at number one?"),
    "weather": ("Will city #{n} see over 30°C on Friday?", "Will storm #{n} make landfall?"),
    "technology": ("Will device #{n} ship before Q4?", "Will model #{n} top the leaderboard?"),
    "world": ("Will summit #{n} end with a signed accord?", "Will ceasefire #{n} hold a month?"),
    "other": ("Will event #{n} happen by year end?", "Will record #{n} be broken?"),
}
#: Relative frequency of each signal type; speculative news is common, authoritative news rare.
_TYPE_WEIGHTS = (0.38, 0.22, 0.14, 0.13, 0.13)
_DIRECTIONS: tuple[Direction, ...] = ("up", "down", "neutral")


class SyntheticData(msgspec.Struct, frozen=True):
    """A generated workload: markets in id order and their signals grouped by market."""

    markets: list[Market]
    signals: list[Signal]


def _market_signals(rng: random.Random, market_id: str, as_of: datetime) -> list[Signal]:
    count = rng.choice((0, 1, 2, 3, 3, 3, 4, 4, 5, 5, 6))
    trend = rng.choice(_DIRECTIONS)
    signals = []
    for _ in range(count):
        direction = trend if rng.random() < 0.8 else rng.choice(_DIRECTIONS)
        signals.append(
            Signal(
                market_id=market_id,
                type=rng.choices(SIGNAL_TYPES, _TYPE_WEIGHTS)[0],
                direction=direction,
                strength=rng.randint(1, 5),
                conflicts_with_existing=rng.random() < 0.12,
                timestamp=as_of - timedelta(minutes=rng.randint(5, 3 * 24 * 60)),
                source="synthetic",
            )
        )
    return signals


def _price(rng: random.Random, low: float, high: float) -> float:
    """Place the price inside the belief range most of the time, well outside it sometimes."""
    roll = rng.random()
    if roll < 0.45:
        price = rng.uniform(low, high)
    elif roll < 0.72:
        price = low - rng.uniform(0.0, 45.0)
    else:
        price = high + rng.uniform(0.0, 45.0)
    return round(min(99.0, max(1.0, price)), 1)


def _market(rng: random.Random, index: int, signals: list[Signal], as_of: datetime) -> Market:
    market_id = f"syn-{index:07d}"
    category = CATEGORIES[index % len(CATEGORIES)]
    template = rng.choice(_TOPICS[category])
    unknowns = rng.choices((0, 1, 2, 3), (0.7, 0.18, 0.08, 0.04))[0]
    draft = Market(id=market_id, question="", price=50.0, liquidity=0.0, unknowns=unknowns)
    belief = update_belief(draft, signals, as_of).belief
    closing_soon = rng.random() < 0.04
    closes_in = (
        timedelta(hours=rng.randint(-72, 24 * 120))
        if closing_soon
        else timedelta(days=rng.randint(1, 180))
    )
    illiquid = rng.random() < 0.15
    liquidity = rng.uniform(50.0, 999.0) if illiquid else rng.lognormvariate(9.5, 1.2) + 1000.0
    return Market(
        id=market_id,
        question=template.format(n=index % 1000),
        category=category,
        price=_price(rng, belief.low, belief.high),
        liquidity=round(liquidity, 2),
        volume_24h=round(rng.lognormvariate(7.0, 1.5), 2),
        closes_at=as_of + closes_in,
        resolution_criteria="Resolves per the official published result.",
        authority_is_clear=rng.random() < 0.95,
        outcome_is_objective=rng.random() < 0.95,
        unknowns=unknowns,
        outcome=rng.choice(("YES", "NO")) if rng.random() < 0.02 else None,
    )


def _workload(count: int, seed: int, as_of: datetime) -> Iterator[tuple[Market, list[Signal]]]:
    rng = random.Random(seed)
    for index in range(1, count + 1):
        if index % SLICE == 0:
            checkpoint()  # a cancelled cycle stops generating here
        market_signals = _market_signals(rng, f"syn-{index:07d}", as_of)
        yield _market(rng, index, market_signals, as_of), market_signals


def generate(count: int, seed: int, as_of: datetime) -> SyntheticData:
    """Generate `count` markets with their signals, reproducibly from `seed` and `as_of`."""
    markets: list[Market] = []
    signals: list[Signal] = []
    for market, market_signals in _workload(count, seed, as_of):
        markets.append(market)
        signals.extend(market_signals)
    return SyntheticData(markets=markets, signals=signals)


def generate_jsonl(count: int, seed: int, as_of: datetime) -> tuple[bytes, bytes]:
    """The same workload encoded as a real source delivers it: markets and signals JSON lines.

    Records are encoded as they are made, so a million markets never exist as objects at once.
    """
    encoder = msgspec.json.Encoder()
    market_lines = bytearray()
    signal_lines = bytearray()
    for market, market_signals in _workload(count, seed, as_of):
        encoder.encode_into(market, market_lines, -1)
        market_lines.extend(b"\n")
        for signal in market_signals:
            encoder.encode_into(signal, signal_lines, -1)
            signal_lines.extend(b"\n")
    return bytes(market_lines), bytes(signal_lines)


class SyntheticSource(Source):
    """`sources.markets = "synthetic"`: the seeded workload, with its own signals unless a
    signals file is configured (then the file's signals are the cycle's)."""

    def __init__(self, count: int, seed: int, *, with_signals: bool = True) -> None:
        self.name = NAME
        self._count = count
        self._seed = seed
        self._with_signals = with_signals

    @classmethod
    def from_config(cls, argument: str, config: SourcesConfig) -> SyntheticSource:
        """`sources.synthetic_markets` markets from `sources.seed`."""
        return cls(config.synthetic_markets, config.seed, with_signals=not config.signals)

    async def fetch(self, context: FetchContext) -> SourceBatch:
        """The same markets for the same seed and `as_of`, as wire lines, generated off the
        event loop (a daemon keeps answering its status endpoint meanwhile) and stopped
        within a slice of markets when the cycle is cancelled."""
        markets, signals = await off_loop(
            generate_jsonl, self._count, self._seed, context.as_of
        )
        return SourceBatch(markets=markets, signals=signals if self._with_signals else b"")
