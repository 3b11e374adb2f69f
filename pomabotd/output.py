"""The JSON-lines ledger: `positions.jsonl` and `metrics.jsonl` in one output directory.

Crash safety (SPEC section 8) rests on one rule: a cycle's metrics line is written last and is
its commit marker. Positions lines are written with one `os.write` and synced before the metrics
line is written, so a metrics line on disk implies its positions lines are too. After a crash,
`Ledger.recover` cuts both files back to the last committed cycle (a torn last line, positions
of a cycle without a metrics line), so the next cycle appends cleanly and no finished cycle is
lost or repeated. Anything else unexpected refuses to continue rather than guess.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

import msgspec

from pomabotd.domain.models import CloseEvent, Position
from pomabotd.engine.metrics import CycleMetrics
from pomabotd.errors import LedgerError

__all__ = ["LOCK_FILE", "METRICS_FILE", "POSITIONS_FILE", "Ledger", "LedgerSnapshot"]

POSITIONS_FILE: Final = "positions.jsonl"
METRICS_FILE: Final = "metrics.jsonl"
LOCK_FILE: Final = ".lock"

_EVENT_DECODER: Final = msgspec.json.Decoder(Position | CloseEvent)
_METRICS_DECODER: Final = msgspec.json.Decoder(CycleMetrics)
_FILE_MODE: Final = 0o644

_T = TypeVar("_T")


class LedgerSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the ledger holds for finished cycles, and what recovery cut off.

    `truncated_bytes` counts the bytes removed from both files; `dropped_lines` the complete
    positions lines of the unfinished cycle `dropped_cycle_id` among them. The caller logs them.
    """

    events: tuple[Position | CloseEvent, ...]
    last_cycle_id: int
    last_metrics: CycleMetrics | None
    truncated_bytes: int = 0
    dropped_lines: int = 0
    dropped_cycle_id: int | None = None


class Ledger:
    """The single writer of one output directory, guarded by an exclusive `flock`.

    Use as a context manager, or call `close()`: closing releases the lock.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.positions_path = directory / POSITIONS_FILE
        self.metrics_path = directory / METRICS_FILE
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

    def recover(self) -> LedgerSnapshot:
        """Read both files back, cutting off anything after the last finished cycle.

        A line that is complete but not a valid record is a `LedgerError` naming the file and
        line: the user must fix or move the file.
        """
        self._check_open()
        metrics_data, metrics_cut = self._read_whole_lines(self.metrics_path, self._metrics_fd)
        last_metrics: CycleMetrics | None = None
        for number, _, line in _lines(metrics_data):
            record = _decode_line(_METRICS_DECODER, line, self.metrics_path, number)
            if last_metrics is not None and record.cycle_id <= last_metrics.cycle_id:
                raise LedgerError(
                    f"{self.metrics_path} line {number}: cycle_id {record.cycle_id} does not "
                    f"follow {last_metrics.cycle_id}; fix or move the file"
                )
            last_metrics = record
        last_cycle_id = 0 if last_metrics is None else last_metrics.cycle_id

        positions_data, positions_cut = self._read_whole_lines(
            self.positions_path, self._positions_fd
        )
        events: list[Position | CloseEvent] = []
        keep = len(positions_data)
        dropped_lines = 0
        dropped_cycle_id: int | None = None
        for number, offset, line in _lines(positions_data):
            event = _decode_line(_EVENT_DECODER, line, self.positions_path, number)
            if event.cycle_id > last_cycle_id + 1:
                raise LedgerError(
                    f"{self.positions_path} line {number}: cycle {event.cycle_id} is ahead of "
                    f"{self.metrics_path}, which ends at cycle {last_cycle_id}; was "
                    f"{METRICS_FILE} moved or rotated? Keep the two files together, or start "
                    "a new output directory"
                )
            if event.cycle_id > last_cycle_id:
                if dropped_cycle_id is None:
                    keep, dropped_cycle_id = offset, event.cycle_id
                dropped_lines += 1
            elif dropped_cycle_id is not None:
                raise LedgerError(
                    f"{self.positions_path} line {number}: cycle {event.cycle_id} comes after "
                    f"lines of unfinished cycle {dropped_cycle_id}; fix or move the file"
                )
            else:
                events.append(event)
        if keep < len(positions_data):
            _truncate(self._positions_fd, self.positions_path, keep)
            positions_cut += len(positions_data) - keep

        self._last_cycle_id = last_cycle_id
        return LedgerSnapshot(
            events=tuple(events),
            last_cycle_id=last_cycle_id,
            last_metrics=last_metrics,
            truncated_bytes=metrics_cut + positions_cut,
            dropped_lines=dropped_lines,
            dropped_cycle_id=dropped_cycle_id,
        )

    def append_cycle(self, events: Sequence[Position | CloseEvent], metrics: CycleMetrics) -> None:
        """Append one finished cycle: its positions lines, synced, then its metrics line.

        Runs `recover()` first if it has not run, so a cycle never lands after a torn one.
        If a write fails, both files are cut back to where they were and `LedgerError` says why.
        """
        self._check_open()
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
