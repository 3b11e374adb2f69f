"""The JSON-lines ledger: `positions.jsonl` and `metrics.jsonl` in one output directory.

Crash safety (SPEC section 8) rests on one rule: a cycle's metrics line is written last and is
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
    METRICS_KEYS,
    HistoryCheck,
    OpenKey,
    decode_line,
    decoded_blocks,
    line_offset,
    numbers_of,
    refused,
)
from pomabotd.sources.base import SourceStats

__all__ = [
    "LOCK_FILE",
    "METRICS_FILE",
    "POSITIONS_FILE",
    "STATE_FILE",
    "CycleMetrics",
    "Ledger",
    "LedgerSnapshot",
    "LedgerVerdict",
    "output_dir_problem",
    "read_ledger",
    "verify_ledger",
]

POSITIONS_FILE: Final = "positions.jsonl"
METRICS_FILE: Final = "metrics.jsonl"
STATE_FILE: Final = "state.json"
LOCK_FILE: Final = ".lock"

_FILE_MODE: Final = 0o644



class CycleMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """What one cycle did and what it cost (SPEC section 8); every resource figure is measured.

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


def read_ledger(directory: Path, *, history: bool = False) -> LedgerSnapshot:
    """Read an output directory without creating, locking or changing anything.

    A missing directory or file reads as empty; a torn last line and the lines of an
    unfinished cycle are skipped, as `Ledger.recover` would cut them, so this is safe on the
    files of a running daemon. `history` also keeps every finished cycle's lines (for
    reports); the daemon never needs them.
    """
    metrics, _ = _whole_lines(_read_if_present(directory / METRICS_FILE))
    positions, _ = _whole_lines(_read_if_present(directory / POSITIONS_FILE))
    scan = _scan(
        metrics,
        positions,
        _read_state(directory / STATE_FILE),
        directory / METRICS_FILE,
        directory / POSITIONS_FILE,
        directory / STATE_FILE,
        history=history,
    )
    return scan.snapshot


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
    metrics, metrics_torn = _whole_lines(_read_if_present(directory / METRICS_FILE))
    positions, positions_torn = _whole_lines(_read_if_present(directory / POSITIONS_FILE))
    scan = _scan(metrics, positions, _read_state(directory / STATE_FILE),
                 directory / METRICS_FILE, directory / POSITIONS_FILE, directory / STATE_FILE)
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
        torn_bytes=metrics_torn + positions_torn,
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

    def recover(self) -> LedgerSnapshot:
        """Check both files' history, then cut off anything after the last finished cycle.

        A history that does not add up (`pomabotd.history`) is a `LedgerHistoryError` naming
        the file and line, raised before anything is cut: the user must repair or move the
        file.
        """
        self._check_open()
        metrics_data, metrics_cut = _whole_lines(_read_file(self.metrics_path))
        positions_data, positions_cut = _whole_lines(_read_file(self.positions_path))
        scan = _scan(
            metrics_data, positions_data, _read_state(self.state_path), self.metrics_path,
            self.positions_path, self.state_path,
        )
        if metrics_cut:
            _truncate(self._metrics_fd, self.metrics_path, len(metrics_data))
        if positions_cut:
            _truncate(self._positions_fd, self.positions_path, len(positions_data))
        if scan.positions_keep < len(positions_data):
            _truncate(self._positions_fd, self.positions_path, scan.positions_keep)
            positions_cut += len(positions_data) - scan.positions_keep
        self._last_cycle_id = scan.snapshot.last_cycle_id
        return msgspec.structs.replace(
            scan.snapshot, truncated_bytes=metrics_cut + positions_cut
        )

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



class _Scan(msgspec.Struct, frozen=True):
    snapshot: LedgerSnapshot
    positions_keep: int
    metrics_lines: int = 0
    positions_lines: int = 0


def _scan(
    metrics_data: bytes,
    positions_data: bytes,
    state: _StateFile | None,
    metrics_path: Path,
    positions_path: Path,
    state_path: Path,
    *,
    history: bool = False,
) -> _Scan:
    """Check the history of whole lines of both files (`pomabotd.history`) and decode what
    the portfolio is rebuilt from: the positions lines after `state`, and the last metrics
    line; find where an unfinished cycle begins. LedgerHistoryError if the history does not
    add up.

    With `history`, every finished cycle's lines are decoded in full and kept too, those
    before `state` included.
    """
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
    last_number = 0
    metrics_decoder: msgspec.json.Decoder[Any] = _METRICS_DECODER if history else METRICS_KEYS
    for numbers, records in decoded_blocks(metrics_decoder, metrics_data, metrics_path):
        if not records:
            continue
        check.metrics_block(numbers, records)
        last_number = numbers_of(numbers, len(records))[-1]
        if history:
            cycles.extend(records)
        if records[-1].cycle_id > based:
            for record in records:
                if record.cycle_id > based:
                    later_cycles.append(record.cycle_id)
                    if record.halted:
                        later_halts[record.cycle_id] = record.halt_reason
    last_metrics: CycleMetrics | None = None
    if cycles:
        last_metrics = cycles[-1]
    elif last_number:
        start = line_offset(metrics_data, last_number)
        line = metrics_data[start : metrics_data.index(b"\n", start)]
        last_metrics = decode_line(_METRICS_DECODER, line, metrics_path, last_number)
    last_cycle_id = max(based, 0 if last_metrics is None else last_metrics.cycle_id)

    finished: list[Position | CloseEvent] = []  # with `history`: all of them, in file order
    first_later: int | None = None  # the first line of a finished cycle after `state`
    dropped_first: int | None = None
    dropped_lines = 0
    dropped_cycle_id: int | None = None
    events_decoder: msgspec.json.Decoder[Any] = _EVENT_DECODER if history else EVENT_KEYS
    open_type = Position if history else OpenKey
    for numbers, records in decoded_blocks(events_decoder, positions_data, positions_path):
        if not records:
            continue
        lines = numbers_of(numbers, len(records))
        ids = np.fromiter((r.cycle_id for r in records), dtype=np.int64, count=len(records))
        ahead = np.flatnonzero(ids > last_cycle_id)
        end = len(records)
        if dropped_cycle_id is not None or ahead.size:
            at = 0 if dropped_cycle_id is not None else int(ahead[0])
            for index in range(at, len(records)):
                cycle, number = int(ids[index]), lines[index]
                if cycle > last_cycle_id + 1:
                    raise refused(
                        f"{positions_path} line {number}: cycle {cycle} is ahead of "
                        f"{metrics_path}, which ends at cycle {last_cycle_id}; was "
                        f"{METRICS_FILE} moved without {STATE_FILE}? Keep the files together"
                    )
                if cycle <= last_cycle_id:
                    raise refused(
                        f"{positions_path} line {number}: cycle {cycle} comes after "
                        f"lines of unfinished cycle {dropped_cycle_id}"
                    )
                if dropped_cycle_id is None:
                    dropped_first, dropped_cycle_id = number, cycle
                dropped_lines += 1
            end = at
        check.positions_block(lines[:end], records[:end], ids[:end], open_type)
        if history:
            finished.extend(records[:end])
        if first_later is None and end and ids[end - 1] > based:
            first_later = lines[int(np.argmax(ids[:end] > based))]
    check.finish(
        None if state is None else state.last_cycle_id,
        None if state is None else len(state.open_positions),
        state_path,
    )
    keep = len(positions_data) if dropped_first is None else line_offset(
        positions_data, dropped_first)
    if history:
        events = [event for event in finished if event.cycle_id > based]
    elif first_later is None:
        events = []
    else:
        start = line_offset(positions_data, first_later)
        events = [
            decode_line(_EVENT_DECODER, line, positions_path, number)
            for number, line in enumerate(positions_data[start:keep].split(b"\n")[:-1],
                                          first_later)
            if line.strip()
        ]
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
                f"leave {rebuilt} positions open, but {metrics_path} line {last_number} "
                f"records {last_metrics.open_positions}"
            )
    return _Scan(snapshot, keep, check.metrics_lines, check.positions_lines)


def _whole_lines(data: bytes) -> tuple[bytes, int]:
    """`data` up to its last newline, and how many bytes of a torn last line follow it."""
    if not data or data.endswith(b"\n"):
        return data, 0
    end = data.rfind(b"\n") + 1
    return data[:end], len(data) - end


def _read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror}") from None


def _read_if_present(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror}") from None


def _read_state(path: Path) -> _StateFile | None:
    data = _read_if_present(path)
    if not data:
        return None
    try:
        return _STATE_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise refused(f"{path}: {str(exc).replace('`', '')}") from None


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
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
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
