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
from typing import TYPE_CHECKING, Any, Final

from pomabotd.domain.research import CategoryScorecard
from pomabotd.errors import MissingExtraError
from pomabotd.money import usd
from pomabotd.replay.run import ReplayReport
from pomabotd.report import RunFiles, realized_by_cycle, realized_steps, starting_equity
from pomabotd.words import plural

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
_HALTED: Final = "#d08a1e"


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
    points = [((b.predicted or 0.0) * 100, (b.observed or 0.0) * 100, b.count) for b in filled]
    curve.plot([x for x, _, _ in points], [y for _, y, _ in points], marker="o", color=_LINE,
               label="replayed markets")
    for x, y, count in points:
        # Below the point in the upper half, above it in the lower half: the count stays
        # clear of the title and of the x axis's tick labels.
        curve.annotate(f"n={count:,}", (x, y), textcoords="offset points",
                       xytext=(6, -12) if y >= 50 else (6, 6), fontsize=8)
    curve.set(xlim=(0, 100), ylim=(-4, 104),
              xlabel="predicted YES probability: belief midpoint (%)",
              ylabel="observed YES frequency (%)")
    curve.set_title(
        f"Calibration {plural(report.as_of_days_before, 'day')} before closing: "
        f"{plural(report.markets, 'market')}, Brier {_number(report.brier, 4)}"
    )
    curve.legend(loc="upper left")
    curve.grid(alpha=0.3)
    centres = [(b.low + b.high) / 2 for b in report.calibration]
    counts.bar(centres, [b.count for b in report.calibration], width=8.0, color=_LINE)
    counts.set(xlim=(0, 100), xlabel="belief midpoint bucket (%)", ylabel="markets (count)")
    counts.grid(alpha=0.3, axis="y")
    _counts_on(counts.yaxis, most=4)  # a short axis
    return figure


def pnl_by_category_figure(report: ReplayReport) -> Figure:
    """Realized P&L of the selected portfolio, and P&L per unit stake of every tradeable
    evaluation, per category: horizontal bars, so that every category's name reads whole."""
    figure, (realized, per_unit) = _figure(1, columns=2)
    names = list(report.by_category)
    figures: list[CategoryScorecard] = list(report.by_category.values())
    _bars(realized, names, [f.realized_pnl_usd for f in figures],
          [f"{usd(f.realized_pnl_usd)}, {f.selected} pos." for f in figures])
    realized.set(xlabel="realized P&L (USD)", ylabel="category")
    realized.set_title("Selected portfolio, settled")
    realized.xaxis.set_major_formatter(_usd_ticks())
    _bars(per_unit, names, [f.pnl_per_unit or 0.0 for f in figures],
          [f"{f.pnl_per_unit:+.2f}, n={f.tradeable:,}" if f.pnl_per_unit is not None
           else "n=0" for f in figures])
    per_unit.set(xlabel="P&L per unit stake (USD per USD)")
    per_unit.set_title("Tradeable evaluations, held to resolution")
    per_unit.tick_params(labelleft=False)
    figure.suptitle(
        f"By category: {plural(report.selected, 'position')}, realized "
        f"{usd(report.realized_pnl_usd)} "
        f"({report.return_on_equity_pct:+.2f}% of equity); {report.tradeable:,} tradeable "
        "evaluations"
    )
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
    _from_zero(markets, [m.markets_total for m in run.metrics])
    _counts_on(markets.yaxis)
    markets.set_title(
        f"Markets and throughput per cycle: {run.directory}, {plural(len(ids), 'cycle')}"
    )
    speed.plot(ids, [m.throughput_per_s for m in run.metrics], marker="o", color=_LINE)
    speed.set(xlabel="cycle (id)", ylabel="throughput (markets/s)")
    _from_zero(speed, [m.throughput_per_s for m in run.metrics])
    _cycle_axes(run, markets, speed)
    markets.legend(loc="lower left")
    return figure


def positions_figure(run: RunFiles) -> Figure:
    """Positions opened (selected) and held open after each cycle."""
    figure, (axes,) = _figure(1)
    ids = [m.cycle_id for m in run.metrics]
    axes.bar(ids, [m.selected for m in run.metrics], width=0.6, color=_GAIN, label="selected")
    axes.plot(ids, [m.open_positions for m in run.metrics], marker="o", color=_LINE,
              label="open_positions")
    axes.set(xlabel="cycle (id)", ylabel="positions (count)")
    _from_zero(axes, [max(m.selected, m.open_positions) for m in run.metrics])
    _counts_on(axes.yaxis)
    axes.set_title("Positions selected and open per cycle")
    _cycle_axes(run, axes)
    axes.legend(loc="best")
    return figure


def equity_figure(run: RunFiles) -> Figure:
    """Equity (starting value plus realized P&L) and realized P&L per cycle, from the closes in
    `positions.jsonl`."""
    figure, (curve, pnl) = _figure(2)
    ids = [m.cycle_id for m in run.metrics]
    realized = realized_by_cycle(run)
    start = starting_equity(run)
    curve.plot(ids, [start + r for r in realized], marker="o", color=_LINE)
    curve.axhline(start, linestyle="--", color=_MUTED, label=f"starting value {usd(start)}")
    curve.set(ylabel="equity (USD)")
    curve.set_title(
        f"Equity curve: realized P&L {usd(realized[-1])} after {plural(len(ids), 'cycle')}"
    )
    steps = realized_steps(run)
    pnl.bar(ids, steps, width=0.6, color=[_GAIN if s >= 0 else _LOSS for s in steps])
    pnl.axhline(0, color=_MUTED, linewidth=0.8)
    pnl.set(xlabel="cycle (id)", ylabel="realized P&L per cycle (USD)")
    for axes in (curve, pnl):
        axes.yaxis.set_major_formatter(_usd_ticks())
    _cycle_axes(run, curve, pnl)
    curve.legend(loc="best")
    return figure


def _figure(
    rows: int, height_ratios: Sequence[float] | None = None, columns: int = 1
) -> tuple[Figure, list[Axes]]:
    """A figure of `rows` x `columns` axes: stacked ones share x (the cycle), side by side ones
    share y (the category)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = {"height_ratios": list(height_ratios)} if height_ratios else None
    axes = figure.subplots(rows, columns, squeeze=False, gridspec_kw=grid,
                           sharex=columns == 1 and height_ratios is None, sharey=columns > 1)
    return figure, [ax for row in axes for ax in row]


def _bars(axes: Axes, names: list[str], values: list[float], notes: list[str]) -> None:
    """One horizontal bar per name, the first on top, each with its note to the right: beyond
    a gain's end, beside the zero line for a loss, so no note runs into the category names."""
    positions = list(range(len(names)))
    axes.barh(positions, values, height=0.6, color=[_GAIN if v >= 0 else _LOSS for v in values])
    axes.axvline(0, color=_MUTED, linewidth=0.8)
    axes.set_yticks(positions, names)
    if not axes.yaxis_inverted():
        axes.invert_yaxis()
    for y, value, note in zip(positions, values, notes, strict=True):
        axes.annotate(note, (max(value, 0.0), y), textcoords="offset points", xytext=(4, 0),
                      ha="left", va="center", fontsize=8)
    low, high = min(0.0, *values), max(0.0, *values)
    span = (high - low) or 1.0
    axes.set_xlim(low - 0.05 * span, high + 0.65 * span)  # the right part holds the notes
    axes.grid(alpha=0.3, axis="x")


def _cycle_axes(run: RunFiles, *axes: Axes) -> None:
    """Whole cycle ids on x, a grid, and a band over every run of halted cycles (no position
    opened), named once in the legend."""
    spans = _halted_spans(run)
    for index, ax in enumerate(axes):
        _counts_on(ax.xaxis)
        ax.grid(alpha=0.3)
        for number, (first, last) in enumerate(spans):
            label = "halted: no position opened" if index == 0 and number == 0 else None
            ax.axvspan(first - 0.5, last + 0.5, color=_HALTED, alpha=0.15, linewidth=0,
                       label=label)


def _halted_spans(run: RunFiles) -> list[tuple[int, int]]:
    """(first, last) cycle id of every run of consecutive halted cycles."""
    spans: list[tuple[int, int]] = []
    for metrics in run.metrics:
        if not metrics.halted:
            continue
        if spans and spans[-1][1] == metrics.cycle_id - 1:
            spans[-1] = (spans[-1][0], metrics.cycle_id)
        else:
            spans.append((metrics.cycle_id, metrics.cycle_id))
    return spans


def _from_zero(axes: Axes, values: list[int] | list[float]) -> None:
    """A y axis from 0 to a little above the largest value, so no point sits on the frame."""
    axes.set_ylim(0, max(max(values, default=0) * 1.1, 1))


def _counts_on(axis: Any, most: int | None = None) -> None:
    """Whole numbers only on an axis of counts or ids (at most `most` + 1 ticks, if given)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=most or "auto", integer=True))


def _usd_ticks() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: usd(value, cents=False))


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
