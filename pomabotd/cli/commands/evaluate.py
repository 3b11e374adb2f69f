"""`pomabotd evaluate`: one evaluation per market as JSON lines on stdout, no side effects."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import click

from pomabotd.cli.base import Command
from pomabotd.cli.common import UsageFailure
from pomabotd.cli.options import source_options

__all__ = ["evaluate"]


@click.command(cls=Command)
@source_options
def evaluate(config_path: Path | None, markets: str | None, signals: str | None,
             polymarket_url: str | None, save_snapshot: str | None, as_of: str | None) -> None:
    """Write one evaluation per market, in input order, as JSON lines on stdout."""
    from pomabotd import app
    from pomabotd.cli.common import (
        errors_as_exit_codes,
        load_config,
        now,
        parse_as_of,
        report_rejected,
    )
    from pomabotd.cli.signals import until_signal
    from pomabotd.wire import Rejected

    if markets is None:
        raise UsageFailure("evaluate needs --markets FILE (or --markets synthetic)")
    when = parse_as_of(as_of) or now()
    config = load_config(config_path, {
        "sources.markets": markets,
        "sources.signals": signals,
        "sources.polymarket_url": polymarket_url,
        "sources.save_snapshot": save_snapshot,
    })
    out: BinaryIO = sys.stdout.buffer

    def write(lines: bytes) -> None:
        out.write(lines)

    async def evaluate_all() -> tuple[Rejected, ...]:
        sources = app.sources(config)  # a setting naming no source is refused before the pool
        with app.runtime(config) as runtime:
            async with sources:
                cycle_input = await sources.load(when)
            result = await runtime.evaluate(
                cycle_input.markets, cycle_input.markets_source,
                cycle_input.signals, cycle_input.signals_source,
                when, on_lines=write,
            )
        return (*cycle_input.rejected, *result.rejected)

    with errors_as_exit_codes():
        try:
            rejected = until_signal(evaluate_all, "the evaluation was abandoned")
        finally:
            out.flush()
    report_rejected(rejected)
