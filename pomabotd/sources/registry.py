"""Which source a configuration names, and the loader that runs them for every cycle.

`open_sources(config)` builds the market source and the signal sources once; the `Sources` it
returns keeps them (connection pools, feed cache, ETags, the news memory) for the life of the
process and loads one `CycleInput` per `await sources.load(as_of)`. Adding a market source is
one module with a `from_config(argument, config)` class method plus one line in
`MARKET_SOURCES`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Final

from pomabotd.config import Config, SourcesConfig
from pomabotd.errors import ConfigError, SourceError
from pomabotd.sources.base import CycleInput, FetchContext, Source, SourceBatch, SourceStats
from pomabotd.sources.feeds import FeedsSource
from pomabotd.sources.gamma import SCHEME as GAMMA_SCHEME
from pomabotd.sources.gamma import GammaFile
from pomabotd.sources.jsonl import JsonlMarkets, JsonlSignals
from pomabotd.sources.polymarket import PolymarketSource
from pomabotd.sources.synthetic import NAME as SYNTHETIC
from pomabotd.sources.synthetic import SyntheticSource

__all__ = [
    "MARKET_SOURCES",
    "SIGNAL_SOURCES",
    "Sources",
    "market_source",
    "open_sources",
]

MarketFactory = Callable[[str, SourcesConfig], Source]
SignalFactory = Callable[[SourcesConfig], Source]

#: `sources.markets` -> its source. A key ending in `:` is a scheme whose argument follows it
#: (`gamma:PATH`); a value matching no key is a JSON-lines file path.
MARKET_SOURCES: Final[dict[str, MarketFactory]] = {
    SYNTHETIC: SyntheticSource.from_config,
    "polymarket": PolymarketSource.from_config,
    GAMMA_SCHEME: GammaFile.from_config,
}
_FILE: Final[MarketFactory] = JsonlMarkets.from_config

#: Signal sources, in the order their lines are joined, each used when its key is set.
SIGNAL_SOURCES: Final[dict[str, tuple[Callable[[SourcesConfig], bool], SignalFactory]]] = {
    "sources.signals": (lambda c: bool(c.signals), JsonlSignals.from_config),
    "sources.feeds": (lambda c: bool(c.feeds), FeedsSource.from_config),
}


def market_source(config: Config) -> Source:
    """The market source `sources.markets` names; ConfigError names the key and its origin."""
    spec = config.sources.markets.strip()
    factory = MARKET_SOURCES.get(spec)
    if factory is not None and not spec.endswith(":"):
        return factory("", config.sources)
    for key, scheme_factory in MARKET_SOURCES.items():
        if key.endswith(":") and spec.startswith(key):
            argument = spec[len(key) :].strip()
            if not argument:
                origin = config.provenance["sources.markets"].replace(":", " ", 1)
                raise ConfigError(
                    f"sources.markets {spec!r} needs a path after {key!r} (from {origin})"
                )
            return scheme_factory(argument, config.sources)
    return _FILE(spec, config.sources)


class Sources:
    """The configured sources, kept across cycles; `load` gives one cycle's input."""

    def __init__(self, markets: Source, signals: Sequence[Source]) -> None:
        self.markets = markets
        self.signals = tuple(signals)

    async def load(self, as_of: datetime) -> CycleInput:
        """Markets first, then every signal source (they may match news to those markets).

        A source that yields nothing usable raises `SourceError`; `InputError` means a
        configured file cannot be read at all.
        """
        market_batch = await self.markets.fetch(FetchContext(as_of=as_of))
        context = FetchContext(as_of=as_of, markets=market_batch.markets)
        try:
            signal_batches = await asyncio.gather(*(s.fetch(context) for s in self.signals))
        except SourceError as exc:  # the markets' counts count too
            exc.stats = market_batch.stats + (exc.stats or SourceStats())
            raise
        parts = [(market_batch, self.markets)] if market_batch.signals else []
        parts += zip(signal_batches, self.signals, strict=True)
        stats = SourceStats()
        for batch in (market_batch, *signal_batches):
            stats = stats + batch.stats
        return CycleInput(
            markets=market_batch.markets,
            markets_source=self.markets.name,
            signals=_join(batch.signals for batch, _ in parts),
            signals_source=_signals_name(parts),
            rejected=market_batch.rejected,
            stats=stats,
        )

    async def aclose(self) -> None:
        """Close every source's connections."""
        for source in (self.markets, *self.signals):
            await source.aclose()

    async def __aenter__(self) -> Sources:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def open_sources(config: Config) -> Sources:
    """Build the configured sources once; nothing is read or fetched until `load`."""
    signals = [
        factory(config.sources)
        for wanted, factory in SIGNAL_SOURCES.values()
        if wanted(config.sources)
    ]
    return Sources(market_source(config), signals)


def _join(parts: Iterable[bytes]) -> bytes:
    joined = bytearray()
    for part in parts:
        if not part:
            continue
        joined += part
        if not part.endswith(b"\n"):
            joined += b"\n"
    return bytes(joined)


def _signals_name(parts: Sequence[tuple[SourceBatch, Source]]) -> str:
    """The first signal source's name: its lines come first, so their numbers stay right."""
    named = [source.name for batch, source in parts if batch.signals]
    if not named:
        return "no signals"
    first = named[0]
    return f"{first} signals" if first == SYNTHETIC else first
