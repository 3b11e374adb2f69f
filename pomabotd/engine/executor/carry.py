"""Inputs carried to workers that cannot open them: each submission takes the bytes it needs.

A worker on another machine cannot open this process's descriptors, nor (unless they are on
shared storage) its files, nor lines a source made in memory. For such an input pomabotd reads,
for each submission, the byte ranges its tasks name and sends them with it (`Job.parts`), with
the tasks' ranges moved to where those bytes lie in what was sent. Memory stays flat: only the
submissions in flight are ever held, and each holds about its own share of the input.

A search task (`plan.py`) finds its signal lines itself, possibly beyond its window, so it is
sent its window plus a margin, marked as a part of a bigger input (`Cut`). If its run of lines
reaches the edge of what it was sent, the worker says so (`ChunkOut.short`) rather than guess,
and the task is sent again with a margin four times wider, until its run fits or it has the
whole input. The run it reports is moved back to the input's own offsets.
"""

from __future__ import annotations

from typing import Final

import msgspec

from pomabotd.engine.inputs import Reader, reader
from pomabotd.engine.protocol import Cut, InputRef, Job, Span, Task

__all__ = ["Parcel", "carry", "needs_carrying"]

#: The margin a search task is sent around its window at first (then 4, 16... times more).
_MARGIN: Final = 1 << 16
_MARKETS: Final = "carried:markets"
_SIGNALS: Final = "carried:signals"


class Parcel(msgspec.Struct, kw_only=True):
    """A submission as sent: its tasks and job with the bytes they need, and for each task
    whose result names a signal range (`ChunkOut.run`), how far to move it back."""

    tasks: list[Task]
    job: Job
    shifts: dict[int, int]


def needs_carrying(job: Job) -> bool:
    """True if a worker elsewhere cannot open one of the job's inputs."""
    return job.markets.local or job.signals.local


def carry(tasks: list[Task], job: Job, widen: int = 0) -> Parcel:
    """`tasks` and `job` with the bytes of every input the workers cannot open. A search or
    stray task goes alone; `widen` is how many times its margin was too narrow."""
    if any(task.search or task.stray for task in tasks) and len(tasks) > 1:
        raise ValueError("search and stray tasks are carried one at a time")
    markets = _Packer(reader(job.markets)) if job.markets.local else None
    signals = _Packer(reader(job.signals)) if job.signals.local else None
    shifts: dict[int, int] = {}
    sent: list[Task] = []
    for task in tasks:
        market_spans = task.markets if markets is None else markets.add_all(task.markets)
        signal_spans = task.signals
        if signals is not None and task.signals:
            if task.search:
                (window,) = task.signals
                signal_spans, shift = signals.add_window(window, _MARGIN << (2 * widen))
                shifts[task.index] = shift
            else:
                signal_spans = signals.add_all(task.signals)
                if task.stray:
                    shifts[task.index] = task.signals[0][0] - signal_spans[0][0]
        sent.append(msgspec.structs.replace(task, markets=market_spans, signals=signal_spans))
    parts: dict[str, bytes] = {}
    replaced: dict[str, InputRef] = {}
    for field, packer, path in (("markets", markets, _MARKETS), ("signals", signals, _SIGNALS)):
        if packer is not None:
            data = packer.data()
            parts[path] = data
            replaced[field] = InputRef(name=getattr(job, field).name, path=path,
                                       size=len(data), cut=packer.cut())
    return Parcel(tasks=sent, job=msgspec.structs.replace(job, parts=parts, **replaced),
                  shifts=shifts)


class _Packer:
    """The bytes of one input a submission needs, gathered in order."""

    def __init__(self, source: Reader) -> None:
        self._source = source
        self._parts: list[bytes] = []
        self._size = 0
        self._first = source.size
        self._last = source.start

    def add_all(self, spans: list[Span]) -> list[Span]:
        """Take each range whole; where each now lies."""
        return [self._add(start, end) for start, end in spans]

    def add_window(self, window: Span, margin: int) -> tuple[list[Span], int]:
        """Take a search window with `margin` on each side, cut at line starts; the window
        where it now lies, and how far to move a range found in it back."""
        source = self._source
        low, high = window
        start = source.start if low - margin <= source.start else source.line_start(low - margin)
        end = source.size if high + margin >= source.size else source.line_start(high + margin)
        at = self._add(start, end)[0]
        moved = (max(low, start) - start + at, min(high, end) - start + at)
        return [moved], start - at

    def _add(self, start: int, end: int) -> Span:
        data = self._source.read(start, end)
        at = self._size
        self._parts.append(data)
        self._size += len(data)
        self._first = min(self._first, start)
        self._last = max(self._last, end)
        return at, at + len(data)

    def data(self) -> bytes:
        """Everything taken, in order."""
        return b"".join(self._parts)

    def cut(self) -> Cut:
        """Whether the input's lines go on before and after what was taken."""
        source = self._source
        return Cut(before=self._first > source.start, after=self._last < source.size)
