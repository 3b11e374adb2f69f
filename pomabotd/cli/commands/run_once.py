"""`pomabotd run-once`: one cycle into the output directory, then a summary."""

from __future__ import annotations

from pathlib import Path

import click

from pomabotd.cli.base import Command
from pomabotd.cli.options import out_option, source_options

__all__ = ["run_once"]


@click.command("run-once", cls=Command)
@source_options
@out_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a summary.")
def run_once(config_path: Path | None, markets: str | None, signals: str | None,
             polymarket_url: str | None, save_snapshot: str | None, as_of: str | None,
             out_dir: Path | None, as_json: bool) -> None:
    """Run one cycle, append its lines to the output directory, print a summary."""
    import msgspec

    from pomabotd import app
    from pomabotd.cli.common import (
        errors_as_exit_codes,
        load_config,
        now,
        parse_as_of,
        report_rejected,
    )
    from pomabotd.cli.render import cycle_summary, sources_summary
    from pomabotd.cli.signals import until_signal
    from pomabotd.cycle import CycleReport, run_cycle

    when = parse_as_of(as_of)
    config = load_config(config_path, {
        "sources.markets": markets,
        "sources.signals": signals,
        "sources.polymarket_url": polymarket_url,
        "sources.save_snapshot": save_snapshot,
        "daemon.output_dir": str(out_dir) if out_dir is not None else None,
    })
    with errors_as_exit_codes():
        ledger = app.ledger_on_demand(config)  # a directory that cannot be one: exit 2 first
    if not config.batch.enabled:
        source = config.provenance["batch.enabled"].replace(":", " ", 1)
        click.echo(f"batch.enabled is false (from {source}): no cycle run, nothing written",
                   err=True)
        return

    async def one_cycle() -> CycleReport:
        sources = app.sources(config)  # a setting naming no source is refused before the pool
        with app.runtime(config) as runtime, ledger:
            async with sources:
                return await run_cycle(runtime, sources, ledger.portfolio(), ledger,
                                       config.risk_limits(), as_of=when, clock=now,
                                       halt=app.halt_policy(config),
                                       deadline_s=config.daemon.cycle_timeout_s)

    with errors_as_exit_codes():
        report = until_signal(one_cycle)
    report_rejected(report.rejected)
    if as_json:
        summary = msgspec.structs.asdict(report.metrics)
        summary["output_dir"] = report.output_dir
        summary["failures"] = report.first_failures()
        click.echo(msgspec.json.encode(summary).decode())
    else:
        click.echo(cycle_summary(report))
        click.echo(sources_summary(report.metrics.sources))
