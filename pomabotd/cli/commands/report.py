"""`pomabotd report`: PNG plots from a run's files."""

from __future__ import annotations

from pathlib import Path

import click

from pomabotd.cli.base import Command
from pomabotd.cli.options import config_option

__all__ = ["report"]


@click.command(cls=Command)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Directory to write the PNG plots to.")
@click.option("--from", "run_dir", type=click.Path(path_type=Path),
              help="The run's output directory (default: daemon.output_dir of the configuration).")
@config_option
def report(out_dir: Path, run_dir: Path | None, config_path: Path | None) -> None:
    """Draw PNG plots from a run's metrics.jsonl and positions.jsonl."""
    from pomabotd.cli.common import errors_as_exit_codes, load_config
    from pomabotd.cli.plotting import check_plot_directory, write_plots
    from pomabotd.cli.signals import stop_on_signal
    from pomabotd.plots import run_plots
    from pomabotd.report import read_run, run_warnings

    config = load_config(config_path, {})
    check_plot_directory("--out", out_dir)
    source = run_dir if run_dir is not None else Path(config.daemon.output_dir)
    with stop_on_signal("the report was abandoned; no plot is left half-written"):
        with errors_as_exit_codes(input_is_usage=True):
            run = read_run(source)
        for warning in run_warnings(run):
            click.echo(f"warning: {warning}", err=True)
        for path in write_plots(out_dir, lambda: run_plots(run, out_dir)):
            click.echo(f"plot written to {path}")
