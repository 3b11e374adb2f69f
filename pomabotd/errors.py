"""The exceptions pomabotd raises; each message tells the user what to fix.

    PomabotdError
    ├── ConfigError          a bad key or value; names the key and its source (exit 2)
    ├── InputError           a bad markets/signals source as a whole (missing file, unreadable)
    ├── LedgerError          positions.jsonl / metrics.jsonl cannot be read back safely
    │   └── LedgerHistoryError   their history does not add up: refused (exit 2)
    ├── MissingExtraError    an optional feature's extra is not installed (exit 2)
    ├── FetchError           one request to an outside system failed after its retries
    ├── CycleError           a cycle could not complete (exit 1)
    │   ├── CycleTimeoutError    a cycle ran past `daemon.cycle_timeout_s` and was abandoned
    │   ├── PoolCrashLoopError   every rebuilt worker pool died at once
    │   └── SourceError          a source yielded nothing usable (unreachable, all refused)
    └── KernelInputError     input the columnar kernel does not evaluate exactly; the engine
                             evaluates it market by market instead, so users never see it

A single bad record is not an exception: it becomes a `Rejected` value with its line and field,
and the rest of the input still runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pomabotd.sources.base import SourceStats

__all__ = [
    "ConfigError",
    "CycleError",
    "CycleTimeoutError",
    "FetchError",
    "InputError",
    "KernelInputError",
    "LedgerError",
    "LedgerHistoryError",
    "MissingExtraError",
    "PomabotdError",
    "PoolCrashLoopError",
    "SourceError",
]


class PomabotdError(Exception):
    """Base of every error pomabotd raises on purpose."""


class ConfigError(PomabotdError):
    """A configuration key or value was refused."""


class InputError(PomabotdError):
    """An input source cannot be used at all."""

    @classmethod
    def unreadable(cls, path: object, exc: OSError) -> InputError:
        """Why the file at `path` could not be opened or read, in words naming it."""
        if isinstance(exc, FileNotFoundError):
            return cls(f"{path}: no such file")
        if isinstance(exc, IsADirectoryError):
            return cls(f"{path}: is a directory, expected a file")
        return cls(f"{path}: cannot be read ({exc.strerror})")


class LedgerError(PomabotdError):
    """The output directory holds files pomabotd cannot continue safely."""


class LedgerHistoryError(LedgerError):
    """The ledger's lines do not add up to a history its single writer could have written (a
    line that does not decode, one duplicated, deleted or moved, counts that disagree): it is
    refused, exit status 2, naming the file and line, and nothing is written until it is
    repaired."""


class MissingExtraError(PomabotdError):
    """An optional feature needs a package its extra installs; the message says which."""


class CycleError(PomabotdError):
    """A cycle failed as a whole."""


class CycleTimeoutError(CycleError):
    """A cycle ran past its deadline and was abandoned, nothing of it written; `phase` says
    where it was (`loading polymarket (...)`, `evaluating (...)`)."""

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class PoolCrashLoopError(CycleError):
    """The worker pool kept dying as soon as it was rebuilt."""


class KernelInputError(PomabotdError):
    """The columnar kernel was given what it does not evaluate exactly (repeated market ids,
    times too far apart); the scalar path evaluates it."""


class SourceError(CycleError):
    """A market or news source gave nothing the cycle can use; the next cycle tries again.

    `stats` holds what loading ran into before it gave up (failed fetches, failed feeds,
    refused records) and `source` the source's name, so that a failed cycle still counts
    them (`/metrics`).
    """

    def __init__(
        self, message: str, *, source: str | None = None, stats: SourceStats | None = None
    ) -> None:
        super().__init__(message)
        self.source = source
        self.stats = stats


class FetchError(PomabotdError):
    """One HTTP request or feed read failed for good: its retries, deadline or size cap ran out.

    A source that still has other pages or feeds counts it and goes on with what it has.
    `status` is the HTTP status of the last response, when there was one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
