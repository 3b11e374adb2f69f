"""PNG plots of a replay and of a run's files, drawn with matplotlib's Agg backend.

matplotlib is an optional extra (`pip install 'pomabotd[plots]'`): it is imported only when a
plot is drawn, so everything else works without it, and `require_matplotlib` lets a command
refuse early, before any work, when it is missing. Figures are built on their own Agg canvas,
never through pyplot, so no global state or display is involved. Every axis names its unit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pomabotd.domain.research import CategoryScorecard
from pomabotd.errors import MissingExtraError
from pomabotd.replay.run import ReplayReport
from pomabotd.report import RunFiles, realized_by_cycle, realized_steps, starting_equity

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "INSTALL_HINT",
    "calibration_figure",
    "cycles_figure",
    "equity_figure",
    "pnl_by_category_figure",
    "positions_figure",
    "replay_plots",
    "require_matplotlib",
    "run_plots",
]

INSTALL_HINT: Final = "pip install 'pomabotd[plots]'"
_SIZE: Final = (9.0, 6.0)
_DPI: Final = 100
_GAIN: Final = "#2a7a3b"
_LOSS: Final = "#b23a2e"
_LINE: Final = "#1f5a96"
_MUTED: Final = "#8a8a8a"


def require_matplotlib() -> None:
    """Raise MissingExtraError, saying how to install it, unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"plots need matplotlib, which is not installed ({exc}): {INSTALL_HINT}"
        ) from None


def replay_plots(report: ReplayReport, directory: Path) -> list[Path]:
    """Write `calibration.png` and `pnl_by_category.png` for a replay; return their paths."""
    return _save(directory, {
        "calibration.png": lambda: calibration_figure(report),
        "pnl_by_category.png": lambda: pnl_by_category_figure(report),
    })


def run_plots(run: RunFiles, directory: Path) -> list[Path]:
    """Write `cycles.png`, `positions.png` and `equity.png` for a run; return their paths."""
    return _save(directory, {
        "cycles.png": lambda: cycles_figure(run),
        "positions.png": lambda: positions_figure(run),
        "equity.png": lambda: equity_figure(run),
    })


def calibration_figure(report: ReplayReport) -> Figure:
    """Predicted YES probability (belief midpoint) against the observed YES frequency, per
    10-point bucket, with each bucket's count."""
    figure, (curve, counts) = _figure(2, height_ratios=(3, 1))
    filled = [b for b in report.calibration if b.count and b.predicted is not None
              and b.observed is not None]
    curve.plot([0, 100], [0, 100], linestyle="--", color=_MUTED, label="perfect calibration")
    curve.plot(
        [(b.predicted or 0.0) * 100 for b in filled],
        [(b.observed or 0.0) * 100 for b in filled],
        marker="o", color=_LINE, label="replayed markets",
    )
    for b in filled:
        curve.annotate(f"n={b.count}", ((b.predicted or 0.0) * 100, (b.observed or 0.0) * 100),
                       textcoords="offset points", xytext=(6, -12), fontsize=8)
    curve.set(xlim=(0, 100), ylim=(-4, 104),
              xlabel="predicted YES probability: belief midpoint (%)",
              ylabel="observed YES frequency (%)")
    curve.set_title(
        f"Calibration {report.as_of_days_before} days before closing: {report.markets} markets, "
        f"Brier {_number(report.brier, 4)}"
    )
    curve.legend(loc="upper left")
    curve.grid(alpha=0.3)
    centres = [(b.low + b.high) / 2 for b in report.calibration]
    counts.bar(centres, [b.count for b in report.calibration], width=8.0, color=_LINE)
    counts.set(xlim=(0, 100), xlabel="belief midpoint bucket (%)", ylabel="markets (count)")
    counts.grid(alpha=0.3, axis="y")
    return figure


def pnl_by_category_figure(report: ReplayReport) -> Figure:
    """Realized P&L of the selected portfolio, and P&L per unit stake of every tradeable
    evaluation, per category."""
    figure, (realized, per_unit) = _figure(2)
    names = list(report.by_category)
    figures: list[CategoryScorecard] = list(report.by_category.values())
    _bars(realized, names, [f.realized_pnl_usd for f in figures],
          [f"{f.selected} pos." for f in figures])
    realized.set(ylabel="realized P&L (USD)")
    realized.set_title(
        f"Selected portfolio: {report.selected} positions, realized "
        f"${report.realized_pnl_usd:,.2f} ({report.return_on_equity_pct:+.2f}% of equity)"
    )
    _bars(per_unit, names, [f.pnl_per_unit or 0.0 for f in figures],
          [f"n={f.tradeable}" for f in figures])
    per_unit.set(xlabel="category", ylabel="P&L per unit stake (USD per USD)")
    per_unit.set_title(f"Every tradeable evaluation: {report.tradeable}, held to resolution")
    return figure


def cycles_figure(run: RunFiles) -> Figure:
    """Markets and throughput per cycle."""
    figure, (markets, speed) = _figure(2)
    ids = [m.cycle_id for m in run.metrics]
    markets.plot(ids, [m.markets_total for m in run.metrics], marker="o", color=_LINE,
                 label="markets_total")
    markets.plot(ids, [m.markets_evaluated for m in run.metrics], marker=".",
                 linestyle="--", color=_GAIN, label="markets_evaluated")
    markets.set(ylabel="markets (count)")
    markets.set_title(f"{run.directory}: {len(ids)} cycles")
    markets.legend(loc="best")
    speed.plot(ids, [m.throughput_per_s for m in run.metrics], marker="o", color=_LINE)
    speed.set(xlabel="cycle (id)", ylabel="throughput (markets/s)")
    _integer_x(markets, speed)
    return figure


def positions_figure(run: RunFiles) -> Figure:
    """Positions opened (selected) and held open after each cycle."""
    figure, (axes,) = _figure(1)
    ids = [m.cycle_id for m in run.metrics]
    axes.bar(ids, [m.selected for m in run.metrics], width=0.6, color=_GAIN, label="selected")
    axes.plot(ids, [m.open_positions for m in run.metrics], marker="o", color=_LINE,
              label="open_positions")
    axes.set(xlabel="cycle (id)", ylabel="positions (count)")
    axes.set_title("Positions selected and open per cycle")
    axes.legend(loc="best")
    _integer_x(axes)
    return figure


def equity_figure(run: RunFiles) -> Figure:
    """Equity (starting value plus realized P&L) and realized P&L per cycle, from the closes in
    `positions.jsonl`."""
    figure, (curve, pnl) = _figure(2)
    ids = [m.cycle_id for m in run.metrics]
    realized = realized_by_cycle(run)
    start = starting_equity(run)
    curve.plot(ids, [start + r for r in realized], marker="o", color=_LINE)
    curve.axhline(start, linestyle="--", color=_MUTED, label=f"starting value ${start:,.2f}")
    curve.set(ylabel="equity (USD)")
    curve.set_title(f"Equity curve: realized P&L ${realized[-1]:,.2f} after {len(ids)} cycles")
    curve.legend(loc="best")
    steps = realized_steps(run)
    pnl.bar(ids, steps, width=0.6, color=[_GAIN if s >= 0 else _LOSS for s in steps])
    pnl.axhline(0, color=_MUTED, linewidth=0.8)
    pnl.set(xlabel="cycle (id)", ylabel="realized P&L per cycle (USD)")
    _integer_x(curve, pnl)
    return figure


def _figure(rows: int, height_ratios: Sequence[float] | None = None) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = {"height_ratios": list(height_ratios)} if height_ratios else None
    axes = figure.subplots(rows, 1, squeeze=False, gridspec_kw=grid)
    return figure, [row[0] for row in axes]


def _bars(axes: Axes, names: list[str], values: list[float], notes: list[str]) -> None:
    positions = list(range(len(names)))
    axes.bar(positions, values, color=[_GAIN if v >= 0 else _LOSS for v in values])
    axes.axhline(0, color=_MUTED, linewidth=0.8)
    axes.set_xticks(positions, names)
    for x, value, note in zip(positions, values, notes, strict=True):
        axes.annotate(note, (x, value), textcoords="offset points",
                      xytext=(0, 3 if value >= 0 else -11), ha="center", fontsize=8)
    axes.grid(alpha=0.3, axis="y")


def _integer_x(*axes: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)


def _save(directory: Path, builders: dict[str, Callable[[], Figure]]) -> list[Path]:
    """Draw and write each figure; a file is written aside and renamed into place, so an
    interrupted save (an error, a stop signal) leaves no half-written PNG."""
    require_matplotlib()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in builders.items():
        path = directory / name
        aside = directory / f".{name}.tmp"
        try:
            build().savefig(aside, dpi=_DPI, format="png")
            os.replace(aside, path)
        finally:
            aside.unlink(missing_ok=True)
        written.append(path)
    return written


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
