"""Markets and signals from JSON-lines files (their fields: docs/files.md#inputs).

A file is handed to the engine as it is, unread (`LinesFile`): the engine's workers read it by
byte range and decode and validate its lines with the decoders of `pomabotd.wire`, so a big file
is never held whole by one process. Here it is only checked that it can be read, so that a
missing or unreadable file is reported by its path.
"""

from __future__ import annotations

import os
from pathlib import Path

from pomabotd.config import SourcesConfig
from pomabotd.domain.models import Market, Signal
from pomabotd.errors import InputError
from pomabotd.files import open_regular
from pomabotd.sources.base import FetchContext, Source, SourceBatch
from pomabotd.sources.offload import off_loop
from pomabotd.wire import LinesFile, Rejected, decode_markets, decode_signals

__all__ = [
    "JsonlMarkets",
    "JsonlSignals",
    "check_readable",
    "read_bytes",
    "read_markets",
    "read_signals",
]


def read_markets(path: Path) -> tuple[list[Market], list[Rejected]]:
    """Load a markets file; a missing or unreadable file is an `InputError`."""
    return decode_markets(read_bytes(path), str(path))


def read_signals(path: Path) -> tuple[list[Signal], list[Rejected]]:
    """Load a signals file; a missing or unreadable file is an `InputError`."""
    return decode_signals(read_bytes(path), str(path))


def read_bytes(path: Path) -> bytes:
    """Read a whole input file, turning OS errors into a message that names the path."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError.unreadable(path, exc) from None


def check_readable(path: Path) -> LinesFile:
    """The file, once it is known to be a readable regular file (a FIFO is refused without
    waiting for a writer); else an `InputError` that names the path."""
    try:
        os.close(open_regular(path))
    except OSError as exc:
        raise InputError.unreadable(path, exc) from None
    return LinesFile(str(path))


class JsonlMarkets(Source):
    """`sources.markets = PATH`: a markets file, read whole each cycle."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._path = path

    @classmethod
    def from_config(cls, argument: str, config: SourcesConfig) -> JsonlMarkets:
        """The file `sources.markets` names."""
        return cls(Path(argument))

    async def fetch(self, context: FetchContext) -> SourceBatch:
        """The file, unread (only checked off the event loop); the engine's workers read and
        validate it."""
        return SourceBatch(markets=await off_loop(check_readable, self._path))


class JsonlSignals(Source):
    """`sources.signals = PATH`: a signals file, read whole each cycle."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._path = path

    @classmethod
    def from_config(cls, config: SourcesConfig) -> JsonlSignals:
        """The file `sources.signals` names."""
        return cls(Path(config.signals))

    async def fetch(self, context: FetchContext) -> SourceBatch:
        """The file, unread (only checked off the event loop); the engine's workers read and
        validate it."""
        return SourceBatch(signals=await off_loop(check_readable, self._path))
