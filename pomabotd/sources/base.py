"""The one interface every source implements, and the cycle input the sources make together.

A source yields, for one cycle, JSON-lines bytes in the wire format (`pomabotd.wire`) for
markets and/or signals, the records it refused (each naming the record and the field), and
counts of what went wrong. Whether it reads a file, generates, or fetches is its own business:
the engine forwards the bytes to its workers undecoded.
"""

from __future__ import annotations

import abc
from datetime import datetime
from typing import Any, ClassVar

import msgspec

from pomabotd.wire import Lines, Rejected

__all__ = ["CycleInput", "FetchContext", "Source", "SourceBatch", "SourceStats"]


class SourceStats(msgspec.Struct, frozen=True, kw_only=True):
    """What loading a cycle's input ran into, for the cycle's metrics and logs.

    `fetch_errors` counts requests that failed for good (after retries) per source name;
    `records_refused` the records refused: a source counts those its adapter could not map,
    and a finished cycle's metrics count every record of its input that was refused (by an
    adapter or by the decoder, markets and signals), as its list of refusals holds them. The
    `feeds_*` and `news_*` counts describe the news feeds (`feeds_unchanged`: not modified, or
    read too recently).
    """

    fetch_errors: dict[str, int] = {}
    records_refused: int = 0
    feeds_ok: int = 0
    feeds_failed: int = 0
    feeds_unchanged: int = 0
    news_items: int = 0
    news_duplicates: int = 0
    news_signals: int = 0

    def __add__(self, other: SourceStats) -> SourceStats:
        errors = dict(self.fetch_errors)
        for name, count in other.fetch_errors.items():
            errors[name] = errors.get(name, 0) + count
        totals: dict[str, Any] = {
            field: getattr(self, field) + getattr(other, field)
            for field in self.__struct_fields__
            if field != "fetch_errors"
        }
        return SourceStats(fetch_errors=errors, **totals)


class SourceBatch(msgspec.Struct, frozen=True, kw_only=True):
    """One source's share of a cycle: wire-format lines (in memory or in a file), refusals and
    counts."""

    markets: Lines = b""
    signals: Lines = b""
    rejected: tuple[Rejected, ...] = ()
    stats: SourceStats = msgspec.field(default_factory=SourceStats)


class FetchContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a source may need to know: the cycle's time, the markets the paper portfolio holds,
    and the market lines loaded so far.

    Market sources run first and see no markets; signal sources that match news to markets
    read `markets`. `held` are the ids of the markets of open positions: a market source must
    deliver them too, whatever else it filters out (a market that closed is how a position
    learns it resolved); a live source fetches those its listing lacks, while a file source
    holds what its user put in it.
    """

    as_of: datetime
    markets: Lines = b""
    held: frozenset[str] = frozenset()


class CycleInput(msgspec.Struct, frozen=True, kw_only=True):
    """One cycle's markets and signals as JSON lines (in memory, or in a file the engine reads
    by byte range), with names for error messages.

    `rejected` holds market records an adapter refused before they became lines (a live API
    object that cannot be mapped onto a market); they count in `markets_rejected`. `stats`
    holds the loading counts.
    """

    markets: Lines
    markets_source: str
    signals: Lines
    signals_source: str
    rejected: tuple[Rejected, ...] = ()
    stats: SourceStats = msgspec.field(default_factory=SourceStats)


class Source(abc.ABC):
    """One configured origin of a cycle's records, kept for the life of the process.

    `name` appears in log lines, refusals and error messages. A source that can give nothing
    usable raises `SourceError`; one that gives part of what it should logs, counts and returns
    the good part.
    """

    name: str
    #: The `sources.*` settings this source reads, besides the one that chose it: a flag
    #: that sets a setting no configured source reads would do nothing, and is refused.
    reads: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    async def fetch(self, context: FetchContext) -> SourceBatch:
        """This cycle's records."""

    async def aclose(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release connections; the default has nothing to release."""
