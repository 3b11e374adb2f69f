"""The JSON-lines record format of markets and signals (docs/files.md#inputs), for every layer.

Sources produce these lines and the engine's workers decode them; neither owns the format, so it
lives here. Each line is decoded on its own with one typed decoder, so a bad record is reported
with its line number and field and every good record still loads. The validation itself lives in
the annotations of `Market` and `Signal`; this module only turns msgspec's errors into `Rejected`
values a person can act on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, TypeVar

import msgspec

from pomabotd.domain.models import Market, Signal

__all__ = [
    "Lines",
    "LinesFile",
    "Rejected",
    "decode_markets",
    "decode_signals",
    "group_signals",
    "market_key",
    "read_lines",
    "signal_key",
]

_T = TypeVar("_T", Market, Signal)

_MARKET_DECODER: Final = msgspec.json.Decoder(Market)
_SIGNAL_DECODER: Final = msgspec.json.Decoder(Signal)
_BOM: Final = b"\xef\xbb\xbf"
_AT: Final = " - at `"
_MISSING: Final = "Object missing required field `"


class LinesFile(msgspec.Struct, frozen=True):
    """JSON lines left where they are, in a file: the engine's workers read it by byte range,
    so a big input never has to be held whole by one process."""

    path: str


Lines = bytes | LinesFile
"""A source's lines: in memory (fetched or generated), or a file to be read in pieces."""


def read_lines(lines: Lines) -> bytes:
    """The lines as bytes, reading the file if they are in one (for the few readers that need
    every line at once, such as matching news to markets)."""
    if isinstance(lines, bytes):
        return lines
    with open(lines.path, "rb") as file:
        return file.read()


class Rejected(msgspec.Struct, frozen=True, kw_only=True):
    """One input record that failed validation; the rest of the input still runs.

    `line` is 1-based: the line of a JSON-lines file, or the position of a record in a JSON array
    or API listing, whose own id is then `record`. `field` is the JSON path of the bad value
    (`price`, `$` for the record as a whole) or None when the line is not JSON at all.
    """

    source: str
    line: int
    field: str | None
    message: str
    record: str | None = None

    def __str__(self) -> str:
        if self.record is None:
            where = f"{self.source} line {self.line}"
        else:
            where = f"{self.source} record {self.line} (id {self.record})"
        if self.field is None:
            return f"{where}: {self.message}"
        return f"{where}: {self.field}: {self.message}"


def decode_markets(
    data: bytes, source: str, *, first_line: int = 1
) -> tuple[list[Market], list[Rejected]]:
    """Decode JSON-lines markets; a market id seen again is rejected (the first one wins).

    `first_line` numbers the lines of a chunk cut from a larger file.
    """
    markets, rejected = _decode(data, source, first_line, _MARKET_DECODER)
    if not markets:
        return markets, rejected
    seen: set[str] = set()
    add = seen.add
    for market in markets:
        add(market.id)
    if len(seen) == len(markets):
        return markets, rejected
    return _drop_duplicates(data, source, first_line, markets, rejected)


def decode_signals(
    data: bytes, source: str, *, first_line: int = 1
) -> tuple[list[Signal], list[Rejected]]:
    """Decode JSON-lines signals; several signals may name the same market."""
    return _decode(data, source, first_line, _SIGNAL_DECODER)


class _MarketKey(msgspec.Struct):
    id: str


class _SignalKey(msgspec.Struct):
    market_id: str


_MARKET_KEY: Final = msgspec.json.Decoder(_MarketKey)
_SIGNAL_KEY: Final = msgspec.json.Decoder(_SignalKey)


def market_key(line: bytes) -> str | None:
    """The `id` of a market line, even one that fails validation otherwise; None if it has none."""
    try:
        return _MARKET_KEY.decode(line).id
    except msgspec.DecodeError:
        return None


def signal_key(line: bytes) -> str | None:
    """The `market_id` of a signal line, even an otherwise invalid one; None if it has none."""
    try:
        return _SIGNAL_KEY.decode(line).market_id
    except msgspec.DecodeError:
        return None


def group_signals(signals: Iterable[Signal]) -> dict[str, list[Signal]]:
    """Group signals by `market_id`, keeping input order (it breaks timestamp ties)."""
    grouped: dict[str, list[Signal]] = {}
    for signal in signals:
        bucket = grouped.get(signal.market_id)
        if bucket is None:
            grouped[signal.market_id] = [signal]
        else:
            bucket.append(signal)
    return grouped


def _decode(
    data: bytes, source: str, first_line: int, decoder: msgspec.json.Decoder[_T]
) -> tuple[list[_T], list[Rejected]]:
    """Decode line by line; the happy path is one `decode` call and one `append` per line."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    good: list[_T] = []
    rejected: list[Rejected] = []
    append = good.append
    decode = decoder.decode
    for index, line in enumerate(data.split(b"\n")):
        try:
            append(decode(line))
        except msgspec.DecodeError as exc:
            if line.isspace() or not line:
                continue
            rejected.append(_rejected(source, first_line + index, exc))
    return good, rejected


def _rejected(source: str, line: int, exc: msgspec.DecodeError) -> Rejected:
    """Turn msgspec's message (`Expected ... - at `$.price``) into a field and a sentence."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return Rejected(source=source, line=line, field=None, message=text)
    path = "$"
    at = text.rfind(_AT)
    if at >= 0:
        path = text[at + len(_AT) : -1]
        text = text[:at]
    if text.startswith(_MISSING):
        missing = text[len(_MISSING) : -1]
        path = missing if path == "$" else f"{path}.{missing}"
        text = "missing required field"
    field = path[2:] if path.startswith("$.") else path
    return Rejected(source=source, line=line, field=field, message=text.replace("`", ""))


def _drop_duplicates(
    data: bytes, source: str, first_line: int, markets: list[Market], rejected: list[Rejected]
) -> tuple[list[Market], list[Rejected]]:
    """Rare path: find each repeated id's line so the rejection can point at it."""
    lines = _market_lines(data, first_line, {r.line for r in rejected})
    first_seen: dict[str, int] = {}
    kept: list[Market] = []
    for market, line in zip(markets, lines, strict=True):
        first = first_seen.setdefault(market.id, line)
        if first == line:
            kept.append(market)
        else:
            rejected.append(
                Rejected(source=source, line=line, field="id",
                         message=f"duplicate id {market.id!r} (first on line {first})")
            )
    rejected.sort(key=lambda r: r.line)
    return kept, rejected


def _market_lines(data: bytes, first_line: int, bad: set[int]) -> list[int]:
    """The line number of every decoded market: non-blank lines that were not rejected."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    return [
        first_line + index
        for index, line in enumerate(data.split(b"\n"))
        if line and not line.isspace() and first_line + index not in bad
    ]
