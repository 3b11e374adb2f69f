"""Read a run's `metrics.jsonl` and `positions.jsonl` for `pomabotd report`, without touching them.

The files may belong to a daemon that is writing them right now, so this reader takes no lock
and repairs nothing: a last line without its newline is still being written and is left out,
and so are positions lines of a cycle whose metrics line has not appeared yet (SPEC section 8:
a reader never sees half a cycle).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from pomabotd.domain.models import CloseEvent, Position
from pomabotd.errors import InputError
from pomabotd.output import METRICS_FILE, POSITIONS_FILE, CycleMetrics

__all__ = ["RunFiles", "read_run", "realized_by_cycle", "starting_equity"]

_METRICS: Final = msgspec.json.Decoder(CycleMetrics)
_EVENTS: Final = msgspec.json.Decoder(Position | CloseEvent)
_T = TypeVar("_T")


class RunFiles(msgspec.Struct, frozen=True, kw_only=True):
    """The finished cycles of one output directory, in file order."""

    directory: str
    metrics: tuple[CycleMetrics, ...]
    events: tuple[Position | CloseEvent, ...]


def read_run(directory: Path) -> RunFiles:
    """Read the finished cycles of `directory`; InputError if it holds no run or a bad line."""
    metrics_path = directory / METRICS_FILE
    if not metrics_path.is_file():
        raise InputError(
            f"{directory} has no {METRICS_FILE}: point --from at the output directory of "
            "pomabotd run or run-once"
        )
    metrics = _read(metrics_path, _METRICS)
    if not metrics:
        raise InputError(f"{metrics_path} holds no finished cycle yet")
    last_cycle = metrics[-1].cycle_id
    positions_path = directory / POSITIONS_FILE
    events = _read(positions_path, _EVENTS) if positions_path.is_file() else []
    return RunFiles(
        directory=str(directory),
        metrics=tuple(metrics),
        events=tuple(e for e in events if e.cycle_id <= last_cycle),
    )


def starting_equity(run: RunFiles) -> float:
    """The paper portfolio's starting value, as the first finished cycle recorded it."""
    first = run.metrics[0]
    return round(first.equity_usd - first.realized_pnl_usd, 2)


def realized_by_cycle(run: RunFiles) -> list[float]:
    """Realized P&L from `positions.jsonl` closes, cumulated to the end of each cycle of
    `metrics.jsonl`, in USD."""
    per_cycle: dict[int, list[float]] = {}
    for event in run.events:
        if isinstance(event, CloseEvent):
            per_cycle.setdefault(event.cycle_id, []).append(event.pnl_usd)
    cumulative: list[float] = []
    closes = sorted(per_cycle.items())
    taken = 0
    pnls: list[float] = []
    for cycle in run.metrics:
        while taken < len(closes) and closes[taken][0] <= cycle.cycle_id:
            pnls.extend(closes[taken][1])
            taken += 1
        cumulative.append(round(math.fsum(pnls), 2))
    return cumulative


def _read(path: Path, decoder: msgspec.json.Decoder[_T]) -> list[_T]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    lines = data.split(b"\n")
    records: list[_T] = []
    for number, line in enumerate(lines[:-1], start=1):  # the last piece has no newline yet
        if not line.strip():
            continue
        try:
            records.append(decoder.decode(line))
        except msgspec.DecodeError as exc:
            raise InputError(f"{path} line {number}: {exc}") from None
    return records
