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
from typing import Final, TypeVar

import msgspec

from pomabotd.domain.halt import HaltState
from pomabotd.domain.halt import recover as recover_halt
from pomabotd.domain.models import CloseEvent, Position
from pomabotd.domain.portfolio import HistoryError, LedgerState, replay_ledger
from pomabotd.errors import LedgerError
from pomabotd.sources.base import SourceStats

__all__ = [
    "LOCK_FILE",
    "METRICS_FILE",
    "POSITIONS_FILE",
    "STATE_FILE",
    "CycleMetrics",
    "Ledger",
    "LedgerSnapshot",
    "output_dir_problem",
    "read_ledger",
]

POSITIONS_FILE: Final = "positions.jsonl"
METRICS_FILE: Final = "metrics.jsonl"
STATE_FILE: Final = "state.json"
LOCK_FILE: Final = ".lock"

_FILE_MODE: Final = 0o644

_T = TypeVar("_T")


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
            raise LedgerError(str(exc)) from None
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
            raise LedgerError(str(exc)) from None


def read_ledger(directory: Path, *, history: bool = False) -> LedgerSnapshot:
    """Read an output directory without creating, locking or changing anything.

    A missing directory or file reads as empty; a torn last line and the lines of an
    unfinished cycle are skipped, as `Ledger.recover` would cut them, so this is safe on the
    files of a running daemon. `history` also keeps every finished cycle's lines (for
    reports); the daemon never needs them.
    """
    metrics = _read_if_present(directory / METRICS_FILE)
    positions = _read_if_present(directory / POSITIONS_FILE)
    scan = _scan(
        metrics[: metrics.rfind(b"\n") + 1],
        positions[: positions.rfind(b"\n") + 1],
        _read_state(directory / STATE_FILE),
        directory / METRICS_FILE,
        directory / POSITIONS_FILE,
        history=history,
    )
    return scan.snapshot


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
        """Read both files back, cutting off anything after the last finished cycle.

        A line that is complete but not a valid record is a `LedgerError` naming the file and
        line: the user must fix or move the file.
        """
        self._check_open()
        metrics_data, metrics_cut = self._read_whole_lines(self.metrics_path, self._metrics_fd)
        positions_data, positions_cut = self._read_whole_lines(
            self.positions_path, self._positions_fd
        )
        scan = _scan(
            metrics_data, positions_data, _read_state(self.state_path), self.metrics_path,
            self.positions_path,
        )
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

    def _read_whole_lines(self, path: Path, fd: int) -> tuple[bytes, int]:
        """The file up to its last newline; a torn last line is cut off the file itself."""
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise LedgerError(f"cannot read {path}: {exc.strerror}") from None
        end = data.rfind(b"\n") + 1
        if end == len(data):
            return data, 0
        _truncate(fd, path, end)
        return data[:end], len(data) - end


class _Scan(msgspec.Struct, frozen=True):
    snapshot: LedgerSnapshot
    positions_keep: int


def _scan(
    metrics_data: bytes,
    positions_data: bytes,
    state: _StateFile | None,
    metrics_path: Path,
    positions_path: Path,
    *,
    history: bool = False,
) -> _Scan:
    """Decode whole lines of both files after `state`; find where an unfinished cycle begins.

    With `history`, every finished cycle's lines are kept too, those before `state` included.
    """
    base = None if state is None else LedgerState(
        open_positions=state.open_positions,
        realized_pnl_usd=state.realized_pnl_usd,
        last_cycle_id=state.last_cycle_id,
    )
    based = 0 if base is None else base.last_cycle_id
    last_metrics: CycleMetrics | None = None
    cycles: list[CycleMetrics] = []
    later_cycles: list[int] = []
    later_halts: dict[int, str | None] = {}
    for number, _, line in _lines(metrics_data):
        record = _decode_line(_METRICS_DECODER, line, metrics_path, number)
        if last_metrics is not None and record.cycle_id <= last_metrics.cycle_id:
            raise LedgerError(
                f"{metrics_path} line {number}: cycle_id {record.cycle_id} does not "
                f"follow {last_metrics.cycle_id}; fix or move the file"
            )
        last_metrics = record
        if history:
            cycles.append(record)
        if record.cycle_id > based:
            later_cycles.append(record.cycle_id)
            if record.halted:
                later_halts[record.cycle_id] = record.halt_reason
    last_cycle_id = max(based, 0 if last_metrics is None else last_metrics.cycle_id)

    events: list[Position | CloseEvent] = []
    finished: list[Position | CloseEvent] = []  # with `history`: all of them, in file order
    keep = len(positions_data)
    dropped_lines = 0
    dropped_cycle_id: int | None = None
    for number, offset, line in _lines(positions_data):
        event = _decode_line(_EVENT_DECODER, line, positions_path, number)
        if event.cycle_id <= based:
            if history:
                finished.append(event)
            continue  # already in state.json
        if event.cycle_id > last_cycle_id + 1:
            raise LedgerError(
                f"{positions_path} line {number}: cycle {event.cycle_id} is ahead of "
                f"{metrics_path}, which ends at cycle {last_cycle_id}; was "
                f"{METRICS_FILE} moved without {STATE_FILE}? Keep the files together, or "
                "start a new output directory"
            )
        if event.cycle_id > last_cycle_id:
            if dropped_cycle_id is None:
                keep, dropped_cycle_id = offset, event.cycle_id
            dropped_lines += 1
        elif dropped_cycle_id is not None:
            raise LedgerError(
                f"{positions_path} line {number}: cycle {event.cycle_id} comes after "
                f"lines of unfinished cycle {dropped_cycle_id}; fix or move the file"
            )
        else:
            events.append(event)
            if history:
                finished.append(event)
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
    return _Scan(snapshot, keep)


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
        raise LedgerError(
            f"{path}: {str(exc).replace('`', '')}; fix or move the file"
        ) from None


def _lines(data: bytes) -> list[tuple[int, int, bytes]]:
    """Number the complete lines of `data` (1-based) with their byte offsets; skip blank ones."""
    numbered = []
    offset = 0
    for number, line in enumerate(data.split(b"\n")[:-1], 1):
        if line.strip():
            numbered.append((number, offset, line))
        offset += len(line) + 1
    return numbered


def _decode_line(decoder: msgspec.json.Decoder[_T], line: bytes, path: Path, number: int) -> _T:
    try:
        return decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise LedgerError(
            f"{path} line {number}: {str(exc).replace('`', '')}; fix or move the file"
        ) from None


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
