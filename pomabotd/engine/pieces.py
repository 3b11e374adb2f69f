"""A worker's share of a market-ordered input: its market lines and the run of signal lines
about them, found by the worker itself.

pomabotd cuts only the markets, by bytes, and guesses where each piece's signals lie (the same
share of the signals file). The worker decodes its market lines and takes their ids; under the
assumption of market order, the signal lines about its markets form one unbroken run near its
window. It finds one of them by reading a few keys in the middle of the window (or, failing
that, every key of the window), then the two ends of the run by binary search on single lines,
reading outside the window as far as the run goes; only the run itself is then read and decoded,
and every signal decoded from it must be about one of the piece's markets. The worker reports
the run's byte range and a hash of each of its market ids. pomabotd checks that the runs of all
pieces tile the signals input and that no id repeats (`plan.check_runs`): every signal line was
then read by the one piece holding its market, and the results stand. An input that breaks the
assumption is found out there or here (`Misrouted`) and is planned line by line instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import attrgetter
from typing import Final, TypeVar

import msgspec
import numpy as np

from pomabotd.domain.models import Market, Signal
from pomabotd.engine.inputs import Reader
from pomabotd.engine.kernels.native import Decoder, NativeMarkets, NativeSignals
from pomabotd.engine.kernels.native import decode_markets as decode_native_markets
from pomabotd.engine.kernels.native import decode_signals as decode_native_signals
from pomabotd.engine.protocol import Span, Task
from pomabotd.wire import market_key, signal_key

__all__ = [
    "LoadedPiece",
    "Misrouted",
    "PastPart",
    "decode_bulk",
    "id_hashes",
    "line_count",
    "load_piece",
]

_MARKET_KEYS: Final = re.compile(rb'\n\{"id":"([^"\\\n]*)"')
_SIGNAL_KEYS: Final = re.compile(rb'\n\{"market_id":"([^"\\\n]*)"')
_MARKET: Final = msgspec.json.Decoder(Market)
_SIGNAL: Final = msgspec.json.Decoder(Signal)
_MARKET_ID: Final = attrgetter("market_id")
_FNV_OFFSET: Final = np.uint64(0xCBF29CE484222325)
_FNV_PRIME: Final = np.uint64(0x100000001B3)
#: How far past its window a worker looks at first when its run goes on (then 4 times more).
_GROW: Final = 1 << 16
#: Bytes read around the middle of the window for a first signal line of the piece.
_PROBE: Final = 1 << 12
#: A window searched whole is read in blocks of about this size.
_SCAN_BLOCK: Final = 1 << 20
#: Binary search stops at a range this small and reads its keys.
_NARROW: Final = 1 << 12
_NEUTRAL: Final = b""
#: What JSON counts as whitespace, but for the newline that ends a line.
_JSON_SPACE: Final = b" \t\r"
_T = TypeVar("_T", Market, Signal)


class Misrouted(Exception):
    """The input is not in market order (or an id repeats): plan it line by line."""


class PastPart(Exception):
    """The run of signal lines reaches the edge of the part of the signals input carried to
    this worker: the lines may go on beyond it, so the task needs more of the input."""


class LoadedPiece:
    """A search task's lines, ready to evaluate. `markets` and `signals` are whole lines;
    `decoded_markets` and `decoded_signals` are their records when every line decoded in one
    msgspec call, `native_markets` and `native_signals` their columns when the native
    decoder took them (each None otherwise: when some line is refused, the scalar path names
    it)."""

    __slots__ = ("decoded_markets", "decoded_signals", "keys", "market_lines", "markets",
                 "native_markets", "native_signals", "run", "signal_lines", "signals")

    def __init__(self, markets: bytes, market_lines: int) -> None:
        self.markets = markets
        self.market_lines = market_lines
        self.signals = b""
        self.signal_lines = 0
        self.run: Span | None = None
        self.keys = b""
        self.decoded_markets: list[Market] | None = None
        self.decoded_signals: list[Signal] | None = None
        self.native_markets: NativeMarkets | None = None
        self.native_signals: NativeSignals | None = None


def line_count(data: bytes) -> int:
    """Lines of a block of lines (a last line without its newline counts)."""
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def decode_bulk(
    data: bytes, decoder: msgspec.json.Decoder[_T], lines: int | None = None
) -> list[_T] | None:
    """Lines decoded in one call, or None if any line is refused or the lines are not one
    record each (blank lines, two records on a line, a record over two lines). `lines` is
    their count, if known.

    `decode_lines` reads records separated by any whitespace, newlines or not, so counting
    as many records as lines is not enough: a record split over two lines beside two records
    on one line has the count right. `_one_per_line` settles it."""
    try:
        records = decoder.decode_lines(data)
    except msgspec.DecodeError:
        return None
    count = line_count(data) if lines is None else lines
    if len(records) != count or not _one_per_line(data, count):
        return None
    return records


def _one_per_line(data: bytes, lines: int) -> bool:
    """True if every line of `data` (which decoded) opens with `{` and closes with `}`, JSON
    whitespace aside.

    Inside a record a `}` is followed by `,`, `}` or `]`, never by `{`: so when each line
    closes with `}` and the next opens with `{`, no record runs over a line's end, every line
    holds at least one record, and as many records as lines means one each. Compact lines are
    checked by counting the newlines between a `}` and a `{`; others line by line."""
    ends = data.endswith((b"}", b"}\n"))
    if ends and data.startswith(b"{") and data.count(b"}\n{") == lines - 1:
        return True
    return all(
        stripped.startswith(b"{") and stripped.endswith(b"}")
        for stripped in (line.strip(_JSON_SPACE) for line in data.split(b"\n")[:lines])
    )


def id_hashes(keys: list[bytes]) -> bytes:
    """A 64-bit FNV-1a hash of each id's bytes, as the bytes of a uint64 array (the same in
    every process, unlike `hash`, and whatever other ids it is hashed with); two ids that
    collide only cost a plan line by line.

    The ids are laid out as rows of a table as wide as the longest; each row's hash steps
    only over its own bytes, not the padding."""
    if not keys:
        return b""
    table = np.array(keys, dtype=np.bytes_)
    columns = table.view(np.uint8).reshape(len(keys), -1)
    lengths = np.fromiter(map(len, keys), np.int64, len(keys))
    hashes = np.full(len(keys), _FNV_OFFSET, np.uint64)
    for at, column in enumerate(columns.T):
        step = (hashes ^ column) * _FNV_PRIME
        np.copyto(hashes, step, where=lengths > at)
    return hashes.tobytes()


def load_piece(
    task: Task, markets: Reader, signals: Reader, decoder: Decoder = "msgspec"
) -> LoadedPiece:
    """Read and decode a search task's market lines; find, read and decode its signal run.

    With the `native` decoder the lines go to it first; a block it declines is decoded with
    msgspec as without it. `PastPart` when `signals` is a part of the input carried here and
    the run reaches its edge."""
    (start, end), = task.markets
    data = markets.read(start, end)
    native = decode_native_markets(data) if decoder == "native" else None
    names: list[str] | None = None
    if native is not None:
        piece = LoadedPiece(data, native.count)
        piece.native_markets = native
        keys = native.ids()
    else:
        piece = LoadedPiece(data, line_count(data))
        decoded = decode_bulk(data, _MARKET, piece.market_lines)
        if decoded is not None:
            names = [market.id for market in decoded]
            keys = [name.encode() for name in names]
            piece.decoded_markets = decoded
        else:
            keys = [key for key in _keys(data, _MARKET_KEYS, market_key) if key]
            names = [key.decode(errors="replace") for key in keys]
    own = set(keys)
    if len(own) != len(keys):
        raise Misrouted  # a repeated id: the line-by-line plan refuses the repeat
    piece.keys = native.hashes.tobytes() if native is not None else id_hashes(keys)
    if signals.size <= signals.start:
        return piece
    (low, high), = task.signals
    run = _find_run(signals, low, high, own)
    if run is None:
        return piece
    cut = signals.cut
    if cut is not None and ((cut.before and run[0] <= signals.start)
                            or (cut.after and run[1] >= signals.size)):
        raise PastPart
    piece.run = run
    piece.signals = signals.read(*run)
    if native is not None:
        found_native = decode_native_signals(piece.signals, native)
        if found_native is not None:
            if found_native.strangers:
                raise Misrouted
            piece.native_signals = found_native
            piece.signal_lines = found_native.count
            return piece
        names = [key.decode() for key in keys]
    piece.signal_lines = line_count(piece.signals)
    found = decode_bulk(piece.signals, _SIGNAL, piece.signal_lines)
    if found is not None:
        if names is None or not set(names).issuperset(map(_MARKET_ID, found)):
            raise Misrouted
        piece.decoded_signals = found
    elif any(key and key not in own for key in _keys(piece.signals, _SIGNAL_KEYS, signal_key)):
        raise Misrouted
    return piece


def _keys(
    data: bytes, pattern: re.Pattern[bytes], key_of: Callable[[bytes], str | None]
) -> list[bytes]:
    """The key of each line of `data` (empty for a line without one, blank or not): read off
    compact lines at C speed, decoded from any other line."""
    lines = line_count(data)
    found: list[bytes] = pattern.findall(b"\n" + data)  # a literal prefix scans fast
    if len(found) == lines:
        return found
    keys: list[bytes] = []
    for line in data.split(b"\n")[:lines]:
        match = pattern.match(b"\n" + line)
        if match is not None:
            keys.append(match.group(1))
        elif line.strip():
            key = key_of(line)
            keys.append(_NEUTRAL if key is None else key.encode())
        else:
            keys.append(_NEUTRAL)
    return keys


class _Lines:
    """Single signal lines read by offset, for the binary search."""

    def __init__(self, reader: Reader, own: set[bytes]) -> None:
        self.reader = reader
        self.own = own

    def key_at(self, start: int) -> bytes:
        """The key of the line starting at `start` (empty: blank, keyless, or past the end)."""
        reader = self.reader
        if start >= reader.size:
            return _NEUTRAL
        data = reader.read(start, start + 256)
        match = _SIGNAL_KEYS.match(b"\n" + data)
        if match is not None:
            return match.group(1)
        end = data.find(b"\n")
        data = reader.read(start, reader.line_start(start + 1)) if end < 0 else data[:end]
        key = signal_key(data) if data.strip() else None
        return _NEUTRAL if key is None else key.encode()


def _find_run(reader: Reader, low: int, high: int, own: set[bytes]) -> Span | None:
    """The byte range of the run of signal lines about `own` markets near the window
    `[low, high)`, or None if no line of the window is about them."""
    low = reader.line_start(low)
    high = max(reader.line_start(high), low)
    lines = _Lines(reader, own)
    anchor = _anchor(reader, low, high, own)
    if anchor is None:
        return None
    first = _edge(lines, anchor, backward=True)
    last = _edge(lines, anchor, backward=False)
    if first is None or last is None:
        return _scan_run(reader, low, high, own)
    return first, last


def _anchor(reader: Reader, low: int, high: int, own: set[bytes]) -> int | None:
    """The start of some line about `own` markets in the window: looked for in the middle
    first, then through the whole window, a block at a time (a window may be most of a big
    input when it holds lines about markets not in it)."""
    middle = reader.line_start((low + high) // 2)
    found = _first_own(reader, middle, min(high, middle + _PROBE), own)
    start = low
    while found is None and start < high:
        end = min(high, reader.line_start(start + _SCAN_BLOCK))
        found = _first_own(reader, start, end, own)
        start = end
    return found


def _first_own(reader: Reader, start: int, end: int, own: set[bytes]) -> int | None:
    """The start of the first line of `[start, end)` about `own` markets, if any."""
    data = reader.read(start, end)
    for number, key in enumerate(_keys(data, _SIGNAL_KEYS, signal_key)):
        if key in own:
            return start if number == 0 else start + _nth_line(data, number)
    return None


def _nth_line(data: bytes, number: int) -> int:
    """Offset of line `number` (0-based) within `data`."""
    at = 0
    for _ in range(number):
        at = data.index(b"\n", at) + 1
    return at


def _edge(lines: _Lines, inside: int, *, backward: bool) -> int | None:
    """Where the run holding the line at `inside` starts (`backward`: the offset of its first
    line) or ends (one past its last line). None if a blank or keyless line makes it unclear."""
    reader = lines.reader
    step = _GROW
    while True:  # a line outside the run (or the input's edge), ever further away
        if backward:
            if inside <= reader.start:
                return reader.start
            target = inside - step
            probe = reader.start if target <= reader.start else reader.line_start(target)
            if probe >= inside:
                step *= 4
                continue
        else:
            probe = reader.line_start(inside + step)
            if probe >= reader.size:
                return _search(lines, inside, reader.size, after=True)
        key = lines.key_at(probe)
        if not key:
            return None
        if key not in lines.own:
            break
        if backward and probe == reader.start:
            return reader.start
        inside = probe
        step *= 4
    if backward:
        return _search(lines, probe, inside, after=False)
    return _search(lines, inside, probe, after=True)


def _search(lines: _Lines, low: int, high: int, *, after: bool) -> int | None:
    """Between line starts `low` and `high`, the first line start after `low` whose line is in
    the run (`after` False: `low` is outside it, `high` inside), or the first outside it
    (`after`: `low` is inside, `high` outside or the end); by halving, then one read of the
    last few kilobytes. None at a blank or keyless line."""
    reader = lines.reader
    own = lines.own
    while high - low > _NARROW:
        middle = reader.line_start((low + high) // 2)
        if middle >= high or middle <= low:
            break
        key = lines.key_at(middle)
        if not key:
            return None
        if (key in own) != after:
            high = middle
        else:
            low = middle
    data = reader.read(low, high)
    keys = _keys(data, _SIGNAL_KEYS, signal_key)
    at = 0
    for number, key in enumerate(keys):
        if number:
            if not key:
                return None
            if (key in own) != after:
                return low + at
        at = data.index(b"\n", at) + 1 if number + 1 < len(keys) else len(data)
    return high


def _scan_run(reader: Reader, low: int, high: int, own: set[bytes]) -> Span | None:
    """The run found by reading every key of the window (and beyond, as far as it goes):
    the way when blank or keyless lines lie at its ends."""
    grow = _GROW
    while True:
        data = reader.read(low, high)
        keys = _keys(data, _SIGNAL_KEYS, signal_key)
        mine = [bool(key) and key in own for key in keys]
        try:
            first = mine.index(True)
        except ValueError:
            return None
        last = len(mine) - 1 - mine[::-1].index(True)
        after = last + 1
        while after < len(keys) and not keys[after]:
            after += 1  # blank or keyless lines after the run are its own
        if low > reader.start and not any(keys[:first]):
            low = reader.line_start(max(reader.start, low - grow))
        elif after == len(keys) and high < reader.size:
            high = reader.line_start(high + grow)
        else:
            break
        grow *= 4
    if any(key and not is_mine for key, is_mine in zip(keys[first:last], mine[first:last],
                                                          strict=True)):
        raise Misrouted  # a stranger inside the run: not in market order
    if low == reader.start and not any(keys[:first]):
        first = 0  # blank or keyless lines opening the input belong to the first run
    begin = _nth_line(data, first)
    stop = _nth_line(data, after) if after < len(keys) else len(data)
    return low + begin, low + stop
