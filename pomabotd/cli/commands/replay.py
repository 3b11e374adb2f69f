"""`pomabotd replay`: score the decisions on resolved markets as they stood D days before."""

from __future__ import annotations

from pathlib import Path

import click

from pomabotd.cli.base import Command
from pomabotd.cli.options import config_option

__all__ = ["replay"]


@click.command(cls=Command)
@click.option("--markets", required=True, metavar="RESOLVED",
              help="Resolved markets with their price D days before closing (price_<D>d): a "
                   "JSON-lines file of markets with outcome and closes_at, gamma:PATH (a "
                   "saved Gamma JSON array whose closed markets are priced 1/0), or synthetic "
                   "(the living world's markets that resolved in the 30 days before --as-of).")
@click.option("--signals", help="Signals: a JSON-lines file (default: sources.signals).")
@click.option("--as-of-days-before", "days", required=True, type=click.IntRange(1, 3650),
              metavar="D", help="Evaluate each market D whole days before its closes_at.")
@click.option("--price-fallback", "price_fallback", is_flag=True,
              help="Evaluate a JSON-lines record without price_<D>d at its price: only when "
                   "the file's prices were recorded D days before closing, not at resolution.")
@click.option("--as-of", "as_of", metavar="ISO8601",
              help="With --markets synthetic: replay the markets that resolved in the 30 days "
                   "before this UTC time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", "plot_dir", type=click.Path(path_type=Path),
              help="Also write calibration and P&L-by-category PNGs to this directory.")
@config_option
def replay(markets: str, signals: str | None, days: int, price_fallback: bool, as_of: str | None,
           as_json: bool, plot_dir: Path | None, config_path: Path | None) -> None:
    """Evaluate resolved markets as they stood D days before closing, and score the decisions."""
    from pomabotd import app
    from pomabotd.cli.common import (
        REJECTED_SHOWN,
        CycleFailure,
        UsageFailure,
        errors_as_exit_codes,
        load_config,
        now,
        parse_as_of,
        report_rejected,
    )
    from pomabotd.cli.plotting import check_plot_directory, write_plots
    from pomabotd.cli.render import replay_summary
    from pomabotd.cli.signals import stop_on_signal, until_signal
    from pomabotd.errors import CycleError
    from pomabotd.plots import replay_plots
    from pomabotd.replay.run import ReplayResult, nothing_scored, report_json, require_scorable
    from pomabotd.replay.run import replay as run_replay
    from pomabotd.replay.source import load_resolved
    from pomabotd.sources.synthetic import NAME as SYNTHETIC
    from pomabotd.sources.synthetic import world_of

    config = load_config(config_path, {"sources.markets": markets, "sources.signals": signals})
    world = config.sources.markets.strip() == SYNTHETIC
    if as_of is not None and not world:
        raise UsageFailure(f"--as-of applies to --markets {SYNTHETIC} only: a file's resolved "
                           "markets are replayed as they were recorded")
    when = parse_as_of(as_of) or now()
    check_plot_directory("--plot", plot_dir)
    abandoned = "the replay was abandoned, nothing printed"
    with errors_as_exit_codes(input_is_usage=True), stop_on_signal(abandoned):
        resolved = load_resolved(config.sources.markets.strip(), config.sources.signals, days,
                                 price_fallback=price_fallback,
                                 world=world_of(config.sources) if world else None, as_of=when)
    for warning in resolved.warnings:
        click.echo(f"warning: {warning}", err=True)
    with errors_as_exit_codes():
        try:
            require_scorable(resolved)
        except CycleError:
            report_rejected(resolved.rejected)
            raise

    async def replayed() -> ReplayResult:
        with app.runtime(config) as runtime:
            return await run_replay(runtime, resolved, days, config.risk_limits())

    with errors_as_exit_codes(input_is_usage=True):
        result = until_signal(replayed, abandoned)
    report_rejected(result.rejected)
    for market_id, error in result.failures[:REJECTED_SHOWN]:
        click.echo(f"failed: {market_id}: {error}", err=True)
    failure = nothing_scored(result)
    if failure is not None:
        raise CycleFailure(failure)
    plots: list[Path] = []
    if plot_dir is not None:
        directory = plot_dir
        with stop_on_signal("the plots were abandoned (none is left half-written), nothing "
                            "printed"):
            plots = write_plots(directory, lambda: replay_plots(result.report, directory))
    if as_json:
        click.echo(report_json(result.report).decode())
        return
    click.echo(replay_summary(result.report, world=world))
    for path in plots:
        click.echo(f"  plot written to {path}")
