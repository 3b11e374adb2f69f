"""The columnar reader: a chunk's JSON lines straight to the kernel's columns.

Markets and signals are decoded by msgspec into views of `Market` and `Signal` that carry the
very same field annotations (so every type, range, required field and unknown field is judged
exactly as the scalar readers judge it), except that timestamps are kept as raw JSON
(`msgspec.Raw`): turning a million strings into datetime objects, and those into numbers, was
most of the cost of building columns. The raw timestamps are read here, all at once, in
numpy; the two forms msgspec itself writes (`"2026-06-01T12:00:00Z"` and
`"2026-06-01T12:00:00.123456Z"`) are parsed and validated in bulk, and any other form, one by
one, by msgspec's own datetime decoder. A line or timestamp that either refuses makes the whole
chunk `None`: the caller then reads it with the scalar readers, which name each refusal's line
and field.

Measured against `pyarrow.json` and `polars.read_ndjson` (see `benchmarks/kernels.py`), this
is faster for the chunk sizes the engine uses (100 to a few thousand lines), where those
readers' fixed cost per call dominates, and it validates as the scalar path does by
construction rather than by a second set of rules.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, overload

import msgspec
import numpy as np
import numpy.typing as npt

from pomabotd.domain.models import Market, Signal

__all__ = [
    "MarketLine",
    "MarketRecords",
    "SignalLine",
    "instants",
    "market_lines",
    "signal_lines",
]

I8 = npt.NDArray[np.int64]


_NULL: Final = msgspec.Raw(b"null")


def _view(name: str, struct: type[msgspec.Struct], raw: frozenset[str]) -> Any:
    """`struct`'s fields with the same annotations, those named in `raw` kept as raw JSON."""
    fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
    for field in msgspec.structs.fields(struct):
        kind: Any = field.type
        default = field.default
        if field.name in raw:
            # An optional time is JSON `null` when absent: msgspec has no `Raw | None`.
            kind, default = msgspec.Raw, _NULL
        fields.append((field.name, kind) if field.required else (field.name, kind, default))
    return msgspec.defstruct(name, fields, kw_only=True, frozen=True, gc=False)


#: A market line as the reader sees it: `Market`, with `closes_at` as raw JSON and `category`
#: as written (the kernel normalises it as `Market` does).
MarketLine: Final = _view("MarketLine", Market, frozenset({"closes_at"}))
#: A signal line as the reader sees it: `Signal`, with `timestamp` as raw JSON.
SignalLine: Final = _view("SignalLine", Signal, frozenset({"timestamp"}))

_MARKET_LINES: Final = msgspec.json.Decoder(list[MarketLine])  # type: ignore[valid-type]
_SIGNAL_LINES: Final = msgspec.json.Decoder(list[SignalLine])  # type: ignore[valid-type]
_MARKET: Final = msgspec.json.Decoder(Market)
_AWARE: Final = msgspec.json.Decoder(Annotated[datetime, msgspec.Meta(tz=True)])
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_NEVER: Final = np.iinfo(np.int64).max

#: `"YYYY-MM-DDTHH:MM:SSZ"` with its quotes, and the same with `.ffffff` before the `Z`.
_SHORT, _LONG = 22, 29
_DIGITS: Final = np.array([1, 2, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19])
_FRACTION: Final = np.arange(21, 27)
_SEPARATORS: Final = {0: b'"', 5: b"-", 8: b"-", 11: b"T", 14: b":", 17: b":"}
_DAYS_IN_MONTH: Final = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


class MarketRecords(Sequence[Market]):
    """The Markets of market lines, each decoded by the scalar reader when first asked for:
    only candidates and held markets ever are."""

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines
        self._decoded: dict[int, Market] = {}

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, row: int) -> Market: ...

    @overload
    def __getitem__(self, row: slice) -> Sequence[Market]: ...

    def __getitem__(self, row: int | slice) -> Market | Sequence[Market]:
        if isinstance(row, slice):
            return [self[at] for at in range(*row.indices(len(self)))]
        market = self._decoded.get(row)
        if market is None:
            market = self._decoded[row] = _MARKET.decode(self._lines[row])
        return market

    def __iter__(self) -> Iterator[Market]:
        return (self[row] for row in range(len(self)))


def market_lines(data: bytes) -> list[Any] | None:
    """A chunk's market lines as `MarketLine` views; None when any line is refused, is not one
    record, or repeats an id."""
    views = _bulk(data, _MARKET_LINES)
    if views is None or len({view.id for view in views}) != len(views):
        return None
    return views


def signal_lines(data: bytes) -> list[Any] | None:
    """A chunk's signal lines as `SignalLine` views; None when any line is refused or is not
    one record."""
    return _bulk(data, _SIGNAL_LINES) if data else []


def instants(raws: Sequence[msgspec.Raw], *, optional: bool = False) -> I8 | None:
    """Microseconds since the epoch of each raw JSON timestamp, exactly as msgspec reads an
    aware datetime; None when msgspec would refuse any of them. With `optional`, JSON `null`
    (no time) is the int64 maximum, later than any time."""
    count = len(raws)
    result = np.full(count, _NEVER, np.int64)
    if not count:
        return result
    lengths = np.fromiter(map(len, raws), np.int64, count)
    blob = np.frombuffer(b"".join(raws), np.uint8)
    starts = np.cumsum(lengths) - lengths
    grid = blob[np.minimum(starts[:, None] + np.arange(_LONG), len(blob) - 1)].astype(np.int64)
    short = lengths == _SHORT
    long = lengths == _LONG
    shaped = (short | long) & _shaped(grid, short, long)
    if shaped.any():
        micros = _parse(grid[shaped], long[shaped])
        if micros is None:
            return None
        result[shaped] = micros
    # JSON was validated by the decoder: a four-byte value starting with `n` is `null`.
    unset = (lengths == 4) & (grid[:, 0] == ord("n")) if optional else np.zeros(count, bool)
    for at in np.flatnonzero(~shaped & ~unset).tolist():
        try:
            value = _AWARE.decode(raws[at])
        except msgspec.DecodeError:
            return None
        result[at] = (value - _EPOCH) // _MICROSECOND
    return result


def _shaped(grid: I8, short: Any, long: Any) -> Any:
    """Rows laid out as one of the two forms: separators in place, digits where digits go."""
    ok = np.all((grid[:, _DIGITS] >= 48) & (grid[:, _DIGITS] <= 57), axis=1)
    for column, char in _SEPARATORS.items():
        ok &= grid[:, column] == ord(char)
    fraction = np.all((grid[:, _FRACTION] >= 48) & (grid[:, _FRACTION] <= 57), axis=1)
    ok &= (short & (grid[:, 20] == ord("Z")) & (grid[:, 21] == ord('"'))) | (
        long & (grid[:, 20] == ord(".")) & fraction & (grid[:, 27] == ord("Z"))
        & (grid[:, 28] == ord('"'))
    )
    return ok


def _parse(grid: I8, long: Any) -> I8 | None:
    """Microseconds of well-laid-out timestamps; None if any names no real instant."""
    digit = grid - 48
    year = digit[:, 1] * 1000 + digit[:, 2] * 100 + digit[:, 3] * 10 + digit[:, 4]
    month = digit[:, 6] * 10 + digit[:, 7]
    day = digit[:, 9] * 10 + digit[:, 10]
    hour = digit[:, 12] * 10 + digit[:, 13]
    minute = digit[:, 15] * 10 + digit[:, 16]
    second = digit[:, 18] * 10 + digit[:, 19]
    fraction = np.where(long, digit[:, 21:27] @ (10 ** np.arange(5, -1, -1)), 0)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    valid_month = (month >= 1) & (month <= 12)
    longest = _DAYS_IN_MONTH[np.where(valid_month, month, 0)] + (leap & (month == 2))
    valid = (
        (year >= 1) & valid_month & (day >= 1) & (day <= longest) & (hour <= 23)
        & (minute <= 59) & (second <= 59)
    )
    if not valid.all():
        return None
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    shifted = year - (month <= 2)
    era = shifted // 400
    year_of_era = shifted - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    return seconds * 1_000_000 + fraction  # type: ignore[no-any-return]


def _bulk(data: bytes, decoder: msgspec.json.Decoder[Any]) -> list[Any] | None:
    """All lines decoded in one call, or None if one is refused or is not one record."""
    try:
        records: list[Any] = decoder.decode(b"[" + data.replace(b"\n", b",") + b"]")
    except msgspec.DecodeError:
        return None
    if len(records) != data.count(b"\n") + 1:
        return None
    return records
