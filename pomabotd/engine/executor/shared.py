"""Inputs shared with workers on this machine: through this process's open descriptors.

pomabotd holds each input of a run open (`engine/inputs.py`). Workers on this machine open the
very same file through `/proc/PID/fd/N` (a file renamed over while the cycle runs does not
change what they read) and `pread` the ranges of their tasks, so the input never goes through a
pipe and no process holds more of it than its task. Lines a source made in memory are first
copied into a memory file (`memfd`), which the workers open the same way.

Memory files are memory that no process maps, so no PSS figure shows them:
`memory_file_bytes` is what the meter adds for them.
"""

from __future__ import annotations

import os

from pomabotd.engine.executor.base import Sharing

__all__ = ["HERE", "ON_SHARED_STORAGE", "ON_THIS_MACHINE", "memory_file_bytes"]

#: Bytes of the memory files open now, by descriptor.
_MEMORY_FILES: dict[int, int] = {}


def memory_file_bytes() -> int:
    """Memory held in memory files for the workers: no process maps it, so no PSS shows it."""
    return sum(_MEMORY_FILES.values())


class _Here:
    """Workers are this process: nothing is shared, everything is read where it is held."""

    def file_path(self, fd: int, path: str | None) -> str | None:
        return None

    def same_file(self) -> bool:
        return True

    def hold(self, data: bytes) -> int | None:
        return None

    def drop(self, fd: int) -> None:
        os.close(fd)


class _ThisMachine:
    """Workers are processes of this machine, run by this user: they open `/proc/PID/fd/N`."""

    def file_path(self, fd: int, path: str | None) -> str | None:
        return f"/proc/{os.getpid()}/fd/{fd}"

    def same_file(self) -> bool:
        return True

    def hold(self, data: bytes) -> int | None:
        fd = os.memfd_create("pomabotd-input", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            written = 0
            while written < len(data):
                written += os.write(fd, view[written:])
        except BaseException:
            os.close(fd)
            raise
        _MEMORY_FILES[fd] = len(data)
        return fd

    def drop(self, fd: int) -> None:
        _MEMORY_FILES.pop(fd, None)
        os.close(fd)


class _SharedStorage:
    """Workers on other machines see the input files at the same absolute paths (a network
    file system); lines made in memory are carried to them."""

    def file_path(self, fd: int, path: str | None) -> str | None:
        return None if path is None else os.path.abspath(path)

    def same_file(self) -> bool:
        return False

    def hold(self, data: bytes) -> int | None:
        return None

    def drop(self, fd: int) -> None:
        os.close(fd)


HERE: Sharing = _Here()
ON_THIS_MACHINE: Sharing = _ThisMachine()
ON_SHARED_STORAGE: Sharing = _SharedStorage()
