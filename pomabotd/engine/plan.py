"""Plan a market-ordered input without reading it: pieces of market lines cut by bytes.

pomabotd only finds a line start near each cut (one small read per piece) and gives each piece
a window of the signals input, the same share of it as the piece's share of the markets; the
worker finds the run of signal lines about its markets in and around that window
(`pieces.py`). Planning a million markets thus costs pomabotd a few dozen reads, and it does no
work per market. `check_runs` then proves, from what the workers report, that the runs do not
overlap and that no market id repeats. Gaps between the runs are looked for again by the
pieces around them that found nothing (a guess that missed); what is still unclaimed then goes
to stray tasks, which count its lines, refuse those that name no market, and report the ids
they name: when none of those is a market of the input, every signal line reached the one
piece holding its market (or none), exactly as the line-by-line plan (`workload.py`) would
have routed it. Anything else sends the whole input to the line-by-line plan.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import pairwise
from typing import Final

import numpy as np
import numpy.typing as npt

from pomabotd.engine.inputs import Reader
from pomabotd.engine.protocol import ChunkOut, Span, Task

__all__ = [
    "MAX_PIECE_BYTES",
    "Gap",
    "check_runs",
    "plan_pieces",
    "retry_gaps",
    "stray_tasks",
    "strays_are_strangers",
]

#: The most market bytes one piece holds (about 16,000 compact markets).
MAX_PIECE_BYTES: Final = 4 << 20
#: Pieces per worker at least, so that the work spreads evenly and pipelines.
_PIECES_PER_WORKER: Final = 4
#: The sample read to estimate how long a market line is.
_SAMPLE: Final = 1 << 16
#: A window reaches this share of its own length beyond its guess on each side (and 4 kB).
_MARGIN_SHARE: Final = 4
_MIN_MARGIN: Final = 4096


class Gap:
    """Signal bytes `[start, end)` no piece claimed, and the pieces between the runs around it
    that found no run of their own: one of them must hold those lines."""

    __slots__ = ("end", "pieces", "start")

    def __init__(self, start: int, end: int, pieces: list[int]) -> None:
        self.start = start
        self.end = end
        self.pieces = pieces


def plan_pieces(
    markets: Reader,
    signals: Reader,
    *,
    workers: int,
    batch_size: int,
    keep: Collection[str] = (),
) -> list[Task]:
    """Search tasks covering the markets input, each with its window of the signals input.

    A piece holds at least `batch_size` markets (estimated from the first lines) and at most
    `MAX_PIECE_BYTES`, aiming at `_PIECES_PER_WORKER` pieces per worker.
    """
    start, size = markets.start, markets.size
    if size <= start:
        return []
    sample = markets.read(start, start + _SAMPLE)
    line_bytes = len(sample) / max(1, sample.count(b"\n"))
    lower = max(1.0, batch_size * line_bytes)
    target = int(min(MAX_PIECE_BYTES, max(lower, (size - start) / (max(1, workers) *
                                                                  _PIECES_PER_WORKER))))
    cuts = [start]
    while cuts[-1] < size:
        cuts.append(markets.line_start(cuts[-1] + target))
    held = frozenset(keep)
    signal_start, signal_size = signals.start, signals.size
    share = (signal_size - signal_start) / (size - start)
    tasks = []
    for index, (low, high) in enumerate(pairwise(cuts)):
        guess_low = signal_start + (low - start) * share
        guess_high = signal_start + (high - start) * share
        margin = max(_MIN_MARGIN, (guess_high - guess_low) / _MARGIN_SHARE)
        window = (max(signal_start, int(guess_low - margin)), int(guess_high + margin) + 1)
        tasks.append(
            Task(index=index, markets=[(low, high)], signals=[window], keep=held, search=True)
        )
    return tasks


def check_runs(outs: Sequence[ChunkOut], signals: Reader) -> list[Gap] | None:
    """The gaps left between the pieces' runs (none: the runs tile the signals input), each
    with the pieces between the runs around it that found no run (none may: a gap can hold
    lines about markets not in the input); or None when the runs cannot be right (they
    overlap, or a market id repeats) and the input must be planned line by line."""
    ordered = sorted(outs, key=lambda out: out.index)
    if _repeated_ids(ordered):
        return None
    gaps: list[Gap] = []
    cursor = signals.start
    waiting: list[int] = []
    for out in ordered:
        if out.run is None:
            waiting.append(out.index)
            continue
        low, high = out.run
        if low < cursor:
            return None
        if low > cursor:
            gaps.append(Gap(cursor, low, waiting))
        waiting = []
        cursor = high
    if cursor < signals.size:
        gaps.append(Gap(cursor, signals.size, waiting))
    return gaps


def retry_gaps(gaps: list[Gap], tasks: Sequence[Task]) -> list[Task]:
    """The pieces to run again, each with a gap it may fill as its window."""
    by_index = {task.index: task for task in tasks}
    again = []
    for gap in gaps:
        window: Span = (gap.start, gap.end)
        for index in gap.pieces:
            task = by_index[index]
            again.append(Task(index=index, markets=task.markets, signals=[window],
                              keep=task.keep, search=True))
    return again


def stray_tasks(gaps: list[Gap], signals: Reader, first: int) -> list[Task]:
    """Tasks (numbered from `first`) that take the lines of the gaps no piece filled, at most
    `MAX_PIECE_BYTES` each, cut at line starts."""
    tasks: list[Task] = []
    for gap in gaps:
        low = gap.start
        while low < gap.end:
            high = min(gap.end, signals.line_start(low + MAX_PIECE_BYTES))
            tasks.append(Task(index=first + len(tasks), markets=[], signals=[(low, high)],
                              stray=True))
            low = high
    return tasks


def strays_are_strangers(pieces: Sequence[ChunkOut], strays: Sequence[ChunkOut]) -> bool:
    """True if no line of the stray tasks names a market of the pieces (compared by hash: a
    collision only sends the input to the line-by-line plan)."""
    stray = _hashes(strays)
    return not len(stray) or not bool(np.isin(stray, _hashes(pieces)).any())


def _repeated_ids(outs: Sequence[ChunkOut]) -> bool:
    """True if any two market ids of the pieces share a hash (a repeat, or a collision that
    is sent to the line-by-line plan all the same)."""
    hashes = _hashes(outs)
    if len(hashes) < 2:
        return False
    ordered = np.sort(hashes)
    return bool((ordered[1:] == ordered[:-1]).any())


def _hashes(outs: Sequence[ChunkOut]) -> npt.NDArray[np.uint64]:
    """The market id hashes the tasks reported (`ChunkOut.keys`), in one array."""
    return np.frombuffer(b"".join(out.keys for out in outs), np.uint64)
