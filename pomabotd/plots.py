"""PNG plots of a replay and of a run's files, drawn with matplotlib's Agg backend.

matplotlib is an optional extra (`pip install 'pomabotd[plots]'`): it is imported only when a
plot is drawn, so everything else works without it, and `require_matplotlib` lets a command
refuse early, before any work, when it is missing. Figures are built on their own Agg canvas,
never through pyplot, so no global state or display is involved. Every axis names its unit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pomabotd.domain.models import CloseEvent
from pomabotd.domain.research import CalibrationBucket, CategoryScorecard
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
    "closes_by_reason",
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
_CROWD: Final = "#9a6fb0"
#: Each exit reason's colour, in the order `close_reason` tries them.
_EXITS: Final = {
    "resolved": "#5a5a5a",
    "stop_loss": _LOSS,
    "profit_target": "#7fbf7f",
    "converged": "#4f9fd0",
    "invalidated": "#e0a040",
}
#: Below this span, in USD, a money axis is widened (a flat equity curve).
_FLAT_USD: Final = 1.0


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
    """Predicted YES probability against the observed YES frequency, per 10-point bucket, with
    each bucket's 95% interval: the beliefs (belief midpoints) and, as the baseline they have
    to beat, the crowd (the market's price at the evaluation time); below, each bucket's
    count."""
    figure, (curve, counts) = _figure(2, height_ratios=(3, 1))
    curve.plot([0, 100], [0, 100], linestyle="--", color=_MUTED, label="perfect calibration")
    _calibration_curve(curve, report.crowd_calibration, _CROWD, "s",
                       f"crowd (market price), Brier {_number(report.crowd_brier, 4)}",
                       counted=False)
    _calibration_curve(curve, report.calibration, _LINE, "o",
                       f"beliefs (belief midpoint), Brier {_number(report.brier, 4)}",
                       counted=True)
    curve.set(xlim=(0, 100), ylim=(-4, 104),
              xlabel="predicted YES probability: belief midpoint or market price (%)",
              ylabel="observed YES frequency, 95% interval (%)")
    curve.set_title(
        f"Calibration {plural(report.as_of_days_before, 'day')} before closing: "
        f"{plural(report.markets, 'market')}"
    )
    curve.legend(loc="upper left")
    curve.grid(alpha=0.3)
    centres = [(b.low + b.high) / 2 for b in report.calibration]
    counts.bar([c - 2.0 for c in centres], [b.count for b in report.calibration], width=4.0,
               color=_LINE, label="beliefs")
    counts.bar([c + 2.0 for c in centres], [b.count for b in report.crowd_calibration],
               width=4.0, color=_CROWD, label="crowd")
    counts.set(xlim=(0, 100), xlabel="bucket (%)", ylabel="markets (count)")
    counts.grid(alpha=0.3, axis="y")
    _counts_on(counts.yaxis, most=4)  # a short axis
    counts.yaxis.set_major_formatter(_thousands())
    return figure


def _calibration_curve(
    axes: Axes, buckets: Sequence[CalibrationBucket], color: str, marker: str, label: str,
    *, counted: bool,
) -> None:
    """One calibration curve: a point per filled bucket at (mean forecast, observed share),
    with the share's Wilson interval as an error bar, and its count beside it if `counted`."""
    filled = [b for b in buckets if b.count and b.predicted is not None
              and b.observed is not None and b.observed_low is not None
              and b.observed_high is not None]
    if not filled:
        return
    x = [(b.predicted or 0.0) * 100 for b in filled]
    y = [(b.observed or 0.0) * 100 for b in filled]
    below = [max(0.0, (b.observed or 0.0) - (b.observed_low or 0.0)) * 100 for b in filled]
    above = [max(0.0, (b.observed_high or 0.0) - (b.observed or 0.0)) * 100 for b in filled]
    axes.errorbar(x, y, yerr=[below, above], marker=marker, color=color, capsize=3,
                  label=label, alpha=1.0 if counted else 0.75)
    if counted:
        for point_x, point_y, bucket in zip(x, y, filled, strict=True):
            # Below the point in the upper half, above it in the lower half: the count stays
            # clear of the title and of the x axis's tick labels.
            axes.annotate(f"n={bucket.count:,}", (point_x, point_y), textcoords="offset points",
                          xytext=(6, -12) if point_y >= 50 else (6, 6), fontsize=8)


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
    markets.yaxis.set_major_formatter(_thousands())
    markets.set_title(
        f"Markets and throughput per cycle: {run.directory}, {plural(len(ids), 'cycle')}"
    )
    speed.plot(ids, [m.throughput_per_s for m in run.metrics], marker="o", color=_LINE)
    speed.set(xlabel="cycle (id)", ylabel="throughput (markets/s)")
    _from_zero(speed, [m.throughput_per_s for m in run.metrics])
    speed.yaxis.set_major_formatter(_thousands())
    _cycle_axes(run, markets, speed)
    markets.legend(loc="lower left")
    return figure


def positions_figure(run: RunFiles) -> Figure:
    """Positions opened (up) and closed (down, by exit reason) in each cycle, and held open
    after it: four closed and four opened show as eight, not as nothing."""
    figure, (axes,) = _figure(1)
    ids = [m.cycle_id for m in run.metrics]
    opened = [m.selected for m in run.metrics]
    closes = closes_by_reason(run)
    axes.bar(ids, opened, width=0.6, color=_GAIN, label="opened")
    bottom = [0] * len(ids)
    for reason, counts in closes.items():
        axes.bar(ids, [-c for c in counts], width=0.6, bottom=[-b for b in bottom],
                 color=_EXITS.get(reason, _MUTED), label=f"closed: {reason}")
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axes.plot(ids, [m.open_positions for m in run.metrics], marker="o", color=_LINE,
              label="open_positions")
    axes.axhline(0, color=_MUTED, linewidth=0.8)
    axes.set(xlabel="cycle (id)", ylabel="positions opened up, closed down (count)")
    high = max([*opened, *(m.open_positions for m in run.metrics)], default=0)
    axes.set_ylim(-max(max(bottom, default=0) * 1.1, 1), max(high * 1.1, 1))
    _counts_on(axes.yaxis)
    axes.yaxis.set_major_formatter(_magnitudes())
    axes.set_title(
        f"Positions opened and closed per cycle: {sum(opened):,} opened, "
        f"{sum(bottom):,} closed"
    )
    _cycle_axes(run, axes)
    axes.legend(loc="best", fontsize=8)
    return figure


def closes_by_reason(run: RunFiles) -> dict[str, list[int]]:
    """The closes of each metrics cycle by exit reason, in the reasons' order of precedence
    (from `positions.jsonl`; without it, the metrics lines' `closed` counts as `closed`)."""
    ids = [m.cycle_id for m in run.metrics]
    if not run.has_positions:
        return {"all reasons": [m.closed for m in run.metrics]} if any(
            m.closed for m in run.metrics) else {}
    where = {cycle_id: index for index, cycle_id in enumerate(ids)}
    counts: dict[str, list[int]] = {}
    for event in run.events:
        if isinstance(event, CloseEvent) and event.cycle_id in where:
            counts.setdefault(event.exit_reason, [0] * len(ids))[where[event.cycle_id]] += 1
    return {reason: counts[reason] for reason in _EXITS if reason in counts}


def equity_figure(run: RunFiles) -> Figure:
    """Equity (starting value plus realized P&L) and realized P&L per cycle, from the closes in
    `positions.jsonl`."""
    figure, (curve, pnl) = _figure(2)
    ids = [m.cycle_id for m in run.metrics]
    realized = realized_by_cycle(run)
    start = starting_equity(run)
    curve.plot(ids, [start + r for r in realized], marker="o", color=_LINE)
    _money_limits(curve, [start, *(start + r for r in realized)])
    curve.axhline(start, linestyle="--", color=_MUTED, label=f"starting value {usd(start)}")
    curve.set(ylabel="equity (USD)")
    curve.set_title(
        f"Equity curve: realized P&L {usd(realized[-1])} after {plural(len(ids), 'cycle')}"
    )
    steps = realized_steps(run)
    pnl.bar(ids, steps, width=0.6, color=[_GAIN if s >= 0 else _LOSS for s in steps])
    _money_limits(pnl, [0.0, *(s for s in steps if not math.isnan(s))])
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
    """Dollars on an axis, in whole dollars when its ticks are a dollar or more apart and in
    cents otherwise, so that no two ticks read alike."""
    from matplotlib.ticker import Formatter

    class Dollars(Formatter):
        ticks: Sequence[float] = ()

        def set_locs(self, locs: Sequence[float]) -> None:
            self.ticks = list(locs)

        def __call__(self, value: float, pos: int | None = None) -> str:
            return usd(value, cents=_tick_step(self.ticks) < 1.0)

    return Dollars()


def _tick_step(locations: Sequence[float]) -> float:
    """The smallest gap between ticks (infinite for fewer than two)."""
    ordered = sorted(locations)
    return min((b - a for a, b in pairwise(ordered) if b > a), default=math.inf)


def _money_limits(axes: Axes, values: Sequence[float]) -> None:
    """An axis of money that spans at least a few dollars: a flat curve (no P&L yet) is drawn
    in the middle of a readable range instead of on ticks a thousandth of a cent apart."""
    low, high = min(values), max(values)
    if high - low >= _FLAT_USD:
        return
    middle = (low + high) / 2.0
    half = max(_FLAT_USD, abs(middle) * 0.0005)
    axes.set_ylim(middle - half, middle + half)


def _thousands() -> Any:
    """Counts with thousands separators: 80,000, never 80000 or 8e4."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.0f}")


def _magnitudes() -> Any:
    """Counts without their sign and with thousands separators, for an axis that draws one
    kind of count up and another down."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{abs(value):,.0f}")


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
