"""The JSON-lines ledger: `positions.jsonl` and `metrics.jsonl` in one output directory.

Crash safety (never half a cycle) rests on one rule: a cycle's metrics line is written last and is
its commit marker. Positions lines are written with one `os.write` and synced before the metrics
line is written, so a metrics line on disk implies its positions lines are too. After a crash,
`Ledger.recover` cuts both files back to the last committed cycle (a torn last line, positions
of a cycle without a metrics line), so the next cycle appends cleanly and no finished cycle is
lost or repeated. Anything else unexpected refuses to continue rather than guess.

After each committed cycle `state.json` is replaced (written aside, then renamed) with the
portfolio it left: open positions, realized P&L, last cycle id, and the halt rules' memory
(`pomabotd.domain.halt.HaltState`). Recovery starts from it and replays only the lines of later
cycles, so the two JSON-lines files may be rotated away (rename, then `Ledger.reopen`) without
losing the open positions, the closes the halt rules judge, or a cycle id.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import msgspec
import numpy as np

from pomabotd.domain.halt import HaltState
from pomabotd.domain.halt import recover as recover_halt
from pomabotd.domain.models import CloseEvent, Position
from pomabotd.domain.portfolio import HistoryError, LedgerState, replay_ledger
from pomabotd.errors import LedgerError
from pomabotd.history import (
    EVENT_KEYS,
    METRICS_HALTS,
    METRICS_KEYS,
    FileIdentity,
    HistoryCheck,
    LineReader,
    OpenKey,
    cycle_ids,
    decode_line,
    open_regular,
    refused,
)
from pomabotd.log import logger
from pomabotd.sources.base import SourceStats
from pomabotd.words import plural

__all__ = [
    "LOCK_FILE",
    "METRICS_FILE",
    "POSITIONS_FILE",
    "STATE_FILE",
    "CycleMetrics",
    "Ledger",
    "LedgerScan",
    "LedgerSnapshot",
    "LedgerVerdict",
    "output_dir_problem",
    "read_ledger",
    "read_recent_cycles",
    "scan_ledger",
    "verify_ledger",
]

POSITIONS_FILE: Final = "positions.jsonl"
METRICS_FILE: Final = "metrics.jsonl"
STATE_FILE: Final = "state.json"
LOCK_FILE: Final = ".lock"

_FILE_MODE: Final = 0o644



class CycleMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """What one cycle did and what it cost (`metrics.jsonl`); every resource figure is measured.

    Its line is written last, so it also marks the cycle as finished: positions lines whose
    `cycle_id` has no metrics line belong to a cycle that never completed. `rss_mb` is the
    peak, over the whole cycle from loading its input to writing its lines, of the summed
    proportional set size (PSS) of pomabotd and every process it started: a page shared by
    several of them counts once in total. `sources` holds what loading the input ran into
    (failed fetches per source, refused records, feeds, news); lines written before it existed
    decode with empty counts. `halted` says the halt rules kept the cycle from opening
    positions, `halt_reason` why; older lines decode as not halted. `held_missing` counts the
    markets of open positions that the cycle's input lacked (those positions stay open,
    unmarked); older lines decode as 0.
    """

    cycle_id: int
    started_at: datetime
    finished_at: datetime
    markets_total: int
    markets_evaluated: int
    markets_failed: int
    markets_rejected: int
    retries: int
    timeouts: int
    worker_restarts: int
    processing_time_ms: float
    throughput_per_s: float
    avg_eval_us: float
    rss_mb: float
    cpu_percent: float
    opportunities: int
    selected: int
    closed: int
    open_positions: int
    portfolio_risk_pct: float
    equity_usd: float
    realized_pnl_usd: float
    success_rate: float
    sources: SourceStats = msgspec.field(default_factory=SourceStats)
    halted: bool = False
    halt_reason: str | None = None
    held_missing: int = 0


class _StateFile(msgspec.Struct, frozen=True, kw_only=True):
    """`state.json`: the portfolio, and the halt rules' memory (absent in older files)."""

    open_positions: tuple[Position, ...]
    realized_pnl_usd: float
    last_cycle_id: int
    halt: HaltState | None = None


_EVENT_DECODER: Final = msgspec.json.Decoder(Position | CloseEvent)
_METRICS_DECODER: Final = msgspec.json.Decoder(CycleMetrics)
_STATE_DECODER: Final = msgspec.json.Decoder(_StateFile)


class LedgerSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the ledger holds for finished cycles, and what recovery cut off.

    `base` is the portfolio `state.json` recorded (None without one); `events` are the
    positions lines of the finished cycles after it. `truncated_bytes` counts the bytes
    removed from both files; `dropped_lines` the complete positions lines of the unfinished
    cycle `dropped_cycle_id` among them. The caller logs them. `cycles` (every finished
    cycle's metrics line) and `history` (every positions line of a finished cycle, those
    `state.json` already counts included), both in file order, are read only on request.
    `base_halt` is the halt state `state.json` recorded; `later_cycles` the ids of the finished
    cycles after it, and `later_halts` the `halt_reason` of those written as halted.
    """

    events: tuple[Position | CloseEvent, ...]
    last_cycle_id: int
    last_metrics: CycleMetrics | None
    base: LedgerState | None = None
    truncated_bytes: int = 0
    dropped_lines: int = 0
    dropped_cycle_id: int | None = None
    cycles: tuple[CycleMetrics, ...] = ()
    history: tuple[Position | CloseEvent, ...] = ()
    base_halt: HaltState | None = None
    later_cycles: tuple[int, ...] = ()
    later_halts: dict[int, str | None] = msgspec.field(default_factory=dict)

    def portfolio(self) -> LedgerState:
        """`state.json`'s portfolio with the finished cycles after it replayed on top;
        LedgerError if the positions lines contradict each other."""
        base = self.base
        carried = () if base is None else base.open_positions
        try:
            replayed = replay_ledger((*carried, *self.events))
        except HistoryError as exc:
            raise refused(str(exc)) from None
        realized = replayed.realized_pnl_usd + (0.0 if base is None else base.realized_pnl_usd)
        return LedgerState(
            open_positions=replayed.open_positions,
            realized_pnl_usd=round(realized, 2),
            last_cycle_id=max(replayed.last_cycle_id, self.last_cycle_id),
        )

    def halt_state(self) -> HaltState:
        """`state.json`'s halt state brought forward over the finished cycles after it.

        A `state.json` written before the halt rules ran in cycles starts them after its last
        cycle; without any `state.json` they judge every finished cycle in the files.
        """
        base = self.base
        if self.base_halt is not None:
            start = self.base_halt
        elif base is not None:
            start = HaltState(judging_since=base.last_cycle_id + 1)
        else:
            start = HaltState()
        carried = () if base is None else base.open_positions
        try:
            return recover_halt(start, carried, self.events, self.later_cycles, self.later_halts)
        except HistoryError as exc:
            raise refused(str(exc)) from None


class LedgerScan(msgspec.Struct, frozen=True, kw_only=True):
    """What reading an output directory found (`scan_ledger`), checked: the snapshot, the
    files as they were when read (`files`: identities of metrics.jsonl, positions.jsonl and
    state.json, None for one missing), and what recovery would cut: each file is kept up to
    its first `*_keep` bytes (without a torn last line, or the lines of an unfinished cycle);
    `torn_bytes` counts the torn last lines of both.

    A writer that locks the directory next hands it to `Ledger.recover`, which trusts it when
    the files are still the ones read: the history is checked once per open.
    """

    snapshot: LedgerSnapshot
    files: tuple[FileIdentity | None, FileIdentity | None, FileIdentity | None]
    metrics_keep: int
    positions_keep: int
    torn_bytes: int
    metrics_lines: int
    positions_lines: int


def scan_ledger(directory: Path, *, history: bool = False) -> LedgerScan:
    """Read and check an output directory without creating, locking or changing anything.

    A missing directory or file reads as empty; a torn last line and the lines of an
    unfinished cycle are skipped, as `Ledger.recover` would cut them, and only what the files
    held when they were opened is read, so this is safe on the files of a running daemon.
    `history` also keeps every finished cycle's lines (for reports); the daemon never needs
    them. LedgerHistoryError if the history does not add up.
    """
    return _scan(directory, history=history)


#: Bytes read at a time from the end of metrics.jsonl for its last lines.
_TAIL_BLOCK: Final = 64 * 1024


def read_recent_cycles(directory: Path, count: int) -> tuple[CycleMetrics, ...]:
    """The metrics lines of the last `count` finished cycles, oldest first, read from the end
    of `metrics.jsonl` (a block at a time, never the whole file); a torn last line is skipped,
    as recovery would cut it. Call it on a recovered ledger: a line that does not decode
    raises LedgerError naming the file."""
    path = directory / METRICS_FILE
    try:
        with open(path, "rb") as file:
            end = file.seek(0, os.SEEK_END)
            data = b""
            start = end
            while start > 0 and data.count(b"\n") <= count:
                start = max(0, start - _TAIL_BLOCK)
                file.seek(start)
                data = file.read(end - start)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror}") from None
    lines = data[: data.rfind(b"\n") + 1].splitlines()  # a torn last line left out
    if start > 0:
        lines = lines[1:]  # the first may be cut by the block's start
    try:
        return tuple(_METRICS_DECODER.decode(line) for line in lines[-count:] if line.strip())
    except msgspec.DecodeError as exc:
        raise LedgerError(f"{path}: a recent metrics line does not decode ({exc})") from None


def read_ledger(directory: Path, *, history: bool = False) -> LedgerSnapshot:
    """`scan_ledger`'s snapshot: what the directory holds for finished cycles."""
    return _scan(directory, history=history).snapshot


class LedgerVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """What `verify_ledger` found in a sound ledger: the finished cycles and positions lines
    it checked, the portfolio they leave, and what the next writer will cut (a torn last line,
    the lines of an unfinished cycle)."""

    directory: str
    cycles: int
    first_cycle_id: int | None
    last_cycle_id: int
    positions_lines: int
    open_positions: int
    unfinished_cycle_id: int | None
    unfinished_lines: int
    torn_bytes: int


def verify_ledger(directory: Path) -> LedgerVerdict:
    """Check an output directory's whole history, read-only, as opening it would
    (`pomabotd verify`): LedgerHistoryError naming the file and line if it does not add up,
    LedgerError if it cannot be read."""
    scan = _scan(directory)
    snapshot = scan.snapshot
    last = snapshot.last_metrics
    return LedgerVerdict(
        directory=str(directory),
        cycles=scan.metrics_lines,
        first_cycle_id=None if last is None else last.cycle_id - scan.metrics_lines + 1,
        last_cycle_id=snapshot.last_cycle_id,
        positions_lines=scan.positions_lines,
        open_positions=len(snapshot.portfolio().open_positions),
        unfinished_cycle_id=snapshot.dropped_cycle_id,
        unfinished_lines=snapshot.dropped_lines,
        torn_bytes=scan.torn_bytes,
    )


def output_dir_problem(directory: Path) -> str | None:
    """Why `directory` cannot be an output directory, or None: it, or an ancestor, is not a
    directory; it is on a read-only file system or not writable; or it does not exist and
    cannot be created where it would be (`/sys/x`).

    Nothing is left behind: a missing directory is probed by creating and removing a
    uniquely named empty directory beside where it would be, never the directory itself.
    """
    for candidate in (directory, *directory.parents):
        if not candidate.exists():
            continue
        if not candidate.is_dir():
            if candidate == directory:
                return "is not a directory"
            return f"cannot be created: {str(candidate)!r} is not a directory"
        if candidate == directory:
            return _unwritable(directory)
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".pomabotd-probe-", dir=candidate))
        except OSError as exc:
            return f"cannot be created in {str(candidate)!r}: {exc.strerror or exc}"
        return None
    return None


def _unwritable(directory: Path) -> str | None:
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return f"cannot be examined: {exc.strerror or exc}"
    if read_only:
        return "is on a read-only file system"
    if not os.access(directory, os.W_OK | os.X_OK):
        return "is not writable"
    return None


class Ledger:
    """The single writer of one output directory, guarded by an exclusive `flock`.

    Use as a context manager, or call `close()`: closing releases the lock.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.positions_path = directory / POSITIONS_FILE
        self.metrics_path = directory / METRICS_FILE
        self.state_path = directory / STATE_FILE
        self._state_encoder = msgspec.json.Encoder()
        self._positions_encoder = msgspec.json.Encoder()
        self._metrics_encoder = msgspec.json.Encoder()
        self._positions_lines = bytearray()
        self._last_cycle_id: int | None = None
        self._lock_fd = -1
        self._positions_fd = -1
        self._metrics_fd = -1
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create {directory}: {exc.strerror}") from None
        self._lock_fd = _lock(directory)
        self._identity = _identity(directory, self._lock_fd)
        try:
            created = not (self.positions_path.exists() and self.metrics_path.exists())
            self._positions_fd = _open_append(self.positions_path)
            self._metrics_fd = _open_append(self.metrics_path)
            if created:
                _sync_directory(directory)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the files and release the directory lock; safe to call twice."""
        for name in ("_positions_fd", "_metrics_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                with contextlib.suppress(OSError):
                    os.close(fd)

    def intact(self) -> bool:
        """Whether the directory is still the one this ledger locked: not removed, renamed
        away or replaced (its `.lock` file still the one held)."""
        if self._lock_fd < 0:
            return False
        now = _identity(self.directory, self._lock_fd)
        return now is not None and now == self._identity

    def check(self) -> None:
        """LedgerError if the directory is no longer the one this ledger locked: lines
        appended now would go to files nobody can find any more."""
        self._check_open()
        if not self.intact():
            raise LedgerError(
                f"output directory {self.directory} was removed or replaced while pomabotd "
                "held it; nothing more is written to files nobody can read: reload (SIGHUP) "
                "or restart pomabotd to start a ledger there again"
            )

    def recover(self, scanned: LedgerScan | None = None) -> LedgerSnapshot:
        """Check both files' history, then cut off anything after the last finished cycle.

        A history that does not add up (`pomabotd.history`) is a `LedgerHistoryError` naming
        the file and line, raised before anything is cut: the user must repair or move the
        file. `scanned`, what `scan_ledger` found in this directory before it was locked, is
        trusted instead of checking again when the files are still the ones it read.
        """
        self._check_open()
        if scanned is None or not _unchanged(scanned.files, _identities(self.directory)):
            scanned = _scan(self.directory, required=True)
        cut = 0
        for fd, path, keep in ((self._metrics_fd, self.metrics_path, scanned.metrics_keep),
                               (self._positions_fd, self.positions_path,
                                scanned.positions_keep)):
            size = _size(fd, path)
            if keep < size:
                _truncate(fd, path, keep)
                cut += size - keep
        self._last_cycle_id = scanned.snapshot.last_cycle_id
        return msgspec.structs.replace(scanned.snapshot, truncated_bytes=cut)

    def reopen(self) -> None:
        """Open both files again by name, so that a rename-based rotation takes effect: the
        next cycle goes to fresh files, while `state.json` keeps the portfolio."""
        self._check_open()
        positions_fd = _open_append(self.positions_path)
        try:
            metrics_fd = _open_append(self.metrics_path)
        except LedgerError:
            os.close(positions_fd)
            raise
        old = (self._positions_fd, self._metrics_fd)
        self._positions_fd, self._metrics_fd = positions_fd, metrics_fd
        for fd in old:
            with contextlib.suppress(OSError):
                os.close(fd)
        _sync_directory(self.directory)

    def save_state(self, state: LedgerState, halt: HaltState | None = None) -> None:
        """Replace `state.json` with the portfolio and halt state after the last appended cycle.

        Written aside, synced, then renamed over the old one, so a reader sees the old state
        or the new one, never a mix. Call it only after `append_cycle` succeeded.
        """
        self._check_open()
        if state.last_cycle_id != self._last_cycle_id:
            raise ValueError(
                f"state of cycle {state.last_cycle_id} after cycle {self._last_cycle_id}"
            )
        aside = self.state_path.with_name(STATE_FILE + ".tmp")
        try:
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
            try:
                record = _StateFile(
                    open_positions=state.open_positions,
                    realized_pnl_usd=state.realized_pnl_usd,
                    last_cycle_id=state.last_cycle_id,
                    halt=halt,
                )
                _write_all(fd, self._state_encoder.encode(record) + b"\n")
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(aside, self.state_path)
        except OSError as exc:
            raise LedgerError(f"cannot write {self.state_path}: {exc.strerror}") from None

    def append_cycle(self, events: Sequence[Position | CloseEvent], metrics: CycleMetrics) -> None:
        """Append one finished cycle: its positions lines, synced, then its metrics line.

        Runs `recover()` first if it has not run, so a cycle never lands after a torn one.
        If a write fails, both files are cut back to where they were and `LedgerError` says why.
        """
        self.check()
        if self._last_cycle_id is None:
            self.recover()
        assert self._last_cycle_id is not None
        cycle_id = metrics.cycle_id
        if cycle_id <= self._last_cycle_id:
            raise ValueError(f"cycle {cycle_id} does not follow cycle {self._last_cycle_id}")
        for event in events:
            if event.cycle_id != cycle_id:
                raise ValueError(f"an event of cycle {event.cycle_id} in cycle {cycle_id}")
        # Encode everything before writing anything: an encoding error must not leave a
        # cycle's positions lines without their metrics line.
        lines = self._positions_lines
        del lines[:]
        encode_into = self._positions_encoder.encode_into
        for event in events:
            encode_into(event, lines, -1)
            lines.append(10)
        marker = self._metrics_encoder.encode(metrics) + b"\n"

        positions_size = os.fstat(self._positions_fd).st_size
        metrics_size = os.fstat(self._metrics_fd).st_size
        path = self.positions_path
        try:
            if lines:
                _write_all(self._positions_fd, lines)
                os.fdatasync(self._positions_fd)
            path = self.metrics_path
            _write_all(self._metrics_fd, marker)
            os.fdatasync(self._metrics_fd)
        except BaseException as exc:
            # Cut back what this cycle wrote so that no torn cycle stays in front of the next.
            sizes = ((self._metrics_fd, metrics_size), (self._positions_fd, positions_size))
            for fd, size in sizes:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
            if isinstance(exc, OSError):
                raise LedgerError(f"cannot write {path}: {exc.strerror}") from None
            raise
        finally:
            del lines[:]
        self._last_cycle_id = cycle_id

    def _check_open(self) -> None:
        if self._lock_fd < 0:
            raise ValueError(f"the ledger for {self.directory} is closed")



def _scan(directory: Path, *, required: bool = False, history: bool = False) -> LedgerScan:
    """Check the history of the whole lines of both files (`pomabotd.history`) and decode
    what the portfolio is rebuilt from: the positions lines after `state.json`, and the last
    metrics line; find where an unfinished cycle begins. LedgerHistoryError if the history
    does not add up; LedgerError if a file cannot be read (or, when `required`, is missing).

    `state.json` is read first and `metrics.jsonl` before `positions.jsonl`, each only up to
    the size it had when opened, so that a writer appending meanwhile cannot make them
    disagree: what is read of `positions.jsonl` is at most one cycle ahead of what is read of
    `metrics.jsonl` (an unfinished cycle), which is not behind `state.json`.

    With `history`, every finished cycle's lines are decoded in full and kept too, those
    before `state.json` included.
    """
    started = time.perf_counter()
    metrics_path = directory / METRICS_FILE
    positions_path = directory / POSITIONS_FILE
    state_path = directory / STATE_FILE
    state, state_identity = _read_state(state_path)
    with LineReader(metrics_path, required=required) as metrics_file, \
            LineReader(positions_path, required=required) as positions_file:
        base = None if state is None else LedgerState(
            open_positions=state.open_positions,
            realized_pnl_usd=state.realized_pnl_usd,
            last_cycle_id=state.last_cycle_id,
        )
        based = 0 if base is None else base.last_cycle_id
        check = HistoryCheck(metrics_path, positions_path)

        cycles: list[CycleMetrics] = []
        later_cycles: list[int] = []
        later_halts: dict[int, str | None] = {}
        last_line = b""
        last_number = 0
        # The halt fields are decoded only where the halt state is recovered from them: the
        # cycles after state.json (all of them without one).
        metrics_decoder: msgspec.json.Decoder[Any] = (
            _METRICS_DECODER if history else METRICS_HALTS if base is None else METRICS_KEYS)
        for block in metrics_file.blocks(metrics_decoder):
            records = block.records
            ids = check.metrics_block(block.numbers, records)
            last_number = int(block.numbers[-1])
            if history:
                cycles.extend(records)
            else:
                last_line = block.line(last_number)
            if ids[-1] <= based:
                continue
            first = int(np.searchsorted(ids, based, side="right"))  # ids run +1 a line
            later_cycles.extend(ids[first:].tolist())
            halts = (records[first:] if metrics_decoder is not METRICS_KEYS
                     else block.decode(METRICS_HALTS, first, len(records)))
            later_halts.update((record.cycle_id, record.halt_reason) for record in halts
                               if record.halted)
        last_metrics: CycleMetrics | None = None
        if cycles:
            last_metrics = cycles[-1]
        elif last_number:
            last_metrics = decode_line(_METRICS_DECODER, last_line, metrics_path, last_number)
        last_cycle_id = max(based, 0 if last_metrics is None else last_metrics.cycle_id)

        # Without state.json every finished cycle's lines rebuild the portfolio: decode them
        # in full at once rather than into their keys and then again.
        full = history or base is None
        events_decoder: msgspec.json.Decoder[Any] = _EVENT_DECODER if full else EVENT_KEYS
        open_type = Position if full else OpenKey
        finished: list[Position | CloseEvent] = []  # with `history`: all of them, in file order
        events: list[Position | CloseEvent] = []  # those of the finished cycles after state
        keep: int | None = None  # where the lines of an unfinished cycle begin
        dropped_lines = 0
        dropped_cycle_id: int | None = None
        for block in positions_file.blocks(events_decoder):
            records = block.records
            lines = block.numbers
            ids = cycle_ids(records)
            end = len(records)
            ahead = np.flatnonzero(ids > last_cycle_id)
            if dropped_cycle_id is not None or ahead.size:
                end = 0 if dropped_cycle_id is not None else int(ahead[0])
                for index in range(end, len(records)):
                    cycle, number = int(ids[index]), int(lines[index])
                    if cycle > last_cycle_id + 1:
                        raise refused(
                            f"{positions_path} line {number}: cycle {cycle} is ahead of "
                            f"{metrics_path}, which ends at cycle {last_cycle_id}; was "
                            f"{METRICS_FILE} moved without {STATE_FILE}? Keep the files "
                            "together", directory
                        )
                    if cycle <= last_cycle_id:
                        raise refused(
                            f"{positions_path} line {number}: cycle {cycle} comes after "
                            f"lines of unfinished cycle {dropped_cycle_id}", directory
                        )
                    if dropped_cycle_id is None:
                        keep = block.offset + block.start_of(number)
                        dropped_cycle_id = cycle
                    dropped_lines += 1
            check.positions_block(lines[:end], records[:end], ids[:end], open_type)
            if not end or ids[end - 1] <= based:
                if history:
                    finished.extend(records[:end])
                continue
            first = int(np.argmax(ids[:end] > based))
            if full:
                if history:
                    finished.extend(records[:end])
                events.extend(records[first:end])
            else:
                events.extend(block.decode(_EVENT_DECODER, first, end))
        check.finish(
            None if state is None else state.last_cycle_id,
            None if state is None else len(state.open_positions),
            state_path,
        )
        snapshot = LedgerSnapshot(
            events=tuple(events),
            last_cycle_id=last_cycle_id,
            last_metrics=last_metrics,
            base=base,
            dropped_lines=dropped_lines,
            dropped_cycle_id=dropped_cycle_id,
            cycles=tuple(cycles),
            history=tuple(finished),
            base_halt=None if state is None else state.halt,
            later_cycles=tuple(later_cycles),
            later_halts=later_halts,
        )
        if (base is not None and events and last_metrics is not None
                and last_cycle_id == last_metrics.cycle_id):
            rebuilt = len(snapshot.portfolio().open_positions)
            if rebuilt != last_metrics.open_positions:
                raise refused(
                    f"{positions_path}: the positions lines after {STATE_FILE}'s cycle {based} "
                    f"leave {plural(rebuilt, 'position')} open, but {metrics_path} line "
                    f"{last_number} records {last_metrics.open_positions}", directory
                )
        scan = LedgerScan(
            snapshot=snapshot,
            files=(metrics_file.identity, positions_file.identity, state_identity),
            metrics_keep=metrics_file.whole,
            positions_keep=positions_file.whole if keep is None else keep,
            torn_bytes=metrics_file.torn + positions_file.torn,
            metrics_lines=check.metrics_lines,
            positions_lines=check.positions_lines,
        )
        checked = metrics_file.size + positions_file.size
    elapsed = time.perf_counter() - started
    logger.bind(
        event="ledger_checked", output_dir=str(directory), metrics_lines=scan.metrics_lines,
        positions_lines=scan.positions_lines, bytes=checked, seconds=round(elapsed, 3),
    ).debug(
        "checked the history of {}: {}, {} ({:,.1f} MB) in {:.2f} s", directory,
        plural(scan.metrics_lines, "metrics line"), plural(scan.positions_lines,
                                                          "positions line"),
        checked / 1e6, elapsed,
    )
    return scan


def _identities(directory: Path) -> tuple[FileIdentity | None, ...]:
    """The identity each of metrics.jsonl, positions.jsonl and state.json has now."""
    found: list[FileIdentity | None] = []
    for name in (METRICS_FILE, POSITIONS_FILE, STATE_FILE):
        try:
            status = os.stat(directory / name)
        except FileNotFoundError:
            found.append(None)
            continue
        except OSError as exc:
            raise LedgerError(f"cannot examine {directory / name}: {exc.strerror}") from None
        found.append((status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
                      status.st_ctime_ns))
    return tuple(found)


def _unchanged(read: Sequence[FileIdentity | None], now: Sequence[FileIdentity | None]) -> bool:
    """Whether the files are still the ones read: each the very same, or missing when read
    and still empty (a writer opening the directory creates its files)."""
    return all(
        before == after or (before is None and (after is None or after[2] == 0))
        for before, after in zip(read, now, strict=True)
    )


def _size(fd: int, path: Path) -> int:
    try:
        return os.fstat(fd).st_size
    except OSError as exc:
        raise LedgerError(f"cannot examine {path}: {exc.strerror}") from None


def _read_state(path: Path) -> tuple[_StateFile | None, FileIdentity | None]:
    """`state.json` (None when missing or empty) and its identity when read."""
    try:
        fd, status = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read()
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
                status.st_ctime_ns)
    if not data:
        return None, identity
    try:
        return _STATE_DECODER.decode(data), identity
    except msgspec.DecodeError as exc:
        raise refused(f"{path} line 1: {str(exc).replace('`', '')}", path.parent) from None


def _lock(directory: Path) -> int:
    """Hold an exclusive, non-blocking `flock` on DIR/.lock, recording our pid in it."""
    path = directory / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    except OSError as exc:
        raise LedgerError(f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise LedgerError(f"another pomabotd is writing to {directory} (pid {holder})") from None
    except OSError as exc:
        os.close(fd)
        raise LedgerError(f"cannot lock {path}: {exc.strerror}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _identity(directory: Path, lock_fd: int) -> tuple[int, int, int, int] | None:
    """(device, inode) of the directory and of the lock file held through `lock_fd`, both
    looked up by name; None when either name no longer leads to the held file."""
    try:
        found = os.stat(directory)
        named = os.stat(directory / LOCK_FILE)
        held = os.fstat(lock_fd)
    except OSError:
        return None
    if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
        return None
    return found.st_dev, found.st_ino, held.st_dev, held.st_ino


def _open_append(path: Path) -> int:
    try:
        return open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)[0]
    except OSError as exc:
        raise LedgerError(f"cannot open {path}: {exc.strerror}") from None


def _truncate(fd: int, path: Path, size: int) -> None:
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        raise LedgerError(f"cannot truncate {path}: {exc.strerror}") from None


def _write_all(fd: int, data: bytes | bytearray) -> None:
    """One `os.write` in practice; loops only if the kernel takes part of it."""
    written = os.write(fd, data)
    if written == len(data):
        return
    with memoryview(data) as view:
        while written < len(data):
            written += os.write(fd, view[written:])


def _sync_directory(directory: Path) -> None:
    """Make newly created files survive a power loss, not just their contents."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
