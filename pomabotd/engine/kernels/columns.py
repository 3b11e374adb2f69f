"""A chunk's markets and signals as numpy columns, the columnar kernel's input.

The workers decode a chunk's lines with the scalar readers' own decoders (msgspec typed by the
`Market` and `Signal` annotations), so a chunk the kernel evaluates passed exactly the
validation the scalar path applies; this module turns those records into columns. Each field
is one pass at C speed (`map` and `np.fromiter`), and times are read back in bulk from msgspec's
msgpack encoding of the datetimes, a tenth of the cost of calling `timestamp()` on each.
"""

from __future__ import annotations

import operator
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import accumulate, repeat
from operator import attrgetter
from typing import Any, Final, Protocol, overload, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from pomabotd.domain.models import CATEGORY_MIN_EDGE, SIGNAL_TYPES, Market, Signal

__all__ = [
    "DIRECTIONS",
    "Briefs",
    "MarketColumns",
    "SignalColumns",
    "join_columns",
    "market_columns",
    "market_rows",
    "micros",
    "signal_columns",
]

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]

#: Signal directions by code, as `SignalColumns.direction` holds them; `kind` holds the index
#: of the type in `SIGNAL_TYPES`.
DIRECTIONS: Final = ("up", "down", "neutral")
_NEVER: Final = np.iinfo(np.int64).max
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_STAMPS: Final = msgspec.msgpack.Encoder()
#: msgpack's timestamp layouts by size in bytes, with the marker bytes each starts with.
_LAYOUTS: Final = {
    6: np.array([0xD6, 0xFF], np.uint8),
    10: np.array([0xD7, 0xFF], np.uint8),
    15: np.array([0xC7, 0x0C, 0xFF], np.uint8),
}
_KIND: Final = {kind: code for code, kind in enumerate(SIGNAL_TYPES)}
_DIRECTION: Final = {direction: code for code, direction in enumerate(DIRECTIONS)}
_OTHER_MIN_EDGE: Final = CATEGORY_MIN_EDGE["other"]


class MarketColumns(msgspec.Struct, frozen=True, kw_only=True):
    """A chunk's markets as columns, one element per market; `records` are the Markets
    themselves, for the few evaluations built in full. `closes_at` is in microseconds since
    the epoch, the int64 maximum for a market without a close."""

    records: Sequence[Market]
    price: Any
    liquidity: Any
    unknowns: Any
    closes_at: Any
    resolved: Any
    authority_is_clear: Any
    outcome_is_objective: Any
    min_edge: Any


@runtime_checkable
class Briefs(Protocol):
    """Records that can also give a market's brief: a `Market` holding only what the
    kernel's columns hold (id, category, price, liquidity, authority and objectivity), built
    without decoding its line. The sentence of every check after `market_open` reads no more
    than that, so an evaluation that fails one of them needs no full record."""

    def brief(self, row: int) -> Market: ...


class SignalColumns(msgspec.Struct, frozen=True, kw_only=True):
    """A chunk's signals as columns; `market` is the row of the signal's market in its
    `MarketColumns`, -1 for a market not in the chunk (such a signal is ignored)."""

    market: Any
    timestamp: Any
    kind: Any
    direction: Any
    strength: Any
    conflicts: Any


def micros(values: Sequence[datetime | None], *, optional: bool = True) -> I8:
    """Exact microseconds since the epoch of aware datetimes; None (allowed when `optional`)
    is the int64 maximum.

    msgspec's msgpack encoder writes every datetime as a timestamp extension (whole seconds
    and nanoseconds since the epoch, in one of three fixed layouts) at C speed; numpy reads
    them back in bulk, which costs a tenth of calling `timestamp()` on each.
    """
    result = np.full(len(values), _NEVER, np.int64)
    rows: list[int] | None = None
    present = values
    if optional and None in values:
        rows = [row for row, value in enumerate(values) if value is not None]
        present = [values[row] for row in rows]
    if not present:
        return result
    stamps: I8 | None
    try:
        encoded = _STAMPS.encode(present)
    except OverflowError:  # a time whose UTC is before year 1 or after 9999
        stamps = np.fromiter(map(_exact_micros, present), np.int64, len(present))
    else:
        stamps = _stamps(encoded, len(present))
    if stamps is None:  # layouts mixed (some whole seconds, some not): one at a time
        parts = list(map(_STAMPS.encode, present))
        stamps = np.empty(len(parts), np.int64)
        sizes = np.fromiter(map(len, parts), np.int64, len(parts))
        blob = np.frombuffer(b"".join(parts), np.uint8)
        starts = np.cumsum(sizes) - sizes
        for size in _LAYOUTS:
            picked = sizes == size
            if picked.any():
                stamps[picked] = _layout(blob[starts[picked, None] + np.arange(size)], size)
    if rows is None:
        return stamps
    result[rows] = stamps
    return result


def _exact_micros(value: datetime | None) -> int:
    """Microseconds since the epoch of one aware datetime, by exact arithmetic: the way for a
    time its offset carries out of years 1-9999 in UTC (`9999-12-31T23:59:59-01:00`), which
    the msgpack encoder refuses to convert."""
    assert value is not None
    return (value - _EPOCH) // _MICROSECOND


def _stamps(data: bytes, count: int) -> I8 | None:
    """The microseconds of a msgpack array of `count` timestamps all in one layout, or None.

    Checking every item's marker suffices: items are aligned up to the first one in another
    layout, whose marker then fails.
    """
    header = 1 if count < 16 else 3 if count < 65536 else 5
    body = np.frombuffer(data, np.uint8, offset=header)
    for size in _LAYOUTS:
        if len(body) == size * count:
            items = body.reshape(count, size)
            if (items[:, : len(_LAYOUTS[size])] == _LAYOUTS[size]).all():
                return _layout(items, size)
    return None


def _layout(items: npt.NDArray[np.uint8], size: int) -> I8:
    """Microseconds of msgpack timestamps of one layout, one per row of `items`."""
    if size == 6:  # timestamp 32: seconds, uint32
        seconds = np.ascontiguousarray(items[:, 2:6]).view(">u4")[:, 0].astype(np.int64)
        return seconds * 1_000_000
    if size == 10:  # timestamp 64: nanoseconds (30 bits) and seconds (34 bits), uint64
        packed = np.ascontiguousarray(items[:, 2:10]).view(">u8")[:, 0]
        seconds = (packed & np.uint64(2**34 - 1)).astype(np.int64)
        nanos = (packed >> np.uint64(34)).astype(np.int64)
        return seconds * 1_000_000 + nanos // 1000
    # timestamp 96: nanoseconds, uint32, then seconds, int64
    nanos = np.ascontiguousarray(items[:, 3:7]).view(">u4")[:, 0].astype(np.int64)
    seconds = np.ascontiguousarray(items[:, 7:15]).view(">i8")[:, 0].astype(np.int64)
    return seconds * 1_000_000 + nanos // 1000


def market_columns(markets: Sequence[Market]) -> MarketColumns:
    """The columns of `markets` (distinct markets: signals are matched to them by row)."""
    count = len(markets)

    def floats(field: str) -> F8:
        return np.fromiter(map(attrgetter(field), markets), np.float64, count)

    def flags(values: Any) -> B1:
        return np.fromiter(values, np.bool_, count)

    return MarketColumns(
        records=markets,
        price=floats("price"),
        liquidity=floats("liquidity"),
        unknowns=floats("unknowns"),  # as `7.0 * unknowns` converts it
        closes_at=micros(list(map(attrgetter("closes_at"), markets))),
        resolved=flags(map(operator.is_not, map(attrgetter("outcome"), markets), repeat(None))),
        authority_is_clear=flags(map(attrgetter("authority_is_clear"), markets)),
        outcome_is_objective=flags(map(attrgetter("outcome_is_objective"), markets)),
        min_edge=np.fromiter(
            map(CATEGORY_MIN_EDGE.get, map(attrgetter("category"), markets),
                repeat(_OTHER_MIN_EDGE)),
            np.float64,
            count,
        ),
    )


def market_rows(signals: Sequence[Signal], rows: Mapping[str, int]) -> list[int]:
    """The row of each signal's market, looked up in `rows` (market id to row); -1 when the
    market is not there."""
    return list(map(rows.get, map(attrgetter("market_id"), signals), repeat(-1)))


def signal_columns(signals: Sequence[Signal], rows: Sequence[int]) -> SignalColumns:
    """The columns of `signals`; `rows` holds the row of each one's market (`market_rows`)."""
    count = len(signals)

    def codes(field: str, table: dict[str, int]) -> npt.NDArray[np.int8]:
        return np.fromiter(map(table.__getitem__, map(attrgetter(field), signals)), np.int8,
                           count)

    return SignalColumns(
        market=np.fromiter(rows, np.int64, count),
        timestamp=micros(list(map(attrgetter("timestamp"), signals)), optional=False),
        kind=codes("type", _KIND),
        direction=codes("direction", _DIRECTION),
        strength=np.fromiter(map(attrgetter("strength"), signals), np.float64, count),
        conflicts=np.fromiter(map(attrgetter("conflicts_with_existing"), signals), np.bool_,
                              count),
    )


class _Joined(Sequence[Market]):
    """The records of several blocks, one after another."""

    __slots__ = ("_blocks", "_starts")

    def __init__(self, blocks: list[Sequence[Market]]) -> None:
        self._blocks = blocks
        self._starts = list(accumulate((len(block) for block in blocks), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    @overload
    def __getitem__(self, row: int) -> Market: ...

    @overload
    def __getitem__(self, row: slice) -> Sequence[Market]: ...

    def __getitem__(self, row: int | slice) -> Market | Sequence[Market]:
        if isinstance(row, slice):
            return [self[at] for at in range(*row.indices(len(self)))]
        if not 0 <= row < len(self):
            raise IndexError(row)
        block = bisect_right(self._starts, row) - 1
        return self._blocks[block][row - self._starts[block]]

    def brief(self, row: int) -> Market:
        """The brief of a block that has them, else its full record."""
        block = bisect_right(self._starts, row) - 1
        records = self._blocks[block]
        at = row - self._starts[block]
        return records.brief(at) if isinstance(records, Briefs) else records[at]


def join_columns(
    parts: Sequence[tuple[MarketColumns, SignalColumns]],
) -> tuple[MarketColumns, SignalColumns]:
    """Blocks of markets with their signals as one: each block's markets follow the
    previous ones, and its signals' `market` rows move with them (-1 stays -1)."""
    if len(parts) == 1:
        return parts[0]
    markets = [part[0] for part in parts]
    shifted = []
    first = 0
    for market_part, signal_part in parts:
        rows = signal_part.market
        shifted.append(np.where(rows >= 0, rows + first, -1) if first else rows)
        first += len(market_part.records)

    def joined(columns: list[Any], name: str) -> Any:
        return np.concatenate([getattr(column, name) for column in columns])

    signals = [part[1] for part in parts]
    return (
        MarketColumns(
            records=_Joined([part.records for part in markets]),
            **{name: joined(markets, name) for name in _MARKET_ARRAYS},
        ),
        SignalColumns(
            market=np.concatenate(shifted),
            **{name: joined(signals, name) for name in _SIGNAL_ARRAYS},
        ),
    )


_MARKET_ARRAYS: Final = tuple(name for name in MarketColumns.__struct_fields__
                              if name != "records")
_SIGNAL_ARRAYS: Final = tuple(name for name in SignalColumns.__struct_fields__
                              if name != "market")
