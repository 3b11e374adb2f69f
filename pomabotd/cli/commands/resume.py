"""`pomabotd resume`: lift an output directory's halt at its next cycle."""

from __future__ import annotations

from pathlib import Path

import click

from pomabotd.cli.base import Command
from pomabotd.cli.options import config_option, out_option

__all__ = ["resume"]


@click.command(cls=Command)
@out_option
@config_option
def resume(out_dir: Path | None, config_path: Path | None) -> None:
    """Lift the halt of an output directory at its next cycle, daemon running or not."""
    from pomabotd.cli.common import errors_as_exit_codes, load_config, now
    from pomabotd.resume import request_resume

    config = load_config(config_path, {
        "daemon.output_dir": str(out_dir) if out_dir is not None else None,
    }, reader=True)
    out = Path(config.daemon.output_dir)
    with errors_as_exit_codes(input_is_usage=True):
        outcome = request_resume(out, now())
    if not outcome.halted:
        click.echo(f"{out} is not halted: nothing to resume")
        return
    click.echo(
        f"resume requested for {out}: the halt of cycle {outcome.since_cycle} "
        f"({outcome.reason}) is lifted at the start of the next cycle (a running daemon's, or "
        "the next run or run-once), and the halt rules then judge only what closes after it"
    )
