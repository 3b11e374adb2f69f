"""Opening a local file the user named, without hanging on what is not a regular file.

Opening a FIFO for reading waits until something opens it for writing, which may be never,
and a character device may never end. So a file pomabotd reads on its own initiative (a
configuration or environment file, a feed, an input file) is opened non-blocking and checked
to be a regular file before a byte is read: anything else is refused with an `OSError` whose
`strerror` says what it is instead, which every caller turns into its own error naming the
file and the setting.

A read can still hang where no flag helps (a hard-mounted network file system that stopped
answering); callers run these functions off the event loop, with a deadline.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

__all__ = ["NotRegularFile", "open_regular", "read_regular"]

_KINDS: Final = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotRegularFile(OSError):
    """The path is a FIFO, socket or device, not a regular file; `strerror` says which."""


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of the regular file at `path`.

    Raises `IsADirectoryError` for a directory, `NotRegularFile` for anything else that is no
    regular file, or the `OSError` of opening it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file", str(path))
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise NotRegularFile(errno.EINVAL, f"is {kind}, not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The content of the regular file at `path` (`open_regular`'s errors), or its first
    `max_bytes + 1` bytes when `max_bytes` is given, so the caller can tell it is too big."""
    with open(open_regular(path), "rb", closefd=True) as handle:
        return handle.read() if max_bytes is None else handle.read(max_bytes + 1)

