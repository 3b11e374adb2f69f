"""`pomabotd report`: PNG plots from a run's files."""

from __future__ import annotations

from pathlib import Path

import click

from pomabotd.cli.base import Command
from pomabotd.cli.common import UsageFailure
from pomabotd.cli.options import config_option, out_option

__all__ = ["report"]


@click.command(cls=Command)
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Directory to write the PNG plots to (required).")
@out_option
@click.option("--from", "old_from", hidden=True, metavar="DIR",
              help="The old name of --out; refused with a message saying so.")
@config_option
def report(plots_dir: Path | None, out_dir: Path | None, old_from: str | None,
           config_path: Path | None) -> None:
    """Draw PNG plots from a run's metrics.jsonl and positions.jsonl."""
    if old_from is not None:
        raise UsageFailure("report --from is now --out: the run's output directory, as for "
                           "run and run-once (the plots go to --plots DIR)")
    if plots_dir is None:
        hint = (" (--out names the run's output directory, as for run and run-once, no longer "
                "the plots' directory)" if out_dir is not None else "")
        raise UsageFailure(f"report needs --plots DIR, the directory for the PNGs{hint}")

    from pomabotd.cli.common import errors_as_exit_codes, load_config
    from pomabotd.cli.plotting import check_plot_directory, write_plots
    from pomabotd.cli.signals import stop_on_signal
    from pomabotd.plots import run_plots
    from pomabotd.report import read_run, run_warnings

    config = load_config(config_path, {
        "daemon.output_dir": str(out_dir) if out_dir is not None else None,
    }, reader=True)
    check_plot_directory("--plots", plots_dir)
    directory = plots_dir
    with stop_on_signal("the report was abandoned; no plot is left half-written"):
        with errors_as_exit_codes(input_is_usage=True):
            run = read_run(Path(config.daemon.output_dir))
        for warning in run_warnings(run):
            click.echo(f"warning: {warning}", err=True)
        for path in write_plots(directory, lambda: run_plots(run, directory)):
            click.echo(f"plot written to {path}")
