"""`pomabotd verify`: check an output directory's whole history."""

from __future__ import annotations

import time
from pathlib import Path

import click

from pomabotd.cli.base import Command
from pomabotd.cli.options import config_option, out_option

__all__ = ["verify"]


@click.command(cls=Command)
@out_option
@config_option
def verify(out_dir: Path | None, config_path: Path | None) -> None:
    """Check a ledger's whole history: exit 0 sound, 2 refused, naming file and line."""
    from pomabotd.cli.common import UsageFailure, errors_as_exit_codes, load_config
    from pomabotd.output import verify_ledger

    config = load_config(config_path, {
        "daemon.output_dir": str(out_dir) if out_dir is not None else None,
    }, reader=True)
    out = Path(config.daemon.output_dir)
    if not out.is_dir():
        raise UsageFailure(f"{out} is not a directory (daemon.output_dir, from "
                           f"{config.source_phrase('daemon.output_dir')})")
    started = time.perf_counter()
    with errors_as_exit_codes(input_is_usage=True):
        verdict = verify_ledger(out)
    elapsed = time.perf_counter() - started
    cycles = (f"cycles {verdict.first_cycle_id}-{verdict.last_cycle_id}"
              if verdict.first_cycle_id is not None else "no finished cycle")
    click.echo(
        f"{out} is sound: {verdict.cycles:,} metrics lines ({cycles}), "
        f"{verdict.positions_lines:,} positions lines, {verdict.open_positions} positions open "
        f"after cycle {verdict.last_cycle_id}; checked in {elapsed:.2f} s"
    )
    if verdict.torn_bytes or verdict.unfinished_lines:
        click.echo(
            f"  the next run or run-once will cut what an interrupted cycle left: "
            f"{verdict.torn_bytes} bytes of a torn last line, {verdict.unfinished_lines} "
            f"lines of unfinished cycle {verdict.unfinished_cycle_id}"
            if verdict.unfinished_lines else
            f"  the next run or run-once will cut {verdict.torn_bytes} bytes of a torn last "
            "line an interrupted cycle left"
        )
