"""The check that a ledger's history adds up, run whenever a ledger is opened or read.

The files are only ever appended to by one writer, so their history has a shape that any
damage breaks: cycle ids follow one another in `metrics.jsonl`; each cycle's positions lines
sit together, in cycle order, and number exactly the opens (`selected`) and closes (`closed`)
its metrics line records; each cycle's `open_positions` is the last one's plus its opens less
its closes; no position opens twice, closes twice, or closes before it opened, and no market is
opened while a position holds it; and `state.json` holds as many open positions as the cycle it
was written after. A line duplicated, deleted, moved or overwritten (a line of NUL bytes after
a bad disk) breaks one of these, and is refused naming the file and line, before anything is
written.

Rotation is allowed for: the files may begin at any cycle (rotated away by renaming, perhaps
not at the same time), so a cycle before the first positions line is not counted against
`positions.jsonl`, and a close of a position opened before it is allowed, up to the number of
positions the metrics lines say were open then.

Speed: lines are decoded a block at a time (`Decoder.decode_lines`) into small Structs of the
fields the check needs; the metrics lines' rules and the per-cycle counts are checked on numpy
columns, and only the positions' identities are followed line by line
(`benchmarks/verify.py`). The caller decodes in full only the lines the portfolio is rebuilt
from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import numpy as np

from pomabotd.errors import LedgerHistoryError
from pomabotd.words import plural

__all__ = [
    "BLOCK_BYTES",
    "EVENT_KEYS",
    "METRICS_KEYS",
    "REPAIR_HINT",
    "CloseKey",
    "HistoryCheck",
    "MetricsKey",
    "OpenKey",
    "decode_line",
    "decoded_blocks",
    "line_offset",
    "numbers_of",
    "refused",
]

#: Bytes of whole lines decoded at once: big enough that the per-call cost vanishes, small
#: enough that the block's Structs stay a few tens of MB.
BLOCK_BYTES: Final = 8 << 20

#: What every refusal ends with.
REPAIR_HINT: Final = (
    "repair or move the file (see 'Repairing a ledger' in the docs); `pomabotd verify --out "
    "DIR` checks it again"
)

_T = TypeVar("_T")


class MetricsKey(msgspec.Struct, frozen=True, gc=False):
    """The fields of a `metrics.jsonl` line that the history is checked and recovered on."""

    cycle_id: int
    selected: int
    closed: int
    open_positions: int
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
EVENT_KEYS: Final = msgspec.json.Decoder(OpenKey | CloseKey)


def refused(problem: str) -> LedgerHistoryError:
    """The refusal of a ledger whose history does not add up, saying what to do."""
    return LedgerHistoryError(f"{problem}; {REPAIR_HINT}")


def decoded_blocks(
    decoder: msgspec.json.Decoder[_T], data: bytes, path: Path
) -> Iterator[tuple[list[int] | int, list[_T]]]:
    """The records of every non-blank line of `data` (which ends with a newline), a block of
    about `BLOCK_BYTES` at a time, each block with the number of its first line (its lines
    are consecutive) or, when blank lines sit among them, the list of their line numbers.

    A block whose records do not match its lines one to one (a blank line, two objects on one
    line) or that does not decode is gone through line by line, so that an error names its
    line.
    """
    view = memoryview(data)
    size = len(data)
    start = 0
    number = 1
    while start < size:
        end = size if size - start <= BLOCK_BYTES else data.find(b"\n", start + BLOCK_BYTES) + 1
        if end <= 0:
            end = size
        count = data.count(b"\n", start, end)
        try:
            records: list[_T] | None = decoder.decode_lines(view[start:end])
        except msgspec.DecodeError:
            records = None
        if records is not None and len(records) == count:
            yield number, records
        else:
            numbers: list[int] = []
            records = []
            for index, line in enumerate(data[start:end].split(b"\n")[:-1], number):
                if line.strip():
                    records.append(decode_line(decoder, line, path, index))
                    numbers.append(index)
            yield numbers, records
        number += count
        start = end


def decode_line(decoder: msgspec.json.Decoder[_T], line: bytes, path: Path, number: int) -> _T:
    """One line's record, or LedgerHistoryError naming the file and line."""
    try:
        return decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise refused(f"{path} line {number}: {str(exc).replace('`', '')}") from None


def line_offset(data: bytes, number: int) -> int:
    """The byte offset where line `number` (1-based) of `data` begins, found from the end:
    the lines asked for are the last few."""
    offset = len(data)
    for _ in range(data.count(b"\n") - number + 1):
        offset = data.rfind(b"\n", 0, offset - 1) + 1
    return offset


def numbers_of(numbers: list[int] | int, count: int) -> list[int]:
    """The line numbers of a block's `count` records."""
    return list(range(numbers, numbers + count)) if isinstance(numbers, int) else numbers


class HistoryCheck:
    """Checks one ledger's lines as they are read: the metrics lines first (`metrics_block`),
    then the positions lines of finished cycles in file order (`positions_block`), then
    `finish`. Each problem is a LedgerHistoryError naming the file and line."""

    def __init__(self, metrics_path: Path, positions_path: Path) -> None:
        self.metrics_path = metrics_path
        self.positions_path = positions_path
        self.first_cycle: int | None = None
        self.last: Any = None  # the last metrics record
        self._blocks: list[tuple[np.ndarray, np.ndarray]] = []  # (numbers, columns)
        self._metrics: np.ndarray | None = None  # cycle, selected, closed, open, line
        # per metrics cycle, what positions.jsonl holds: opens, closes, first line
        self._opens: np.ndarray | None = None
        self._closes: np.ndarray | None = None
        self._first_line: np.ndarray | None = None
        self._first_positions_cycle: int | None = None
        self._last_cycle = -1
        self._last_line = 0  # of positions.jsonl
        self._metrics_line = 0
        self._open: dict[str, Any] = {}  # position -> its open record
        self._held: dict[str, str] = {}  # market -> position
        #: position -> line of its open (0: closed in the file, opened before it)
        self._opened_at: dict[str, int] = {}
        self._closed_at: dict[str, int] = {}  # position -> line of its close
        self._unknown_closes = 0
        self._unknown_first: tuple[str, int] | None = None
        #: Positions lines of finished cycles checked.
        self.positions_lines = 0

    # --- metrics.jsonl ------------------------------------------------------------------------

    def metrics_block(self, numbers: list[int] | int, records: Sequence[Any]) -> None:
        """A block of metrics lines, in file order."""
        if not records:
            return
        lines = numbers_of(numbers, len(records))
        columns = np.array(
            [(r.cycle_id, r.selected, r.closed, r.open_positions) for r in records],
            dtype=np.int64,
        )
        if self.last is not None:
            last = self.last
            columns = np.vstack([
                np.array([[last.cycle_id, last.selected, last.closed, last.open_positions]]),
                columns,
            ])
            lines = [self._metrics_line, *lines]
        else:
            self.first_cycle = int(columns[0, 0])
        cycles, selected, closed, open_now = columns.T
        steps = np.diff(cycles)
        chained = open_now[1:] == open_now[:-1] + selected[1:] - closed[1:]
        bad = np.flatnonzero((steps != 1) | ~chained)
        if bad.size:
            at = int(bad[0]) + 1
            self._metrics_refusal(lines[at], columns[at - 1], columns[at], lines[at - 1])
        self._blocks.append((np.array(lines[1:] if self.last is not None else lines),
                             columns[1:] if self.last is not None else columns))
        self.last = records[-1]
        self._metrics_line = lines[-1]

    def _metrics_refusal(self, number: int, before: np.ndarray, record: np.ndarray,
                         before_line: int) -> None:
        cycle, selected, closed, open_now = (int(v) for v in record)
        last_cycle, _, _, last_open = (int(v) for v in before)
        if cycle <= last_cycle:
            raise refused(f"{self.metrics_path} line {number}: cycle_id {cycle} does not "
                          f"follow {last_cycle}")
        if cycle != last_cycle + 1:
            raise refused(
                f"{self.metrics_path} line {number}: cycle {cycle} follows cycle {last_cycle} "
                f"(line {before_line}): the metrics lines of cycles {last_cycle + 1}-"
                f"{cycle - 1} are missing"
            )
        raise refused(
            f"{self.metrics_path} line {number}: cycle {cycle} records "
            f"{plural(open_now, 'open position')}, but cycle {last_cycle} left {last_open} and "
            f"it opened {selected} and closed {closed}: {last_open + selected - closed}"
        )

    @property
    def metrics_lines(self) -> int:
        """Metrics lines (finished cycles) checked."""
        return 0 if self._metrics is None and not self._blocks else len(self._columns())

    def _columns(self) -> np.ndarray:
        if self._metrics is None:
            if self._blocks:
                self._metrics = np.hstack([
                    np.vstack([columns.T, numbers[np.newaxis, :]]) for numbers, columns
                    in self._blocks
                ])
            else:
                self._metrics = np.zeros((5, 0), dtype=np.int64)
            self._blocks = []
            size = self._metrics.shape[1]
            self._opens = np.zeros(size, dtype=np.int64)
            self._closes = np.zeros(size, dtype=np.int64)
            self._first_line = np.zeros(size, dtype=np.int64)
        return self._metrics.T

    # --- positions.jsonl ----------------------------------------------------------------------

    def positions_block(
        self, lines: list[int], records: Sequence[Any], cycles: np.ndarray, open_type: type[Any]
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
            raise refused(
                f"{self.positions_path} line {lines[at]}: a line of cycle {int(cycles[at])} "
                f"after lines of cycle {int(previous[at])} (line "
                f"{lines[at - 1] if at else self._last_line}): lines are out of order (copied "
                "or moved?)"
            )
        if self._first_positions_cycle is None:
            self._first_positions_cycle = int(cycles[0])
        self._follow(lines, records, open_type)
        self._count(cycles, lines, records, open_type)
        self._last_cycle = int(cycles[-1])
        self._last_line = lines[-1]
        self.positions_lines += len(records)

    def _follow(self, lines: list[int], records: Sequence[Any], open_type: type[Any]) -> None:
        """Each position's life, line by line: opened once, closed at most once, after."""
        opened_at, closed_at = self._opened_at, self._closed_at
        open_now, held = self._open, self._held
        for index, number in enumerate(lines):
            record: Any = records[index]
            position = record.position_id
            if type(record) is open_type:
                if position in opened_at or record.market_id in held:
                    self._open_refusal(number, record)
                opened_at[position] = number
                open_now[position] = record
                held[record.market_id] = position
                continue
            opened = open_now.pop(position, None)
            if opened is not None:
                del held[opened.market_id]
                if opened.market_id != record.market_id or record.cycle_id <= opened.cycle_id:
                    raise refused(
                        f"{self.positions_path} line {number}: the close of position "
                        f"{position} (market {record.market_id}, cycle {record.cycle_id}) does "
                        f"not match its open at line {opened_at[position]} (market "
                        f"{opened.market_id}, cycle {opened.cycle_id})"
                    )
            elif position in closed_at:
                raise refused(
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
            raise refused(
                f"{self.positions_path} line {number}: position {position} is opened again "
                f"(it was opened at line {self._opened_at[position]})"
            )
        if position in self._closed_at:
            raise refused(
                f"{self.positions_path} line {number}: position {position} opens after it "
                f"was closed at line {self._closed_at[position]}"
            )
        holder = self._held[record.market_id]
        raise refused(
            f"{self.positions_path} line {number}: position {position} opens market "
            f"{record.market_id}, which position {holder} (line {self._opened_at[holder]}) "
            "still holds"
        )

    def _count(self, cycles: np.ndarray, lines: list[int], records: Sequence[Any],
               open_type: type[Any]) -> None:
        """Add the block's opens and closes to the counts of the cycles metrics.jsonl has."""
        start = self.first_cycle
        if start is None:
            return
        index = cycles - start
        inside = (index >= 0) & (index < len(self._opens))  # type: ignore[arg-type]
        if not inside.any():
            return
        is_open = np.fromiter((type(r) is open_type for r in records), dtype=bool,
                              count=len(records))
        kept = index[inside]
        assert self._opens is not None and self._closes is not None
        assert self._first_line is not None
        np.add.at(self._opens, kept, is_open[inside])
        np.add.at(self._closes, kept, ~is_open[inside])
        # each cycle's first line: lines come in order, so its first in the first block it is in
        cycles_seen, firsts = np.unique(kept, return_index=True)
        numbers = np.asarray(lines, dtype=np.int64)[inside][firsts]
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
            raise refused(
                f"{self.positions_path} line {number}: position {position} closes but was never "
                f"opened ({self._unknown_closes} closes of positions not opened in the file, "
                f"{allowed} open before it)"
            )
        last = self.last
        if last is None or state_cycle is None:
            return
        if state_cycle > last.cycle_id:
            raise refused(
                f"{state_path} is at cycle {state_cycle}, but {self.metrics_path} ends at cycle "
                f"{last.cycle_id} (line {self._metrics_last_line(columns)}): lines are missing "
                "at its end, or it is an older copy"
            )
        if state_cycle == last.cycle_id and state_open != last.open_positions:
            raise refused(
                f"{state_path} holds {state_open} open positions after cycle {state_cycle}, but "
                f"{self.metrics_path} line {self._metrics_last_line(columns)} records "
                f"{last.open_positions}"
            )

    @staticmethod
    def _metrics_last_line(columns: np.ndarray) -> int:
        return int(columns[-1, 4])

    def _compare_counts(self, columns: np.ndarray) -> None:
        start = self._first_positions_cycle
        if start is None or self.first_cycle is None or not len(columns):
            return  # no positions line: rotated away, or none yet
        assert self._opens is not None and self._closes is not None
        assert self._first_line is not None
        checked = columns[:, 0] >= start
        wrong = np.flatnonzero(checked & ((self._opens != columns[:, 1])
                                          | (self._closes != columns[:, 2])))
        if not wrong.size:
            return
        at = int(wrong[0])
        cycle, selected, closed, _, number = (int(v) for v in columns[at])
        opens, closes, line = int(self._opens[at]), int(self._closes[at]), int(
            self._first_line[at])
        where = f"{opens} opens and {closes} closes from line {line}" if line else "no line"
        raise refused(
            f"{self.metrics_path} line {number}: cycle {cycle} records {selected} positions "
            f"opened and {closed} closed, but {self.positions_path} has {where} of it: a "
            "positions line was deleted, duplicated or moved"
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
