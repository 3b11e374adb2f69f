"""Plan an input line by line: the way for input out of market order, and for per-market output.

pomabotd reads the input whole (the one case where it does), finds each record's key (`id` of a
market, `market_id` of a signal) and records byte ranges: a chunk is a list of `LineRun`s of
the source (bytes and line numbers), at most `batch_size` markets with every signal about them,
which the workers read and decode themselves. For the usual compact lines (`{"id":"...` first,
as msgspec and most writers emit them) one regular-expression pass per megabyte finds every
key; any other block falls back to decoding the key line by line. Signals grouped by market in
market order are routed as whole ranges; any other order line by line.
Market-ordered input without per-market output is not planned here at all (`plan.py`).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterator
from itertools import islice, repeat
from operator import le
from typing import Final, cast

import msgspec

from pomabotd.engine.protocol import Task
from pomabotd.wire import (
    Rejected,
    decode_markets,
    decode_signals,
    market_key,
    signal_key,
)

__all__ = ["LineRun", "Workload", "plan_workload", "unrouted_signals"]


class LineRun(msgspec.Struct, frozen=True, gc=False):
    """Consecutive whole lines of one input: its bytes `[start, end)`, holding `count` lines
    of which the first is line `first_line` of the source (numbered from 1)."""

    start: int
    end: int
    first_line: int
    count: int

_BLOCK: Final = 1 << 20
_BOM: Final = b"\xef\xbb\xbf"
_NEWLINE: Final = 10


class _KeyPattern:
    """Finds a record's key at the start of compact lines, without decoding them."""

    def __init__(self, field: bytes) -> None:
        self.prefix = b'\n{"' + field + b'":"'
        self.first = re.compile(re.escape(self.prefix[1:]) + rb'([^"\\\n]*)"')
        self.rest = re.compile(re.escape(self.prefix) + rb'([^"\\\n]*)"')

    def keys(self, data: bytes, start: int, end: int, lines: int) -> list[bytes] | None:
        """Every line's key if every line of `[start, end)` is compact, else None."""
        first = self.first.match(data, start, end)
        if first is None:
            return None
        keys = self.rest.findall(data, start, end)
        if len(keys) != lines - 1:
            return None
        keys.insert(0, first.group(1))
        return keys

    def line_start(self, data: bytes, key: bytes, after: int) -> int:
        """Offset of the first line at or after `after + 1` whose key is `key`."""
        return data.find(self.prefix + key + b'"', after) + 1


_MARKET_PATTERN: Final = _KeyPattern(b"id")
_SIGNAL_PATTERN: Final = _KeyPattern(b"market_id")


class Workload:
    """One cycle's input as chunks of at most `batch_size` markets, each with its signals."""

    def __init__(
        self,
        markets: bytes,
        markets_source: str,
        signals: bytes,
        signals_source: str,
    ) -> None:
        self.markets = markets
        self.markets_source = markets_source
        self.signals = signals
        self.signals_source = signals_source
        self.market_runs: list[list[LineRun]] = []
        self.signal_runs: list[list[LineRun]] = []
        self.keep: dict[int, frozenset[str]] = {}
        self.rejected: list[Rejected] = []
        self.markets_total = 0
        self.signals_total = 0

    @property
    def chunk_count(self) -> int:
        """How many chunks the markets were cut into."""
        return len(self.market_runs)

    def chunk_size(self, index: int) -> int:
        """How many market lines chunk `index` holds."""
        return sum(run.count for run in self.market_runs[index])

    def chunk_sizes(self) -> Iterator[int]:
        """How many market lines each chunk holds, in chunk order."""
        return (sum(run.count for run in runs) for runs in self.market_runs)

    def task(self, index: int, only: int = -1) -> Task:
        """The byte ranges a worker reads for chunk `index`."""
        return Task(
            index=index,
            markets=[(run.start, run.end) for run in self.market_runs[index]],
            signals=[(run.start, run.end) for run in self.signal_runs[index]],
            keep=self.keep.get(index, frozenset()),
            only=only,
        )

    def market_line(self, index: int, position: int) -> int:
        """The source line of the `position`-th line (1-based) of chunk `index`'s markets."""
        return _line(self.market_runs[index], position)

    def signal_line(self, index: int, position: int) -> int:
        """The source line of the `position`-th line (1-based) of chunk `index`'s signals."""
        return _line(self.signal_runs[index], position)


def plan_workload(
    markets: bytes,
    markets_source: str,
    signals: bytes,
    signals_source: str,
    batch_size: int,
    keep: Collection[str] = (),
) -> Workload:
    """Chunk the markets and route each signal to its market's chunk.

    A market line without a usable `id`, or repeating an earlier id, is rejected here; every
    other check is the workers' typed decode. Signals about markets not in the input are unused.
    """
    work = Workload(markets, markets_source, signals, signals_source)
    chunk_of: dict[bytes, int] = {}
    _chunk_markets(work, chunk_of, max(1, batch_size))
    work.signal_runs = [[] for _ in work.market_runs]
    _route_signals(work, chunk_of)
    keep_by_chunk: dict[int, set[str]] = {}
    for market_id in keep:
        chunk = chunk_of.get(market_id.encode())
        if chunk is not None:
            keep_by_chunk.setdefault(chunk, set()).add(market_id)
    work.keep = {chunk: frozenset(ids) for chunk, ids in keep_by_chunk.items()}
    return work


def _blocks(data: bytes) -> Iterator[tuple[int, int, int]]:
    """`(start, end, line_count)` of about a megabyte of whole lines at a time.

    `end` excludes the block's last newline, so the block's lines are `data[start:end]` split on
    newlines.
    """
    size = len(data)
    start = len(_BOM) if data.startswith(_BOM) else 0
    while start < size:
        end = data.find(b"\n", start + _BLOCK)
        if end < 0:
            end = size - 1 if data[-1] == _NEWLINE else size
        yield start, end, data.count(b"\n", start, end) + 1
        start = end + 1


def _chunk_markets(work: Workload, chunk_of: dict[bytes, int], batch_size: int) -> None:
    """Cut the markets into chunks, first assuming their ids are unique (the usual case, and
    checked by the size of `chunk_of`), else again with duplicates looked for block by block."""
    if _chunk_market_blocks(work, chunk_of, batch_size, trust=True):
        return
    work.market_runs.clear()
    work.rejected.clear()
    work.markets_total = 0
    chunk_of.clear()
    _chunk_market_blocks(work, chunk_of, batch_size, trust=False)


def _chunk_market_blocks(
    work: Workload, chunk_of: dict[bytes, int], batch_size: int, *, trust: bool
) -> bool:
    """One pass over the blocks; with `trust`, False as soon as an id turns out to repeat."""
    data = work.markets
    runs = work.market_runs
    filled = batch_size  # the current chunk is full: the first market opens a new one
    line = 1
    for start, end, lines in _blocks(data):
        keys = _MARKET_PATTERN.keys(data, start, end, lines)
        if keys is not None and (
            trust or (len(set(keys)) == lines and chunk_of.keys().isdisjoint(keys))
        ):
            known = len(chunk_of)
            work.markets_total += lines
            done = 0
            at = start
            while done < lines:
                if filled == batch_size:
                    runs.append([])
                    filled = 0
                take = min(batch_size - filled, lines - done)
                stop = (
                    end
                    if done + take == lines
                    else (_MARKET_PATTERN.line_start(data, keys[done + take], at) - 1)
                )
                _add(runs[-1], at, stop, line + done, take)
                chunk_of.update(zip(keys[done : done + take], repeat(len(runs) - 1)))
                filled += take
                done += take
                at = stop + 1
            if len(chunk_of) != known + lines:
                return False
        else:
            filled = _chunk_market_lines(work, chunk_of, batch_size, start, end, line, filled)
        line += lines
    return True


def _chunk_market_lines(
    work: Workload,
    chunk_of: dict[bytes, int],
    batch_size: int,
    start: int,
    end: int,
    line: int,
    filled: int,
) -> int:
    """The slow path: one market line at a time; returns how full the current chunk is."""
    runs = work.market_runs
    lines = _keyed_lines(work.markets, start, end, line, _MARKET_PATTERN.first, _market_key)
    for number, begin, text, key in lines:
        work.markets_total += 1
        if key is None:
            work.rejected.append(_refused_market(text, work.markets_source, number))
            continue
        if key in chunk_of:
            work.rejected.append(
                Rejected(
                    source=work.markets_source,
                    line=number,
                    field="id",
                    message=(f"duplicate id {key.decode(errors='replace')!r} "
                             "(an earlier line has it)"),
                )
            )
            continue
        if filled == batch_size:
            runs.append([])
            filled = 0
        chunk_of[key] = len(runs) - 1
        _add(runs[-1], begin, begin + len(text), number, 1)
        filled += 1
    return filled


def _refused_market(text: bytes, source: str, number: int) -> Rejected:
    """Why a line has no usable id, in the readers' own words."""
    _, rejected = decode_markets(text, source, first_line=number)
    if rejected:
        return rejected[0]
    return Rejected(source=source, line=number, field="id", message="missing or not a string")


def _route_signals(work: Workload, chunk_of: dict[bytes, int]) -> None:
    data = work.signals
    runs = work.signal_runs
    get = chunk_of.get
    line = 1
    for start, end, lines in _blocks(data):
        keys = _SIGNAL_PATTERN.keys(data, start, end, lines)
        found = None if keys is None else list(map(get, keys))
        if found is not None and keys is not None and _ascending(found):
            chunks = cast(list[int], found)
            work.signals_total += lines
            done = 0
            at = start
            while done < lines:
                chunk = chunks[done]
                upto = bisect_right(chunks, chunk, done)
                stop = (
                    end if upto == lines else (_SIGNAL_PATTERN.line_start(data, keys[upto], at) - 1)
                )
                _add(runs[chunk], at, stop, line + done, upto - done)
                done = upto
                at = stop + 1
        else:
            _route_signal_lines(work, get, start, end, line)
        line += lines


def _ascending(chunks: list[int | None]) -> bool:
    """True when every signal's market is known and they come in chunk order."""
    if None in chunks:
        return False
    return all(map(le, chunks, islice(chunks, 1, None)))  # type: ignore[arg-type]


def _route_signal_lines(
    work: Workload, chunk_of_key: Callable[[bytes], int | None], start: int, end: int, line: int
) -> None:
    """The slow path: one signal line at a time."""
    runs = work.signal_runs
    lines = _keyed_lines(work.signals, start, end, line, _SIGNAL_PATTERN.first, _signal_key)
    for number, begin, text, key in lines:
        work.signals_total += 1
        if key is None:
            work.rejected.extend(_keyless_signal(text, work.signals_source, number))
            continue
        chunk = chunk_of_key(key)
        if chunk is not None:
            _add(runs[chunk], begin, begin + len(text), number, 1)


def unrouted_signals(data: bytes, source: str) -> tuple[int, list[bytes], list[Rejected]]:
    """Signal lines no market of the input claims, taken as this plan takes them: the count of
    non-blank lines, the market id of each line that names one (such a line goes to no market,
    unvalidated), and the refusals of the others, numbered from 1 within `data`."""
    count = 0
    keys: list[bytes] = []
    rejected: list[Rejected] = []
    for number, _, text, key in _keyed_lines(data, 0, len(data), 1, _SIGNAL_PATTERN.first,
                                             _signal_key):
        count += 1
        if key is None:
            rejected.extend(_keyless_signal(text, source, number))
        else:
            keys.append(key)
    return count, keys, rejected


def _keyless_signal(text: bytes, source: str, number: int) -> list[Rejected]:
    """Why a signal line without a usable market id is refused."""
    _, rejected = decode_signals(text, source, first_line=number)
    return rejected or [Rejected(source=source, line=number, field="market_id",
                                 message="missing or not a string")]


def _keyed_lines(
    data: bytes,
    start: int,
    end: int,
    line: int,
    pattern: re.Pattern[bytes],
    key_of: Callable[[bytes], bytes | None],
) -> Iterator[tuple[int, int, bytes, bytes | None]]:
    """Each non-blank line of `data[start:end]` as (line number, offset, text, key), the key
    read by `pattern` or else by a typed decode; None when the line has no usable key."""
    at = start
    for number, text in enumerate(data[start:end].split(b"\n"), line):
        begin = at
        at += len(text) + 1
        found = pattern.match(text)
        if found is not None:
            yield number, begin, text, found.group(1)
        elif text and not text.isspace():
            yield number, begin, text, key_of(text)


def _market_key(text: bytes) -> bytes | None:
    key = market_key(text)
    return None if key is None else key.encode()


def _signal_key(text: bytes) -> bytes | None:
    key = signal_key(text)
    return None if key is None else key.encode()


def _add(runs: list[LineRun], start: int, end: int, first_line: int, count: int) -> None:
    """Append a run of lines, merging it with the previous one when the lines follow on."""
    if runs:
        last = runs[-1]
        if last.end + 1 == start and last.first_line + last.count == first_line:
            runs[-1] = LineRun(start=last.start, end=end, first_line=last.first_line,
                               count=last.count + count)
            return
    runs.append(LineRun(start=start, end=end, first_line=first_line, count=count))


def _line(runs: list[LineRun], position: int) -> int:
    for run in runs:
        if position <= run.count:
            return run.first_line + position - 1
        position -= run.count
    return 0
