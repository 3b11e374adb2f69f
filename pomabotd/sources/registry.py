"""Which source a configuration names, and the loader that runs them for every cycle.

`open_sources(config)` builds the market source and the signal sources once; the `Sources` it
returns keeps them (connection pools, feed cache, ETags, the news memory) for the life of the
process and loads one `CycleInput` per `await sources.load(as_of)`. Adding a market source is
one module with a `from_config(argument, config)` class method plus one line in
`MARKET_SOURCES`.
"""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Final

from pomabotd.config import Config, SourcesConfig
from pomabotd.errors import ConfigError, InputError, SourceError
from pomabotd.progress import loading
from pomabotd.sources.base import CycleInput, FetchContext, Source, SourceBatch, SourceStats
from pomabotd.sources.feeds import FeedsSource
from pomabotd.sources.gamma import SCHEME as GAMMA_SCHEME
from pomabotd.sources.gamma import GammaFile
from pomabotd.sources.jsonl import JsonlMarkets, JsonlSignals
from pomabotd.sources.polymarket import PolymarketSource
from pomabotd.sources.synthetic import NAME as SYNTHETIC
from pomabotd.sources.synthetic import SyntheticSource
from pomabotd.wire import Lines, read_lines

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


#: What `sources.markets` may be, as a refusal lists it.
_CHOICES: Final = "a JSON-lines file path, 'synthetic', 'polymarket' or 'gamma:PATH'"
#: `name:` or `name://` at the start of a value: a scheme, not a relative file path.
_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def market_source(config: Config) -> Source:
    """The market source `sources.markets` names; ConfigError names the key and its origin.

    A value matching no source name or scheme is a JSON-lines file path, unless it looks like
    a scheme (`http://...`, `synthetic:50`) or a near miss of a source name (`polymarkets`,
    `Synthetic`, `gamma`) and no such file exists: that is a mistake, refused with the valid
    choices and a suggestion.
    """
    spec = config.sources.markets.strip()
    factory = MARKET_SOURCES.get(spec)
    if factory is not None and not spec.endswith(":"):
        return factory("", config.sources)
    for key, scheme_factory in MARKET_SOURCES.items():
        if key.endswith(":") and spec.startswith(key):
            argument = spec[len(key) :].strip()
            if not argument:
                raise ConfigError(
                    f"sources.markets {spec!r} needs a path after {key!r} "
                    f"(from {config.source_phrase('sources.markets')})"
                )
            return scheme_factory(argument, config.sources)
    problem = _not_a_path(spec)
    if problem is not None:
        raise ConfigError(
            f"sources.markets {spec!r} (from {config.source_phrase('sources.markets')}) "
            f"{problem}; it must be {_CHOICES}{_suggestion(spec)}"
        )
    return _FILE(spec, config.sources)


def _not_a_path(spec: str) -> str | None:
    """Why `spec` is surely not meant as a file path, or None."""
    if Path(spec).exists():
        return None
    scheme = _SCHEME.match(spec)
    if scheme is not None:
        if spec[scheme.end() :].startswith("//"):
            return ("is a URL, not a market source (for the Gamma API use 'polymarket' with "
                    "--polymarket-url or sources.polymarket_url)")
        return f"names no known source ({scheme.group(1)!r}: is not a scheme pomabotd knows)"
    if _suggestion(spec):
        return "is no file and no source name"
    return None


def _suggestion(spec: str) -> str:
    names = {key.rstrip(":"): key if not key.endswith(":") else f"{key}PATH"
             for key in MARKET_SOURCES}
    word = spec.lower().split(":", 1)[0].strip()
    match = names.get(word) or next(
        (names[m] for m in difflib.get_close_matches(word, list(names), n=1, cutoff=0.75)), None
    )
    return f" (did you mean {match!r}?)" if match else ""


class Sources:
    """The configured sources, kept across cycles; `load` gives one cycle's input."""

    def __init__(
        self,
        markets: Source,
        signals: Sequence[Source],
        origins: Mapping[Source, str] | None = None,
    ) -> None:
        self.markets = markets
        self.signals = tuple(signals)
        #: The setting that named each source (`sources.markets, from flag --markets`), added
        #: to the message of an input that cannot be read.
        self._origins = dict(origins or {})

    async def load(self, as_of: datetime, *, held: frozenset[str] = frozenset()) -> CycleInput:
        """Markets first, then every signal source (they may match news to those markets).

        `held` are the ids of the markets the portfolio holds, which the market source must
        deliver too (`FetchContext.held`). A source that yields nothing usable raises
        `SourceError`; `InputError` means a configured file cannot be read at all.
        """
        market_batch = await self._fetch(self.markets, FetchContext(as_of=as_of, held=held))
        context = FetchContext(as_of=as_of, markets=market_batch.markets)
        try:
            signal_batches = await asyncio.gather(
                *(self._fetch(s, context) for s in self.signals)
            )
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

    async def _fetch(self, source: Source, context: FetchContext) -> SourceBatch:
        """One source's batch; the cycle's progress says it is loading meanwhile, and an
        input that cannot be read names the setting that chose it."""
        origin = self._origins.get(source)
        with loading(f"{source.name} ({origin})" if origin else source.name):
            try:
                return await source.fetch(context)
            except InputError as exc:
                if origin is None:
                    raise
                raise InputError(f"{exc} ({origin})") from None

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
    """Build the configured sources once; nothing is read or fetched until `load`.

    ConfigError (naming the key and where it came from) when `sources.markets` names no
    source or a signal source refuses its setting (a feed that is no http(s) URL or path).
    """
    markets = market_source(config)
    origins = {markets: _origin(config, "sources.markets")}
    signals = []
    for key, (wanted, factory) in SIGNAL_SOURCES.items():
        if wanted(config.sources):
            try:
                source = factory(config.sources)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (from {config.source_phrase(key)})") from None
            origins[source] = _origin(config, key)
            signals.append(source)
    return Sources(markets, signals, origins)


def _origin(config: Config, key: str) -> str:
    return f"{key}, from {config.source_phrase(key)}"


def _join(parts: Iterable[Lines]) -> Lines:
    """One source's lines as they are (a file stays unread); several joined in memory."""
    present = [part for part in parts if part]
    if len(present) == 1:
        return present[0]
    joined = bytearray()
    for lines in present:
        part = read_lines(lines)
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
