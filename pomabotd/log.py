"""The only place that configures loguru: log lines on stderr (and a file), nothing on stdout.

stdout belongs to command output (evaluations, JSON summaries) so it stays machine-readable.
Two line formats: `text` for people at a terminal, and `json` for journald and files people
tail: one flat JSON object per line with `time` (ISO 8601 UTC), `level`, `message` and the
event's own fields (whatever was bound with `logger.bind` or passed as keyword arguments),
never loguru's nested record. `auto` picks text on a terminal and JSON elsewhere, including
under systemd. Messages are always the caller's literal template: anything from outside (file
contents, exception text) is passed as an argument, never as the template.

Under systemd, when stderr is the journal's stream (`$JOURNAL_STREAM` names its device and
inode, as `sd_journal_stream_fd(3)` says to check), every line written there starts with its
sd-daemon priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug, ...; see
`sd-daemon(3)`), which journald strips and stores as the entry's priority: `journalctl -p
err` then finds the errors. Anywhere else (a terminal, a file, a pipe, stderr redirected by
a child of a service) lines carry no prefix.

A line repeated (same level, place and text, whether pomabotd's own or a library's through
`logging`, such as asyncio's) is written once per window (`log.repeat_window_s`, 10 s by
default; 0 writes every line): the first is written, the
rest are counted, and when the window closes one more line says how many were left out (the
same line with ` [repeated N more times in 10 s]` and the field `repeated`). A flood (a
descriptor shortage makes asyncio log on every failed accept) costs two lines per window.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from datetime import UTC
from typing import IO, TYPE_CHECKING, Any, Final

import msgspec
from loguru import logger

from pomabotd.errors import ConfigError

if TYPE_CHECKING:
    from loguru import Record

__all__ = [
    "REPEAT_WINDOW_S",
    "configure_logging",
    "journal_prefix",
    "json_line",
    "logger",
    "resolve_format",
    "stream_is_journal",
    "take_library_logs",
]

#: Seconds within which a repeated log line is counted instead of written.
REPEAT_WINDOW_S: Final = 10.0

_TEXT_FORMAT: Final = "{time:YYYY-MM-DDTHH:mm:ss.SSSZ} {level: <8} {message}"
#: A `-W` option for the helper processes multiprocessing starts (they get this process's
#: warning options): after a `kill -9` of pomabotd the resource tracker removes the semaphores
#: the pool left, and warns that they leaked, in plain text, on the stderr it shares with
#: pomabotd (the journal). The kill already says as much, and a non-JSON line would break
#: every `journalctl -o cat | jq` reader; the clean-up itself still happens.
_QUIET_RESOURCE_TRACKER: Final = "ignore::UserWarning:multiprocessing.resource_tracker"
_ENCODER: Final = msgspec.json.Encoder(enc_hook=str)
#: sd-daemon priorities by the least loguru level number they cover, highest first: CRITICAL
#: is crit (2), ERROR err (3), WARNING warning (4), SUCCESS notice (5), INFO info (6), DEBUG
#: and TRACE debug (7). A level of another number takes the priority of the level below it.
_PRIORITIES: Final = ((50, 2), (40, 3), (30, 4), (25, 5), (20, 6), (0, 7))
_open_files: list[IO[str]] = []


def resolve_format(log_format: str, stream: IO[str] | None = None) -> str:
    """`text` or `json` for `auto`: text only on a terminal that is not the journal."""
    if log_format != "auto":
        return log_format
    target = sys.stderr if stream is None else stream
    if stream_is_journal(target):
        return "json"
    try:
        return "text" if target.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def stream_is_journal(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (stderr by default) is the journal's stream: `$JOURNAL_STREAM`
    (`DEVICE:INODE`, set by systemd for a service whose output goes to the journal) names the
    file it is. The variable alone is not enough: a service's children inherit it with their
    output redirected elsewhere, and a terminal started by a user's systemd has it too."""
    device, sep, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (sep and device.isdigit() and inode.isdigit()):
        return False
    target = sys.stderr if stream is None else stream
    try:
        status = os.fstat(target.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def journal_prefix(level_no: int) -> str:
    """The sd-daemon priority prefix (`<3>`) of a line logged at loguru level `level_no`."""
    return next(f"<{priority}>" for least, priority in _PRIORITIES if level_no >= least)


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
        if key not in event and not key.startswith("_"):
            event[key] = value
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        event.setdefault("exception", f"{exception.type.__name__}: {exception.value}")
    return _ENCODER.encode(event) + b"\n"


class _TextSink:
    """Writes each formatted record as it is. Every sink here drops what comes after its
    stream was closed (a count of repeats written at exit, after a test's capture ended)
    instead of having loguru report each write that failed."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, message: Any) -> None:
        if not self._stream.closed:
            self._stream.write(str(message))
            self._stream.flush()


class _JsonSink:
    """Writes each record as one JSON line, in one write call, so lines never interleave;
    for the journal, after the record's priority prefix."""

    def __init__(self, stream: IO[str], journal: bool = False) -> None:
        self._stream = stream
        self._journal = journal

    def __call__(self, message: Any) -> None:
        if self._stream.closed:
            return
        record = message.record
        line = json_line(record).decode()
        if self._journal:
            line = journal_prefix(record["level"].no) + line
        self._stream.write(line)
        self._stream.flush()


class _JournalTextSink:
    """Writes each formatted text record to the journal, every line of it (a traceback spans
    several) behind the record's priority prefix, in one write call."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, message: Any) -> None:
        if self._stream.closed:
            return
        prefix = journal_prefix(message.record["level"].no)
        self._stream.write("".join(prefix + line for line in str(message).splitlines(True)))
        self._stream.flush()


class _Repeats:
    """Counts repeated records instead of letting them through; see the module docstring.

    `patch` sees every record once, before any sink, and marks a repeat (`_repeat` in its
    extra); `passes` is every sink's filter. The first repeat in a window starts a timer that
    writes the window's count when it closes (or at exit, whichever comes first).
    """

    _PRUNE_AT: Final = 256

    def __init__(self) -> None:
        self.window_s = REPEAT_WINDOW_S
        self._lock = threading.Lock()
        self._windows: dict[tuple[Any, ...], _Window] = {}

    def patch(self, record: Record) -> None:
        extra = record["extra"]
        if "repeated" in extra or self.window_s <= 0:
            return  # a window's own count, or every line is to be written
        key = (record["level"].no, record["name"], record["function"], record["line"],
               extra.get("logger"), record["message"])
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.opened >= self.window_s:
                self._windows[key] = _Window(now, record)
                self._prune(now)
                return
            window.count += 1
            extra["_repeat"] = True
            if window.count > 1:
                return
            window.timer = threading.Timer(window.opened + self.window_s - now, self.close,
                                           (key, window))
            window.timer.daemon = True
        window.timer.start()

    @staticmethod
    def passes(record: Record) -> bool:
        return not record["extra"].get("_repeat", False)

    def close(self, key: tuple[Any, ...], window: _Window) -> None:
        """End `window`, writing its count if anything was left out."""
        with self._lock:
            if self._windows.get(key) is window:
                del self._windows[key]
            count, window.count = window.count, 0
        if window.timer is not None:
            window.timer.cancel()
        if count:
            logger.bind(**window.extra, repeated=count).log(
                window.level, "{} [repeated {} more times in {:g} s]", window.message, count,
                self.window_s,
            )

    def close_all(self) -> None:
        """Write every open window's count now (at exit)."""
        with self._lock:
            windows = list(self._windows.items())
        for key, window in windows:
            self.close(key, window)

    def _prune(self, now: float) -> None:
        """Forget closed windows that counted nothing, once there are many."""
        if len(self._windows) < self._PRUNE_AT:
            return
        for key in [key for key, window in self._windows.items()
                    if not window.count and now - window.opened >= self.window_s]:
            del self._windows[key]


class _Window:
    """One line's window: when it opened, what the line said, how often it came again."""

    __slots__ = ("count", "extra", "level", "message", "opened", "timer")

    def __init__(self, opened: float, record: Record) -> None:
        self.opened = opened
        self.level: str = record["level"].name
        self.message: str = record["message"]
        self.extra = {k: v for k, v in record["extra"].items() if not k.startswith("_")}
        self.count = 0
        self.timer: threading.Timer | None = None


_repeats = _Repeats()
atexit.register(_repeats.close_all)


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


def take_library_logs(*names: str) -> None:
    """Send the records of libraries that install their own stderr handlers on import
    (`distributed`, `tornado`) the way of every other library's: through loguru, as
    `library_log` lines, at WARNING and above. Without this they would write plain text lines
    into a journal of JSON ones."""
    for name in names:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.setLevel(logging.WARNING)


def configure_logging(
    level: str = "INFO", log_format: str = "auto", file: str = "", *, origin: str = "",
    repeat_window_s: float = REPEAT_WINDOW_S,
) -> None:
    """Send records at `level` and above to stderr (and appended to `file`), replacing any
    earlier setup. Called again on reload, it also reopens the file, so rotation by renaming
    works. Records of the standard `logging` module go the same way. A line repeated within
    `repeat_window_s` is counted instead of written (see the module docstring).

    A `file` that cannot be opened raises ConfigError naming `log.file`, the path and
    `origin` (where the setting came from), and leaves the earlier setup in place.
    """
    if _QUIET_RESOURCE_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_RESOURCE_TRACKER)
    stream = None
    if file:
        try:
            stream = _open_for_append(file)
        except OSError as exc:
            where = f" (from {origin})" if origin else ""
            raise ConfigError(
                f"log.file {file!r}{where} cannot be opened: {exc.strerror or exc}"
            ) from None
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.WARNING, force=True)
    _repeats.window_s = repeat_window_s
    logger.configure(patcher=_repeats.patch)
    logger.remove()
    while _open_files:
        _open_files.pop().close()
    _add(sys.stderr, level, resolve_format(log_format, sys.stderr),
         journal=stream_is_journal(sys.stderr))
    if stream is not None:
        _open_files.append(stream)
        _add(stream, level, "json" if log_format == "auto" else log_format)


def _open_for_append(file: str) -> IO[str]:
    """`file` opened to append lines to. Opened non-blocking, so that a FIFO nobody reads is
    refused (ENXIO) instead of waiting for a reader; writes block as usual."""
    fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK,
                 0o666)
    os.set_blocking(fd, True)
    return open(fd, "a", encoding="utf-8", buffering=1)


def _add(stream: Any, level: str, resolved: str, *, journal: bool = False) -> None:
    if resolved == "json":
        logger.add(_JsonSink(stream, journal), level=level, format="{message}", colorize=False,
                   backtrace=False, diagnose=False, filter=_repeats.passes)
    else:
        logger.add(_JournalTextSink(stream) if journal else _TextSink(stream), level=level,
                   format=_TEXT_FORMAT, colorize=False, backtrace=False, diagnose=False,
                   filter=_repeats.passes)
