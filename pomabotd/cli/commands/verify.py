"""`pomabotd verify`: check an output directory's whole history."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pomabotd.cli.base import Command
from pomabotd.cli.options import config_option, out_option

if TYPE_CHECKING:
    from pomabotd.output import LedgerVerdict

__all__ = ["verify"]


@click.command(cls=Command)
@out_option
@config_option
def verify(out_dir: Path | None, config_path: Path | None) -> None:
    """Check a ledger's whole history: exit 0 sound, 2 refused, naming file and line."""
    from pomabotd.cli.common import UsageFailure, errors_as_exit_codes, load_config
    from pomabotd.output import verify_ledger
    from pomabotd.words import plural

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
    click.echo(f"{out} is sound: {_checked(verdict)}; checked in {elapsed:.2f} s")
    cut = [plural(verdict.torn_bytes, "byte") + " of a torn last line"] if verdict.torn_bytes \
        else []
    if verdict.unfinished_lines:
        cut.append(f"{plural(verdict.unfinished_lines, 'line')} of unfinished cycle "
                   f"{verdict.unfinished_cycle_id}")
    if cut:
        click.echo(f"  the next run or run-once will cut what an interrupted cycle left: "
                   f"{' and '.join(cut)}")


def _checked(verdict: LedgerVerdict) -> str:
    """What was checked: `6 metrics lines (cycles 1-6), 22 positions lines, 2 positions open
    after cycle 6`."""
    from pomabotd.words import plural

    if verdict.first_cycle_id is None:
        return (f"no finished cycle yet, {plural(verdict.positions_lines, 'positions line')}"
                if verdict.positions_lines else "no finished cycle yet")
    first, last = verdict.first_cycle_id, verdict.last_cycle_id
    cycles = f"cycle {last}" if first == last else f"cycles {first}-{last}"
    return (f"{plural(verdict.cycles, 'metrics line')} ({cycles}), "
            f"{plural(verdict.positions_lines, 'positions line')}, "
            f"{plural(verdict.open_positions, 'position')} open after cycle {last}")
