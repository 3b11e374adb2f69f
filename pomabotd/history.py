"""The check that a ledger's history adds up, run whenever a ledger is opened or read.

The files are only ever appended to by one writer, so their history has a shape that any
damage breaks: cycle ids follow one another in `metrics.jsonl`; each cycle's positions lines
sit together, in cycle order, and number exactly the opens (`selected`) and closes (`closed`)
its metrics line records; each cycle's `open_positions` is the last one's plus its opens less
its closes; no position opens twice, closes twice, or closes before it opened, and no market is
opened while a position holds it; and `state.json` holds as many open positions as the cycle it
was written after. A line duplicated, deleted, moved or overwritten (a line of NUL bytes after
a bad disk) breaks one of these, and is refused naming the file and line, before anything is
written. Every line must be JSON and carry the checked fields with their types; the other
fields of a line are parsed but not type-checked (`pomabotd report`, which reads them, names
a line whose other fields are wrong).

Rotation is allowed for: the files may begin at any cycle (rotated away by renaming, perhaps
not at the same time), so a cycle before the first positions line is not counted against
`positions.jsonl`, and a close of a position opened before it is allowed, up to the number of
positions the metrics lines say were open then.

Speed (`benchmarks/verify.py`): a file is read a block of whole lines at a time into one
reused buffer (`LineReader`: memory stays at a block however big the file), each block decoded
in one call (`Decoder.decode_lines`) into small Structs of the fields the check needs; the
metrics lines' rules and the per-cycle counts are checked on numpy columns, and only the
positions' identities are followed line by line. The caller decodes in full only the lines
the portfolio is rebuilt from.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from itertools import chain, repeat
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import msgspec
import numpy as np
from msgspec.structs import astuple

from pomabotd.errors import LedgerError, LedgerHistoryError
from pomabotd.words import plural

__all__ = [
    "BLOCK_BYTES",
    "EVENT_KEYS",
    "MAX_LINE_BYTES",
    "METRICS_HALTS",
    "METRICS_KEYS",
    "CloseKey",
    "FileIdentity",
    "HistoryCheck",
    "LineBlock",
    "LineReader",
    "MetricsHalt",
    "MetricsKey",
    "OpenKey",
    "cycle_ids",
    "decode_line",
    "open_regular",
    "refused",
    "repair_hint",
]

#: Bytes of whole lines decoded at once: big enough that the per-call cost vanishes, small
#: enough that the block's Structs stay a few tens of MB.
BLOCK_BYTES: Final = 8 << 20
#: The longest line kept in memory. pomabotd writes lines of a few KB; bytes without a
#: newline past this are read through without being kept: the torn end of a file (NUL bytes a
#: crash left), or a line no pomabotd wrote.
MAX_LINE_BYTES: Final = 64 << 20

#: What a file was when it was read: device, inode, size, modification and change times.
#: The change time cannot be set by hand, so a file rewritten since has another identity.
FileIdentity = tuple[int, int, int, int, int]

_T = TypeVar("_T")
_NEWLINE: Final = 10


class MetricsKey(msgspec.Struct, frozen=True, gc=False):
    """The fields of a `metrics.jsonl` line that the history is checked on."""

    cycle_id: int
    selected: int
    closed: int
    open_positions: int


class MetricsHalt(MetricsKey, frozen=True, gc=False):
    """The fields of a `metrics.jsonl` line that the halt rules are recovered from too (older
    lines decode as not halted): decoded only for the cycles after `state.json`, since each
    field decoded costs (15% more for these two)."""

    halted: bool = False
    halt_reason: str | None = None


class OpenKey(msgspec.Struct, frozen=True, gc=False, tag_field="event", tag="open"):
    """The fields of an `open` line the history is checked on."""

    cycle_id: int
    position_id: str
    market_id: str


class CloseKey(msgspec.Struct, frozen=True, gc=False, tag_field="event", tag="close"):
    """The fields of a `close` line the history is checked on."""

    cycle_id: int
    position_id: str
    market_id: str


METRICS_KEYS: Final = msgspec.json.Decoder(MetricsKey)
METRICS_HALTS: Final = msgspec.json.Decoder(MetricsHalt)
EVENT_KEYS: Final = msgspec.json.Decoder(OpenKey | CloseKey)

_CYCLE_ID: Final = attrgetter("cycle_id")
_METRICS_COLUMNS: Final = tuple(
    attrgetter(name) for name in ("cycle_id", "selected", "closed", "open_positions")
)


def repair_hint(directory: Path | None) -> str:
    """What a refusal ends with: how to find and repair the damage."""
    where = "DIR" if directory is None else str(directory)
    return (f"repair or move the file (see 'Repairing a ledger' in the docs); `pomabotd verify "
            f"--out {where}` checks it again")


def refused(problem: str, directory: Path | None = None) -> LedgerHistoryError:
    """The refusal of a ledger whose history does not add up, saying what to do."""
    return LedgerHistoryError(f"{problem}; {repair_hint(directory)}")


def cycle_ids(records: Sequence[Any]) -> np.ndarray:
    """The `cycle_id` of each record, as a numpy column."""
    return np.fromiter(map(_CYCLE_ID, records), dtype=np.int64, count=len(records))


def decode_line(decoder: msgspec.json.Decoder[_T], line: bytes, path: Path, number: int) -> _T:
    """One line's record, or LedgerHistoryError naming the file and line."""
    try:
        return decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise refused(f"{path} line {number}: {str(exc).replace('`', '')}", path.parent) from None


def _decode_span(
    decoder: msgspec.json.Decoder[_T], data: memoryview, first: int, path: Path,
    count: int | None = None,
) -> tuple[np.ndarray, list[_T]]:
    """The records of the non-blank lines of `data` (whole lines, the first numbered `first`,
    `count` of them if known), with their line numbers. Decoded in one call; lines that do
    not match records one to one (a blank line, two objects on one line) or do not decode are
    gone through one by one, so that an error names its line."""
    if count is None:
        count = _newlines(data)
    try:
        records: list[_T] | None = decoder.decode_lines(data)
    except msgspec.DecodeError:
        records = None
    if records is not None and len(records) == count:
        return np.arange(first, first + count, dtype=np.int64), records
    numbers: list[int] = []
    records = []
    for number, line in enumerate(bytes(data).split(b"\n")[:-1], first):
        if line.strip():
            records.append(decode_line(decoder, line, path, number))
            numbers.append(number)
    return np.array(numbers, dtype=np.int64), records


def _newlines(data: memoryview) -> int:
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == _NEWLINE))


class LineBlock:
    """A block of whole lines of a file and their records. Its bytes are the reader's buffer:
    they are valid until the reader reads the next block."""

    __slots__ = ("_buffer", "end", "first", "lines", "numbers", "offset", "path", "records")

    def __init__(self, buffer: bytearray, end: int, offset: int, first: int, lines: int,
                 numbers: np.ndarray, records: list[Any], path: Path) -> None:
        self._buffer = buffer  # the block is buffer[:end]
        self.end = end
        self.offset = offset  # of the block's first byte in the file
        self.first = first  # the number of the block's first line
        self.lines = lines  # lines in the block, blank ones included
        self.numbers = numbers  # of each record's line
        self.records = records
        self.path = path

    def start_of(self, number: int) -> int:
        """Where line `number` (one of this block's) begins, as an offset into the block."""
        index = number - self.first
        if index == 0:
            return 0
        if index == self.lines - 1:
            return self._buffer.rfind(b"\n", 0, self.end - 1) + 1
        with memoryview(self._buffer) as view, view[:self.end] as data:
            ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == _NEWLINE)
        return int(ends[index - 1]) + 1

    def line(self, number: int) -> bytes:
        """Line `number` (one of this block's), without its newline."""
        start = self.start_of(number)
        return bytes(self._buffer[start:self._buffer.index(b"\n", start, self.end)])

    def decode(self, decoder: msgspec.json.Decoder[_T], start: int, stop: int) -> list[_T]:
        """The records from index `start` up to `stop`, decoded again by `decoder` (into
        full records)."""
        if start >= stop:
            return []
        number = int(self.numbers[start])
        begin = self.start_of(number)
        end = self.start_of(int(self.numbers[stop])) if stop < len(self.records) else self.end
        with memoryview(self._buffer) as view, view[begin:end] as data:
            _, records = _decode_span(decoder, data, number, self.path)
        return records


class LineReader:
    """One ledger file, read a block of whole lines at a time into one reused buffer, up to
    the size it had when it was opened (lines a writer appends meanwhile belong to a later
    read). After `blocks`, `whole` is the size of its whole lines and `torn` the bytes of a
    last line without its newline.

    A missing file reads as empty unless `required`; one that cannot be read is a
    LedgerError naming it, and one that is not a regular file (a FIFO, whose reads could wait
    forever) a LedgerHistoryError.
    """

    def __init__(self, path: Path, *, required: bool = False) -> None:
        self.path = path
        self.identity: FileIdentity | None = None
        self.size = 0
        self.whole = 0
        self.torn = 0
        self._fd = -1
        try:
            self._fd, status = open_regular(path, os.O_RDONLY)
        except FileNotFoundError:
            if required:
                raise LedgerError(f"cannot read {path}: no such file") from None
            return
        except OSError as exc:
            raise LedgerError(f"cannot read {path}: {exc.strerror}") from None
        self.size = status.st_size
        self.identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
                         status.st_ctime_ns)

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the file; safe to call twice."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def blocks(self, decoder: msgspec.json.Decoder[Any],
               block_bytes: int = BLOCK_BYTES) -> Iterator[LineBlock]:
        """Every block of whole lines with its records, in file order (blocks without a
        record, all blank, are skipped)."""
        if self._fd < 0 or not self.size:
            return
        buffer = bytearray(min(block_bytes, self.size))
        filled = 0  # bytes in the buffer
        offset = 0  # of buffer[0] in the file
        left = self.size  # bytes not read yet
        number = 1
        while True:
            view = memoryview(buffer)
            while left and filled < len(buffer):
                got = os.readv(self._fd, [view[filled:filled + min(left, len(buffer) - filled)]])
                if not got:  # cut short meanwhile: read what there was
                    left = 0
                    break
                filled += got
                left -= got
            end = buffer.rfind(b"\n", 0, filled) + 1
            if not end and left and len(buffer) >= MAX_LINE_BYTES:
                view.release()
                filled += self._read_through(buffer, left, number)
                break
            if not end and left:  # a line longer than the buffer: make room
                view.release()
                grown = bytearray(2 * len(buffer))
                grown[:filled] = buffer[:filled]
                buffer = grown
                continue
            if end:
                with view[:end] as data:
                    count = _newlines(data)
                    numbers, records = _decode_span(decoder, data, number, self.path, count)
                if records:
                    yield LineBlock(buffer, end, offset, number, count, numbers, records,
                                    self.path)
                number += count
                buffer[:filled - end] = buffer[end:filled]
                offset += end
                filled -= end
            view.release()
            if not left:
                break
        self.whole = offset
        self.torn = filled

    def _read_through(self, buffer: bytearray, left: int, number: int) -> int:
        """Read the `left` bytes after a line already longer than `MAX_LINE_BYTES` into
        `buffer`, keeping none: how many there were when no newline ends them (a torn end);
        LedgerHistoryError naming the line if one does."""
        read = 0
        with memoryview(buffer) as view:
            while left:
                got = os.readv(self._fd, [view[:min(left, len(buffer))]])
                if not got:
                    break
                if buffer.find(b"\n", 0, got) >= 0:
                    raise refused(
                        f"{self.path} line {number}: longer than {MAX_LINE_BYTES >> 20} MB (a "
                        "line pomabotd writes holds a few KB)", self.path.parent
                    )
                read += got
                left -= got
        return read


def open_regular(path: Path, flags: int, mode: int = 0o644) -> tuple[int, os.stat_result]:
    """Open `path` (`flags` | close-on-exec | non-blocking; `mode` if created) and return the
    descriptor and its status; OSError as `os.open` raises it, or LedgerHistoryError when it
    is not a regular file: a FIFO or a device in the output directory is no file pomabotd
    wrote, and reading or writing one could wait forever."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            raise _not_regular(path) from None
        raise
    try:
        status = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise _not_regular(path)
    return fd, status


def _not_regular(path: Path) -> LedgerHistoryError:
    return refused(f"{path} is not a regular file (a FIFO, a device?): no file pomabotd "
                   "wrote", path.parent)


class HistoryCheck:
    """Checks one ledger's lines as they are read: the metrics lines first (`metrics_block`),
    then the positions lines of finished cycles in file order (`positions_block`), then
    `finish`. Each problem is a LedgerHistoryError naming the file and line."""

    def __init__(self, metrics_path: Path, positions_path: Path) -> None:
        self.metrics_path = metrics_path
        self.positions_path = positions_path
        self.directory = metrics_path.parent
        self.first_cycle: int | None = None
        self.last: Any = None  # the last metrics record
        #: Per block of metrics lines: rows cycle, selected, closed, open_positions, line.
        self._blocks: list[np.ndarray] = []
        self._last_row: np.ndarray | None = None
        self._metrics: np.ndarray | None = None  # the blocks joined, one row per line
        # per metrics cycle, what positions.jsonl holds: opens, closes, first line
        self._opens = np.zeros(0, dtype=np.int64)
        self._closes = np.zeros(0, dtype=np.int64)
        self._first_line = np.zeros(0, dtype=np.int64)
        self._first_positions_cycle: int | None = None
        self._last_cycle = -1
        self._last_line = 0  # of positions.jsonl
        self._open: dict[str, Any] = {}  # position -> its open record
        self._held: dict[str, str] = {}  # market -> position
        #: position -> line of its open (0: closed in the file, opened before it)
        self._opened_at: dict[str, int] = {}
        self._closed_at: dict[str, int] = {}  # position -> line of its close
        self._unknown_closes = 0
        self._unknown_first: tuple[str, int] | None = None
        #: Positions lines of finished cycles checked.
        self.positions_lines = 0

    def _refused(self, problem: str) -> LedgerHistoryError:
        return refused(problem, self.directory)

    # --- metrics.jsonl ------------------------------------------------------------------------

    def metrics_block(self, numbers: np.ndarray, records: Sequence[Any]) -> np.ndarray:
        """A block of metrics lines, in file order, with their line numbers; returns their
        cycle ids."""
        count = len(records)
        if not count:
            return np.zeros(0, dtype=np.int64)
        block = np.empty((5, count), dtype=np.int64)
        if type(records[0]) is MetricsKey:  # its fields are the columns: one pass
            values = chain.from_iterable(map(astuple, records))
            block[:4] = np.fromiter(values, dtype=np.int64, count=4 * count).reshape(count, 4).T
        else:
            for row, column in zip(block, _METRICS_COLUMNS, strict=False):
                row[:] = np.fromiter(map(column, records), dtype=np.int64, count=count)
        block[4] = numbers
        if self._last_row is None:
            self.first_cycle = int(block[0, 0])
            joined = block
        else:
            joined = np.hstack([self._last_row[:, np.newaxis], block])
        cycles, selected, closed, open_now, _ = joined
        chained = open_now[1:] == open_now[:-1] + selected[1:] - closed[1:]
        bad = np.flatnonzero((np.diff(cycles) != 1) | ~chained)
        if bad.size:
            at = int(bad[0]) + 1
            self._metrics_refusal(joined[:, at - 1], joined[:, at])
        self._blocks.append(block)
        self._last_row = block[:, -1].copy()
        self.last = records[-1]
        cycles_of_block: np.ndarray = block[0]
        return cycles_of_block

    def _metrics_refusal(self, before: np.ndarray, record: np.ndarray) -> None:
        cycle, selected, closed, open_now, number = (int(v) for v in record)
        last_cycle, _, _, last_open, before_line = (int(v) for v in before)
        if cycle <= last_cycle:
            raise self._refused(f"{self.metrics_path} line {number}: cycle_id {cycle} does not "
                                f"follow {last_cycle} (line {before_line})")
        if cycle != last_cycle + 1:
            missing = (f"the metrics line of cycle {last_cycle + 1} is"
                       if cycle == last_cycle + 2 else
                       f"the metrics lines of cycles {last_cycle + 1}-{cycle - 1} are")
            raise self._refused(
                f"{self.metrics_path} line {number}: cycle {cycle} follows cycle {last_cycle} "
                f"(line {before_line}): {missing} missing"
            )
        raise self._refused(
            f"{self.metrics_path} line {number}: cycle {cycle} records "
            f"{plural(open_now, 'open position')}, but cycle {last_cycle} (line {before_line}) "
            f"left {last_open} and cycle {cycle} opened {selected} and closed {closed}: "
            f"{last_open + selected - closed}"
        )

    @property
    def metrics_lines(self) -> int:
        """Metrics lines (finished cycles) checked."""
        return len(self._columns())

    def _columns(self) -> np.ndarray:
        """Every metrics line checked: cycle, selected, closed, open_positions, line."""
        if self._metrics is None or self._blocks:
            parts = ([] if self._metrics is None else [self._metrics.T]) + self._blocks
            joined = np.hstack(parts) if parts else np.zeros((5, 0), dtype=np.int64)
            self._metrics = joined.T
            self._blocks = []
            size = len(self._metrics)
            self._opens = np.zeros(size, dtype=np.int64)
            self._closes = np.zeros(size, dtype=np.int64)
            self._first_line = np.zeros(size, dtype=np.int64)
        return self._metrics

    # --- positions.jsonl ----------------------------------------------------------------------

    def positions_block(
        self, lines: np.ndarray, records: Sequence[Any], cycles: np.ndarray, open_type: type[Any]
    ) -> None:
        """A block of positions lines of finished cycles, in file order, with their line
        numbers and cycle ids; `open_type` is the Struct type of an `open` line in `records`."""
        if not records:
            return
        self._columns()
        previous = np.concatenate(([self._last_cycle], cycles[:-1]))
        behind = np.flatnonzero(cycles < previous)
        if behind.size:
            at = int(behind[0])
            raise self._refused(
                f"{self.positions_path} line {lines[at]}: a line of cycle {int(cycles[at])} "
                f"after lines of cycle {int(previous[at])} (line "
                f"{lines[at - 1] if at else self._last_line}): lines are out of order (copied "
                "or moved?)"
            )
        if self._first_positions_cycle is None:
            self._first_positions_cycle = int(cycles[0])
        is_open = np.fromiter(map(isinstance, records, repeat(open_type)), dtype=np.bool_,
                              count=len(records))
        self._follow(lines.tolist(), records, open_type)
        self._count(cycles, lines, is_open)
        self._last_cycle = int(cycles[-1])
        self._last_line = int(lines[-1])
        self.positions_lines += len(records)

    def _follow(self, lines: list[int], records: Sequence[Any], open_type: type[Any]) -> None:
        """Each position's life, line by line: opened once, closed at most once, after it
        opened, of its market; no market opened while a position holds it."""
        opened_at, closed_at = self._opened_at, self._closed_at
        open_now, held = self._open, self._held
        for number, record in zip(lines, records, strict=True):
            position = record.position_id
            if type(record) is open_type:
                market = record.market_id
                if position in opened_at or market in held:
                    self._open_refusal(number, record)
                opened_at[position] = number
                open_now[position] = record
                held[market] = position
                continue
            opened = open_now.pop(position, None)
            if opened is not None:
                del held[opened.market_id]
                if opened.market_id != record.market_id or record.cycle_id <= opened.cycle_id:
                    raise self._refused(
                        f"{self.positions_path} line {number}: the close of position "
                        f"{position} (market {record.market_id}, cycle {record.cycle_id}) does "
                        f"not match its open at line {opened_at[position]} (market "
                        f"{opened.market_id}, cycle {opened.cycle_id})"
                    )
            elif position in closed_at:
                raise self._refused(
                    f"{self.positions_path} line {number}: position {position} is closed again "
                    f"(it was closed at line {closed_at[position]})"
                )
            else:
                self._unknown_closes += 1
                if self._unknown_first is None:
                    self._unknown_first = (position, number)
                opened_at[position] = 0  # opened before the file, as far as it knows
            closed_at[position] = number

    def _open_refusal(self, number: int, record: Any) -> None:
        position = record.position_id
        if self._opened_at.get(position):
            raise self._refused(
                f"{self.positions_path} line {number}: position {position} is opened again "
                f"(it was opened at line {self._opened_at[position]})"
            )
        if position in self._closed_at:
            raise self._refused(
                f"{self.positions_path} line {number}: position {position} opens after it "
                f"was closed at line {self._closed_at[position]}"
            )
        holder = self._held[record.market_id]
        raise self._refused(
            f"{self.positions_path} line {number}: position {position} opens market "
            f"{record.market_id}, which position {holder} (line {self._opened_at[holder]}) "
            "still holds"
        )

    def _count(self, cycles: np.ndarray, lines: np.ndarray, is_open: np.ndarray) -> None:
        """Add the block's opens and closes to the counts of the cycles metrics.jsonl has."""
        start = self.first_cycle
        if start is None:
            return
        index = cycles - start
        inside = (index >= 0) & (index < len(self._opens))
        if not inside.any():
            return
        kept = index[inside]
        opens = is_open[inside]
        self._opens += np.bincount(kept[opens], minlength=len(self._opens))
        self._closes += np.bincount(kept[~opens], minlength=len(self._closes))
        # each cycle's first line: lines come in order, so its first in the first block it is in
        cycles_seen, firsts = np.unique(kept, return_index=True)
        numbers = lines[inside][firsts]
        known = self._first_line[cycles_seen]
        self._first_line[cycles_seen] = np.where(known == 0, numbers, known)

    # --- the end ------------------------------------------------------------------------------

    def finish(self, state_cycle: int | None, state_open: int | None, state_path: Path) -> None:
        """After the last finished cycle's lines: compare each cycle's counts with its
        metrics line, check the closes of positions opened before the file, and state.json."""
        columns = self._columns()
        self._compare_counts(columns)
        allowed = self._open_before_positions(columns)
        if allowed is not None and self._unknown_closes > allowed:
            assert self._unknown_first is not None
            position, number = self._unknown_first
            raise self._refused(
                f"{self.positions_path} line {number}: position {position} closes but was never "
                f"opened ({plural(self._unknown_closes, 'close')} of positions not opened in "
                f"the file, {allowed} open before it)"
            )
        last = self.last
        if last is None or state_cycle is None:
            return
        last_line = int(columns[-1, 4])
        if state_cycle > last.cycle_id:
            raise self._refused(
                f"{state_path} is at cycle {state_cycle}, but {self.metrics_path} ends at cycle "
                f"{last.cycle_id} (line {last_line}): lines are missing at its end, or it is an "
                "older copy"
            )
        if state_cycle == last.cycle_id and state_open != last.open_positions:
            raise self._refused(
                f"{state_path} holds {plural(state_open or 0, 'open position')} after cycle "
                f"{state_cycle}, but {self.metrics_path} line {last_line} records "
                f"{last.open_positions}"
            )

    def _compare_counts(self, columns: np.ndarray) -> None:
        start = self._first_positions_cycle
        if start is None or self.first_cycle is None or not len(columns):
            return  # no positions line: rotated away, or none yet
        checked = columns[:, 0] >= start
        wrong = np.flatnonzero(checked & ((self._opens != columns[:, 1])
                                          | (self._closes != columns[:, 2])))
        if not wrong.size:
            return
        at = int(wrong[0])
        cycle, selected, closed, _, number = (int(v) for v in columns[at])
        opens, closes, line = int(self._opens[at]), int(self._closes[at]), int(
            self._first_line[at])
        where = (f"{plural(opens, 'open')} and {plural(closes, 'close')} from line {line}"
                 if line else "no line")
        raise self._refused(
            f"{self.metrics_path} line {number}: cycle {cycle} records "
            f"{plural(selected, 'position')} opened and {closed} closed, but "
            f"{self.positions_path} has {where} of it: a positions line was deleted, duplicated "
            "or moved"
        )

    def _open_before_positions(self, columns: np.ndarray) -> int | None:
        """How many positions were open before the first positions line's cycle, as the
        metrics lines say (None: they do not say)."""
        cycle = self._first_positions_cycle
        if cycle is None:
            return None
        if cycle == 1:
            return 0
        first = self.first_cycle
        if first is None or not 0 <= cycle - first < len(columns):
            return None
        _, selected, closed, open_now, _ = (int(v) for v in columns[cycle - first])
        return open_now - selected + closed
