"""What every command shares: the exit statuses, reading the configuration, `--as-of`, and
listing refused records.

Exit statuses: 0 success, 1 a failed cycle or check (`CycleFailure`), 2 bad usage or
configuration (`UsageFailure`), 128 + N when signal N stopped the command
(`pomabotd.cli.signals`). Only click is imported at module level (see `pomabotd.cli.base`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from pomabotd.config import Config
    from pomabotd.wire import Rejected

__all__ = [
    "REJECTED_SHOWN",
    "CycleFailure",
    "UsageFailure",
    "errors_as_exit_codes",
    "load_config",
    "now",
    "parse_as_of",
    "report_rejected",
]

#: `--as-of` years pomabotd accepts: far enough from datetime's limits for day arithmetic.
_EARLIEST_AS_OF = 1970
_LATEST_AS_OF = 9000
#: How many rejected records are listed one by one before the rest are only counted.
REJECTED_SHOWN = 20


class _Failure(click.ClickException):
    """An error a command ends with, shown as click shows it; on the journal's stream (a
    service's stderr) each line behind the error priority `<3>`, as log lines carry theirs,
    so that `journalctl -p err` finds why a service would not start."""

    def show(self, file: Any = None) -> None:
        """Write `Error: message` to stderr (or `file`)."""
        import logging

        from pomabotd.log import journal_prefix, stream_is_journal

        if file is not None or not stream_is_journal():
            super().show(file)
            return
        prefix = journal_prefix(logging.ERROR)
        text = f"Error: {self.format_message()}"
        click.echo("".join(prefix + line for line in text.splitlines(True)), err=True)


class UsageFailure(_Failure):
    """Bad usage or configuration: exit status 2."""

    exit_code = 2


class CycleFailure(_Failure):
    """A cycle or a check failed: exit status 1."""

    exit_code = 1


def now() -> datetime:
    """The current UTC time (the clock cycles run on)."""
    return datetime.now(UTC)


def parse_as_of(value: str | None) -> datetime | None:
    """The `--as-of` time, or None to let each cycle run as of its own start."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageFailure(
            f"--as-of {value!r} is not an ISO 8601 time, e.g. 2026-06-01T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        suggestion = parsed.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        raise UsageFailure(f"--as-of {value!r} needs a UTC offset, e.g. {suggestion}")
    if not _EARLIEST_AS_OF <= parsed.year <= _LATEST_AS_OF:
        raise UsageFailure(
            f"--as-of {value!r} is outside the years {_EARLIEST_AS_OF}-{_LATEST_AS_OF}"
        )
    return parsed.astimezone(UTC)


@contextmanager
def errors_as_exit_codes(*, input_is_usage: bool = False) -> Iterator[None]:
    """Turn pomabotd's typed errors into one-line messages with their exit statuses.

    An input that cannot be read fails a cycle (exit 1); for `replay` and `report`, whose
    input is the file the command line names, it is bad usage (exit 2). A ledger whose history
    does not add up is refused (exit 2): retrying cannot help (systemd's
    `RestartPreventExitStatus=2`).
    """
    from pomabotd.errors import ConfigError, InputError, LedgerHistoryError, PomabotdError

    try:
        yield
    except (ConfigError, LedgerHistoryError) as exc:
        raise UsageFailure(str(exc)) from None
    except InputError as exc:
        if input_is_usage:
            raise UsageFailure(str(exc)) from None
        raise CycleFailure(str(exc)) from None
    except PomabotdError as exc:
        raise CycleFailure(str(exc)) from None


def load_config(
    config_path: Path | None,
    flags: Mapping[str, Any],
    *,
    flag_names: Mapping[str, str] | None = None,
    settle_s: float = 0.0,
    reader: bool = False,
) -> Config:
    """The effective configuration (file, environment, these `flags`), with logging set up
    from it and its warnings logged; exit 2 naming the key when it is bad. `flag_names` spells
    a flag as this command does where it differs from the usual (`status --addr`); `settle_s`
    is `pomabotd.config.load`'s.

    `reader`: for a command that only reads a daemon's files or asks its address (`verify`,
    `report`, `resume`, `status`), which may be given the daemon's own configuration: its env
    file (root's alone on a service install: `BATCH_*` settings and secrets such as the
    webhook URL and the status token) is not read,
    its strategy plugin not imported (it may be importable only in the service's environment),
    and its log file not opened (this command logs to stderr).
    """
    from pomabotd.config import load
    from pomabotd.log import configure_logging, logger

    if reader:
        flags = {**flags, "daemon.env_file": ""}
    with errors_as_exit_codes():
        config = load(config_path, os.environ, flags, flag_names=flag_names, settle_s=settle_s,
                      import_evaluator=not reader)
        configure_logging(config.log.level, config.log.format,
                          "" if reader else config.log.file,
                          origin=config.source_phrase("log.file"),
                          repeat_window_s=config.log.repeat_window_s)
    for warning in config.warnings:
        logger.bind(event="config_warning").warning("{}", warning)
    return config


def report_rejected(rejected: Sequence[Rejected]) -> None:
    """List refused records on stderr, the first `REJECTED_SHOWN` one by one."""
    from pomabotd.words import plural

    for record in rejected[:REJECTED_SHOWN]:
        click.echo(f"rejected: {record}", err=True)
    if len(rejected) > REJECTED_SHOWN:
        more = plural(len(rejected) - REJECTED_SHOWN, "more record")
        click.echo(f"rejected: ... and {more}", err=True)
