"""The only place that configures loguru: log lines on stderr (and a file), nothing on stdout.

stdout belongs to command output (evaluations, JSON summaries) so it stays machine-readable.
Two line formats: `text` for people at a terminal, and `json` for journald and files people
tail: one flat JSON object per line with `time` (ISO 8601 UTC), `level`, `message` and the
event's own fields (whatever was bound with `logger.bind` or passed as keyword arguments),
never loguru's nested record. `auto` picks text on a terminal and JSON elsewhere, including
under systemd (`JOURNAL_STREAM`). Messages are always the caller's literal template: anything
from outside (file contents, exception text) is passed as an argument, never as the template.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC
from typing import IO, Any, Final

import msgspec
from loguru import logger

from pomabotd.errors import ConfigError

__all__ = ["configure_logging", "json_line", "logger", "resolve_format"]

_TEXT_FORMAT: Final = "{time:YYYY-MM-DDTHH:mm:ss.SSSZ} {level: <8} {message}"
#: A `-W` option for the helper processes multiprocessing starts (they get this process's
#: warning options): after a `kill -9` of pomabotd the resource tracker removes the semaphores
#: the pool left, and warns that they leaked, in plain text, on the stderr it shares with
#: pomabotd (the journal). The kill already says as much, and a non-JSON line would break
#: every `journalctl -o cat | jq` reader; the clean-up itself still happens.
_QUIET_RESOURCE_TRACKER: Final = "ignore::UserWarning:multiprocessing.resource_tracker"
_ENCODER: Final = msgspec.json.Encoder(enc_hook=str)
_open_files: list[IO[str]] = []


def resolve_format(log_format: str, stream: IO[str] | None = None) -> str:
    """`text` or `json` for `auto`: text only on a terminal and outside systemd."""
    if log_format != "auto":
        return log_format
    target = sys.stderr if stream is None else stream
    if os.environ.get("JOURNAL_STREAM"):
        return "json"
    try:
        return "text" if target.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def json_line(record: dict[str, Any]) -> bytes:
    """One loguru record as the flat JSON object of a log line (with its newline)."""
    event: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        ),
        "level": record["level"].name,
        "message": record["message"],
    }
    for key, value in record["extra"].items():
        if key not in event:
            event[key] = value
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        event.setdefault("exception", f"{exception.type.__name__}: {exception.value}")
    return _ENCODER.encode(event) + b"\n"


class _JsonSink:
    """Writes each record as one JSON line, in one write call, so lines never interleave."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, message: Any) -> None:
        self._stream.write(json_line(message.record).decode())
        self._stream.flush()


class _ToLoguru(logging.Handler):
    """Routes the standard library's log records (aiohttp's, for one) through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.bind(event="library_log", logger=record.name).opt(exception=record.exc_info).log(
            level, "{}", record.getMessage()
        )


def configure_logging(
    level: str = "INFO", log_format: str = "auto", file: str = "", *, origin: str = ""
) -> None:
    """Send records at `level` and above to stderr (and appended to `file`), replacing any
    earlier setup. Called again on reload, it also reopens the file, so rotation by renaming
    works. Records of the standard `logging` module go the same way.

    A `file` that cannot be opened raises ConfigError naming `log.file`, the path and
    `origin` (where the setting came from), and leaves the earlier setup in place.
    """
    if _QUIET_RESOURCE_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_RESOURCE_TRACKER)
    stream = None
    if file:
        try:
            stream = open(file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (kept open)
        except OSError as exc:
            where = f" (from {origin})" if origin else ""
            raise ConfigError(
                f"log.file {file!r}{where} cannot be opened: {exc.strerror or exc}"
            ) from None
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.WARNING, force=True)
    logger.remove()
    while _open_files:
        _open_files.pop().close()
    _add(sys.stderr, level, resolve_format(log_format, sys.stderr))
    if stream is not None:
        _open_files.append(stream)
        _add(stream, level, "json" if log_format == "auto" else log_format)


def _add(stream: Any, level: str, resolved: str) -> None:
    if resolved == "json":
        logger.add(_JsonSink(stream), level=level, format="{message}", colorize=False,
                   backtrace=False, diagnose=False)
    else:
        logger.add(stream, level=level, format=_TEXT_FORMAT, colorize=False,
                   backtrace=False, diagnose=False)
