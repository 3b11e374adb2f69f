"""`pomabotd resume`: a request, left in the output directory, to lift the halt at the next cycle.

The request is one small file, `resume.request`, written aside and renamed into place. Whatever
runs the next cycle on the directory (a running daemon, or the next `run` or `run-once`) reads
it before it selects, lifts a halt in force, and removes the file once that cycle is written; a
cycle that fails leaves it for the next one. A file rather than an HTTP call: it works the same
whether a daemon is running or not, needs no listening port that anyone on the host could
post to, and the directory's permissions decide who may ask. The request carries no meaning in
its content beyond who wrote it and when: its presence is the request, and its bytes identify it,
so a request written while a cycle runs is not removed by that cycle.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path
from typing import Final

import msgspec

from pomabotd.errors import InputError, LedgerError
from pomabotd.files import read_regular
from pomabotd.output import METRICS_FILE, read_ledger

__all__ = [
    "RESUME_FILE",
    "ResumeOutcome",
    "ResumeRequest",
    "clear_resume",
    "pending_resume",
    "request_resume",
]

RESUME_FILE: Final = "resume.request"
_FILE_MODE: Final = 0o644


class ResumeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What `resume.request` holds: when it was asked for, and by which process."""

    requested_at: datetime
    pid: int


class ResumeOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What `request_resume` found and did: whether the directory was halted (and why), and
    whether a request was left for the next cycle."""

    directory: str
    halted: bool
    reason: str | None
    since_cycle: int | None
    requested: bool


def request_resume(directory: Path, now: datetime) -> ResumeOutcome:
    """Leave a resume request in `directory` if its last finished cycle left it halted.

    Reads the directory without locking it, so it works while a daemon writes there. A
    directory without `metrics.jsonl` is an InputError; a request that cannot be written a
    LedgerError.
    """
    if not (directory / METRICS_FILE).is_file():
        raise InputError(
            f"{directory} has no {METRICS_FILE}: point --out at the output directory of "
            "pomabotd run or run-once"
        )
    try:
        halt = read_ledger(directory).halt_state()
    except LedgerError as exc:
        raise InputError(str(exc)) from None
    if not halt.halted:
        return ResumeOutcome(
            directory=str(directory), halted=False, reason=None, since_cycle=None,
            requested=False,
        )
    request = ResumeRequest(requested_at=now, pid=os.getpid())
    path = directory / RESUME_FILE
    aside = path.with_name(f".{RESUME_FILE}.{os.getpid()}.tmp")
    try:
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
        try:
            os.write(fd, msgspec.json.encode(request) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(aside, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            aside.unlink()
        raise LedgerError(f"cannot write {path}: {exc.strerror}") from None
    return ResumeOutcome(
        directory=str(directory), halted=True, reason=halt.reason, since_cycle=halt.since_cycle,
        requested=True,
    )


def pending_resume(directory: Path) -> bytes | None:
    """The bytes of the pending request in `directory`, or None when there is none;
    LedgerError when it cannot be read (or is no regular file)."""
    try:
        return read_regular(directory / RESUME_FILE)  # a FIFO there is refused, not waited on
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LedgerError(f"cannot read {directory / RESUME_FILE}: {exc.strerror}") from None


def clear_resume(directory: Path, token: bytes) -> None:
    """Remove the request a cycle acted on, unless a newer one replaced it meanwhile."""
    if pending_resume(directory) != token:
        return
    try:
        (directory / RESUME_FILE).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise LedgerError(f"cannot remove {directory / RESUME_FILE}: {exc.strerror}") from None
