"""A worker's share of a market-ordered input: its market lines and the run of signal lines
about them, found by the worker itself.

pomabotd cuts only the markets, by bytes, and guesses where each piece's signals lie (the same
share of the signals file). The worker reads its market lines, takes their ids, and looks at
the signal lines of its window: under the assumption of market order, the lines about its
markets form one unbroken run, which it follows past the window as far as it goes. It reports
the run's byte range and a hash of each of its market ids. pomabotd then checks that the runs of
all pieces tile the signals input and that no id repeats (`plan.check_runs`): every signal line
was then read by the one piece holding its market, and the results stand. An input that breaks
the assumption is found out there, or here (`Misrouted`), and is planned line by line instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import numpy as np

from pomabotd.engine.inputs import Reader
from pomabotd.engine.protocol import Span, Task
from pomabotd.wire import market_key, signal_key

__all__ = ["Misrouted", "Piece", "id_hashes", "line_count", "load_piece"]

_MARKET_KEYS: Final = re.compile(rb'(?m)^\{"id":"([^"\\\n]*)"')
_SIGNAL_KEYS: Final = re.compile(rb'(?m)^\{"market_id":"([^"\\\n]*)"')
_FNV_OFFSET: Final = np.uint64(0xCBF29CE484222325)
_FNV_PRIME: Final = np.uint64(0x100000001B3)
#: How far past its window a worker reads at first when its run goes on (then 4 times more).
_GROW: Final = 1 << 16


class Misrouted(Exception):
    """The input is not in market order (or an id repeats): plan it line by line."""


class Piece:
    """A search task's lines: `markets` and `signals` are whole lines, ready to decode."""

    __slots__ = ("keys", "market_lines", "markets", "run", "signal_lines", "signals")

    def __init__(self, markets: bytes, signals: bytes, run: Span | None, keys: bytes) -> None:
        self.markets = markets
        self.signals = signals
        self.run = run
        self.keys = keys
        self.market_lines = line_count(markets)
        self.signal_lines = line_count(signals)


def line_count(data: bytes) -> int:
    """Lines of a block of lines (a last line without its newline counts)."""
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def id_hashes(keys: list[bytes]) -> bytes:
    """A 64-bit FNV-1a hash of each id, as the bytes of a uint64 array (the same in every
    process, unlike `hash`); two ids that collide only cost a plan line by line."""
    if not keys:
        return b""
    table = np.array(keys, dtype=np.bytes_)
    columns = table.view(np.uint8).reshape(len(keys), -1)
    hashes = np.full(len(keys), _FNV_OFFSET, np.uint64)
    for column in columns.T:
        hashes ^= column
        hashes *= _FNV_PRIME
    return hashes.tobytes()


def load_piece(task: Task, markets: Reader, signals: Reader) -> Piece:
    """Read a search task's market lines, and find and read its run of signal lines."""
    (start, end), = task.markets
    market_data = markets.read(start, end)
    keys = _keys(market_data, _MARKET_KEYS, market_key)
    ids = [key for key in keys if key is not None]
    own = set(ids)
    if len(own) != len(ids):
        raise Misrouted
    run: Span | None = None
    signal_data = b""
    if signals.size > signals.start:
        (low, high), = task.signals
        found = _find_run(signals, low, high, own)
        if found is not None:
            run, signal_data = found
    return Piece(market_data, signal_data, run, id_hashes(ids))


def _keys(
    data: bytes, pattern: re.Pattern[bytes], key_of: Callable[[bytes], str | None]
) -> list[bytes | None]:
    """The key of each line of `data` (None for a line without one, blank or not): read off
    compact lines at C speed, decoded from any other line."""
    lines = line_count(data)
    found: list[bytes | None] = pattern.findall(data)
    if len(found) == lines:
        return found
    keys: list[bytes | None] = []
    for line in data.split(b"\n")[:lines]:
        match = pattern.match(line)
        if match is not None:
            keys.append(match.group(1))
        elif line.strip():
            key = key_of(line)
            keys.append(None if key is None else key.encode())
        else:
            keys.append(None)
    return keys


def _find_run(reader: Reader, low: int, high: int, own: set[bytes]) -> tuple[Span, bytes] | None:
    """The byte range and lines of the run of signal lines about `own` markets near the
    window `[low, high)`, or None if no line of the window is about them."""
    low = reader.line_start(low)
    high = max(reader.line_start(high), low)
    grow = _GROW
    while True:
        data = reader.read(low, high)
        keys = _keys(data, _SIGNAL_KEYS, signal_key)
        mine = [key is not None and key in own for key in keys]
        try:
            first = mine.index(True)
        except ValueError:
            return None
        last = len(mine) - 1 - mine[::-1].index(True)
        after = last + 1
        while after < len(keys) and keys[after] is None:
            after += 1  # blank or keyless lines after the run are its own
        if low > reader.start and all(key is None for key in keys[:first]):
            low = reader.line_start(max(reader.start, low - grow))
        elif after == len(keys) and high < reader.size:
            high = reader.line_start(high + grow)
        else:
            break
        grow *= 4
    if any(key is not None and not is_mine for key, is_mine in
           zip(keys[first:last], mine[first:last], strict=True)):
        raise Misrouted  # a stranger inside the run: not in market order
    if low == reader.start and all(key is None for key in keys[:first]):
        first = 0  # blank or keyless lines opening the input belong to the first run
    starts = _line_starts(data, len(keys))
    begin = starts[first]
    stop = starts[after] if after < len(keys) else len(data)
    return (low + begin, low + stop), data[begin:stop]


def _line_starts(data: bytes, lines: int) -> list[int]:
    """The offset of each line of `data` within it."""
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    starts = np.empty(lines, np.int64)
    if lines:
        starts[0] = 0
        starts[1:] = ends[: lines - 1] + 1
    return starts.tolist()
