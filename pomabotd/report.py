"""Read a run's `metrics.jsonl` and `positions.jsonl` for `pomabotd report`, without touching them.

The files may belong to a daemon that is writing them right now, so they are read with the
ledger's own read-only reader (`pomabotd.output.read_ledger`): no lock, no repair, a last line
without its newline left out, and so are positions lines of a cycle whose metrics line has not
appeared yet (SPEC section 8: a reader never sees half a cycle).
"""

from __future__ import annotations

import math
from pathlib import Path

import msgspec

from pomabotd.domain.models import CloseEvent, Position
from pomabotd.errors import InputError, LedgerError
from pomabotd.output import METRICS_FILE, CycleMetrics, read_ledger

__all__ = ["RunFiles", "read_run", "realized_by_cycle", "starting_equity"]


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
    try:
        snapshot = read_ledger(directory, history=True)
    except LedgerError as exc:
        raise InputError(str(exc)) from None
    if not snapshot.cycles:
        raise InputError(f"{metrics_path} holds no finished cycle yet")
    return RunFiles(directory=str(directory), metrics=snapshot.cycles, events=snapshot.history)


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
