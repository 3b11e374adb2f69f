"""A cycle's inputs, held open by pomabotd and read by byte range wherever the work runs.

pomabotd opens each input once per run (`Inputs`): a file source's file, or the lines a source
made in memory. How the executor's workers reach them is the executor's `Sharing`: they may
open a path to the very same file and read the ranges of their tasks themselves (pomabotd
never sends such an input through a pipe, and no process holds more of it than its task), or
the executor carries the bytes to them. Work done in pomabotd's own process reads the bytes or
the descriptor it already has.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import stat
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Final

from pomabotd.engine.executor.base import Sharing
from pomabotd.engine.protocol import Cut, InputRef, Span
from pomabotd.errors import InputError
from pomabotd.wire import Lines, LinesFile

__all__ = ["Inputs", "Reader", "given", "reader", "release_readers"]

_BOM: Final = b"\xef\xbb\xbf"
#: Up to this many ranges are read one system call each; more are sliced from a map.
_FEW_SPANS: Final = 8
_numbers = itertools.count()
#: Inputs this process opened, by `InputRef.path`: their bytes, or their descriptor.
_LOCAL: dict[str, bytes | int] = {}


class Reader:
    """Reads byte ranges of one input (or of the part of it carried here, when `cut`)."""

    __slots__ = ("_data", "_fd", "_map", "cut", "name", "size", "start")

    def __init__(
        self, data: bytes | None, fd: int, size: int, name: str = "input", cut: Cut | None = None
    ) -> None:
        self._data = data
        self._fd = fd
        self.name = name
        self._map: mmap.mmap | None = None
        self.size = size
        #: Set on a part of an input carried here: whether its lines go on before and after.
        self.cut = cut
        head = data[:3] if data is not None else os.pread(fd, 3, 0)
        #: Where the first line starts: past a UTF-8 byte order mark, if there is one (a
        #: carried part starts at a line).
        self.start = len(_BOM) if head == _BOM and cut is None else 0

    def read(self, start: int, end: int) -> bytes:
        """Bytes `[start, end)` (clipped to the input as planned). InputError if the file
        has become shorter than that: a cycle never runs on part of what it planned."""
        end = min(end, self.size)
        if end <= start:
            return b""
        if self._data is not None:
            return self._data[start:end]
        parts = []
        while start < end:
            part = os.pread(self._fd, end - start, start)
            if not part:
                raise InputError(f"{self.name}: changed while the cycle was reading it (cut "
                                 f"short at byte {start:,} of {self.size:,})")
            parts.append(part)
            start += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def join(self, spans: list[Span]) -> bytes:
        """The lines of several ranges, in order, as one block of lines. Many ranges (signals
        routed line by line) are sliced from a read-only map of the input, not read one system
        call each."""
        if len(spans) == 1:
            return _strip(self.read(*spans[0]))
        if len(spans) <= _FEW_SPANS or self._data is not None or self.size == 0:
            return b"\n".join(_strip(self.read(start, end)) for start, end in spans)
        if self._map is None:
            self._map = mmap.mmap(self._fd, self.size, prot=mmap.PROT_READ)
        view = self._map
        return b"\n".join(_strip(view[start:end]) for start, end in spans)

    def close(self) -> None:
        """Unmap the input if it was mapped (the descriptor is the owner's)."""
        if self._map is not None:
            self._map.close()
            self._map = None

    def line_start(self, offset: int) -> int:
        """The start of the first line at or after `offset` (the input's size past the end)."""
        if offset <= self.start:
            return self.start
        step = 4096
        at = offset - 1
        while at < self.size:
            block = self.read(at, at + step)
            found = block.find(b"\n")
            if found >= 0:
                return at + found + 1
            at += len(block)
            step *= 4
        return self.size


def _strip(data: bytes) -> bytes:
    """A range without its final newline, so that ranges join with one newline each."""
    return data[:-1] if data.endswith(b"\n") else data


#: Inputs this process opened by path for the submission it runs (`release_readers`).
_OPEN: dict[tuple[str, int, int, int], Reader] = {}


def reader(ref: InputRef) -> Reader:
    """A reader of `ref`: the process's own copy if it opened it, else the file it names,
    opened once and kept for the next tasks until `release_readers`. A file that is not the
    one planned (another inode or, where it can be compared, device; or shorter) is an
    `InputError`."""
    local = _LOCAL.get(ref.path)
    if local is not None:
        if isinstance(local, bytes):
            return Reader(local, -1, ref.size, ref.name, ref.cut)
        return Reader(None, local, ref.size, ref.name)
    key = (ref.path, ref.dev, ref.ino, ref.size)
    found = _OPEN.get(key)
    if found is not None:
        return found
    try:
        fd = os.open(ref.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"{ref.name}: cannot be read by a worker ({exc.strerror})") from None
    status = os.fstat(fd)
    same = status.st_ino == ref.ino and (not ref.dev or status.st_dev == ref.dev)
    if not same or status.st_size < ref.size:
        os.close(fd)
        raise InputError(f"{ref.name}: changed while the cycle was reading it")
    opened = _OPEN[key] = Reader(None, fd, ref.size, ref.name)
    return opened


@contextlib.contextmanager
def given(parts: Mapping[str, bytes]) -> Iterator[None]:
    """Input bytes carried to this process (`Job.parts`), read by `reader` under their paths
    while the block runs."""
    for path, data in parts.items():
        _LOCAL[path] = data
    try:
        yield
    finally:
        for path in parts:
            _LOCAL.pop(path, None)


def release_readers() -> None:
    """Close every input `reader` opened: a worker holds no cycle's input (a copy pomabotd
    dropped would stay alive, uncounted, for as long as a worker held it open)."""
    while _OPEN:
        _, old = _OPEN.popitem()
        old.close()
        os.close(old._fd)


class Inputs:
    """One run's markets and signals, open for as long as the run lasts, shared with the
    workers as `sharing` says."""

    def __init__(
        self,
        markets: Lines,
        markets_source: str,
        signals: Lines,
        signals_source: str,
        *,
        sharing: Sharing,
    ) -> None:
        self._sharing = sharing
        self._fds: list[int] = []
        self._held: list[int] = []
        self._paths: list[str] = []
        self._bytes: dict[str, bytes] = {}
        try:
            self.markets = self._open(markets, markets_source)
            self.signals = self._open(signals, signals_source)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Inputs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def data(self, ref: InputRef) -> bytes:
        """The whole of one input, for planning line by line (read from its file if need be)."""
        held = self._bytes.get(ref.path)
        if held is not None:
            return held
        return reader(ref).read(0, ref.size)

    def close(self) -> None:
        """Release the descriptors and the copies."""
        for path in self._paths:
            _LOCAL.pop(path, None)
        for fd in self._fds:
            os.close(fd)
        for fd in self._held:
            self._sharing.drop(fd)
        self._fds.clear()
        self._held.clear()
        self._paths.clear()
        self._bytes.clear()

    def _open(self, lines: Lines, name: str) -> InputRef:
        if isinstance(lines, LinesFile):
            try:
                fd = os.open(lines.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise InputError.unreadable(lines.path, exc) from None
            self._fds.append(fd)
            return self._register(fd, name, lines.path)
        held = self._sharing.hold(lines)
        if held is None:
            path = f"memory:{os.getpid()}:{next(_numbers)}"
            _LOCAL[path] = lines
            self._paths.append(path)
            self._bytes[path] = lines
            return InputRef(name=name, path=path, size=len(lines), local=True)
        self._held.append(held)
        ref = self._register(held, name, None)
        self._bytes[ref.path] = lines
        return ref

    def _register(self, fd: int, name: str, opened: str | None) -> InputRef:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise InputError(f"{name}: is not a regular file")
        shared = self._sharing.file_path(fd, opened)
        path = shared or f"file:{os.getpid()}:{next(_numbers)}"
        _LOCAL[path] = fd
        self._paths.append(path)
        same = self._sharing.same_file()
        return InputRef(
            name=name, path=path, size=status.st_size,
            dev=status.st_dev if same else 0, ino=status.st_ino, local=shared is None,
        )
