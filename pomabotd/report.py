"""Read a run's `metrics.jsonl` and `positions.jsonl` for `pomabotd report`, without touching them.

The files may belong to a daemon that is writing them right now, so they are read with the
ledger's own read-only reader (`pomabotd.output.read_ledger`): no lock, no repair, a last line
without its newline left out, and so are positions lines of a cycle whose metrics line has not
appeared yet (a reader never sees half a cycle).

The files may also have been rotated (`config/logrotate.conf`), so `metrics.jsonl` can start at
any cycle: the realized P&L curve starts from what its first line says was realized by then,
and adds the closes of `positions.jsonl` from there. `run_warnings` says when the two files do
not tell the same story (positions missing, or rotated apart from the metrics).
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path
from typing import Final

import msgspec

from pomabotd.domain.models import CloseEvent, Position
from pomabotd.errors import InputError, LedgerError
from pomabotd.output import METRICS_FILE, POSITIONS_FILE, CycleMetrics, read_ledger

__all__ = [
    "RunFiles",
    "read_run",
    "realized_by_cycle",
    "realized_steps",
    "run_warnings",
    "starting_equity",
]

#: Realized P&L figures are cents; closer than this they agree.
_CENT: Final = 0.005


class RunFiles(msgspec.Struct, frozen=True, kw_only=True):
    """The finished cycles of one output directory, in file order; `has_positions` says
    whether `positions.jsonl` exists at all."""

    directory: str
    metrics: tuple[CycleMetrics, ...]
    events: tuple[Position | CloseEvent, ...]
    has_positions: bool = True


def read_run(directory: Path) -> RunFiles:
    """Read the finished cycles of `directory`; InputError if it holds no run or a bad line."""
    metrics_path = directory / METRICS_FILE
    if not metrics_path.is_file():
        raise InputError(
            f"{directory} has no {METRICS_FILE}: point --out at the output directory of "
            "pomabotd run or run-once"
        )
    try:
        snapshot = read_ledger(directory, history=True)
    except LedgerError as exc:
        raise InputError(str(exc)) from None
    if not snapshot.cycles:
        raise InputError(f"{metrics_path} holds no finished cycle yet")
    return RunFiles(directory=str(directory), metrics=snapshot.cycles, events=snapshot.history,
                    has_positions=(directory / POSITIONS_FILE).is_file())


def starting_equity(run: RunFiles) -> float:
    """The paper portfolio's starting value, as the first finished cycle recorded it."""
    first = run.metrics[0]
    return round(first.equity_usd - first.realized_pnl_usd, 2)


def realized_by_cycle(run: RunFiles) -> list[float]:
    """Realized P&L at the end of each cycle of `metrics.jsonl`, in USD.

    It starts from what the first metrics line says was realized before that cycle's closes
    (a rotated file starts late: the closes before it are in that figure, not zero) and adds
    the closes of `positions.jsonl` cycle by cycle; closes of cycles before the first metrics
    line are in that starting figure already. Without `positions.jsonl` it is the metrics
    lines' own `realized_pnl_usd`.
    """
    if not run.has_positions:
        return [m.realized_pnl_usd for m in run.metrics]
    per_cycle = _closes_by_cycle(run)
    first = run.metrics[0]
    base = first.realized_pnl_usd - math.fsum(per_cycle.get(first.cycle_id, []))
    pnls: list[float] = [base]
    cumulative: list[float] = []
    for cycle in run.metrics:
        pnls.extend(per_cycle.get(cycle.cycle_id, []))
        cumulative.append(round(math.fsum(pnls), 2))
    return cumulative


def realized_steps(run: RunFiles) -> list[float]:
    """Realized P&L of each cycle's own closes, in USD. Without `positions.jsonl` it is the
    change of the metrics lines' `realized_pnl_usd`, unknown (NaN) for the first cycle."""
    if not run.has_positions:
        figures = [m.realized_pnl_usd for m in run.metrics]
        return [math.nan] + [round(b - a, 2) for a, b in pairwise(figures)]
    per_cycle = _closes_by_cycle(run)
    return [round(math.fsum(per_cycle.get(m.cycle_id, [])), 2) for m in run.metrics]


def run_warnings(run: RunFiles) -> list[str]:
    """What a reader of the plots should know: `positions.jsonl` is missing, or its closes do
    not add up to the realized P&L the metrics lines record (it starts after them, or was
    rotated apart from them), so the equity curve drawn from it is off from that cycle on."""
    if not run.has_positions:
        return [
            f"{run.directory} has no {POSITIONS_FILE}: the equity curve follows the "
            f"realized_pnl_usd of {METRICS_FILE}, without the positions' detail"
        ]
    for cycle, drawn in zip(run.metrics, realized_by_cycle(run), strict=True):
        if abs(drawn - cycle.realized_pnl_usd) > _CENT:
            return [
                f"{run.directory}: the closes in {POSITIONS_FILE} add up to {drawn:,.2f} USD "
                f"of realized P&L by cycle {cycle.cycle_id}, where {METRICS_FILE} says "
                f"{cycle.realized_pnl_usd:,.2f}: {POSITIONS_FILE} starts after {METRICS_FILE} "
                "or was rotated apart from it, and the equity curve is off from that cycle on"
            ]
    return []


def _closes_by_cycle(run: RunFiles) -> dict[int, list[float]]:
    per_cycle: dict[int, list[float]] = {}
    for event in run.events:
        if isinstance(event, CloseEvent):
            per_cycle.setdefault(event.cycle_id, []).append(event.pnl_usd)
    return per_cycle
