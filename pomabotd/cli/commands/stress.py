"""`pomabotd stress`: measured cycles on a large workload, checked."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import click

from pomabotd.cli.base import Command
from pomabotd.cli.common import UsageFailure
from pomabotd.cli.options import config_option

__all__ = ["PRESETS", "stress"]

#: The named sizes, in synthetic markets.
PRESETS: Final[dict[str, int]] = {"small": 100, "medium": 500, "large": 1000, "extreme": 5000}


@click.command(cls=Command)
@click.argument("size", required=False, type=click.Choice(list(PRESETS)))
@click.option("--markets", "count", type=click.IntRange(min=1),
              help="Number of synthetic markets (instead of a named size).")
@click.option("--real", is_flag=True,
              help="Use the configured market and signal sources instead of synthetic data.")
@config_option
@click.option("--polymarket-url", "polymarket_url", metavar="URL",
              help="Base URL of the Polymarket Gamma API, for --real.")
@click.option("--as-of", "as_of", metavar="ISO8601", help="Evaluate as of this UTC time.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cycles to run on the same warm pool; wall time is their median.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stress(size: str | None, count: int | None, real: bool, config_path: Path | None,
           polymarket_url: str | None, as_of: str | None, repeat: int, as_json: bool) -> None:
    """Run measured cycles on a large workload and check the results (exit 1 on failure)."""
    import msgspec

    from pomabotd import app
    from pomabotd.cli.common import errors_as_exit_codes, load_config, now, parse_as_of
    from pomabotd.cli.render import stress_summary
    from pomabotd.cli.signals import until_signal
    from pomabotd.stress import StressReport, Synthetic, run_stress

    chosen = [name for name, given in (("SIZE", size), ("--markets", count), ("--real", real))
              if given]
    if len(chosen) > 1:
        raise UsageFailure(f"give one of SIZE, --markets N or --real, not {' and '.join(chosen)}")
    if polymarket_url is not None and not real:
        raise UsageFailure("--polymarket-url would do nothing without --real: the synthetic "
                           "workload fetches nothing")
    when = parse_as_of(as_of) or now()
    config = load_config(config_path, {"sources.polymarket_url": polymarket_url})
    markets = count if count is not None else PRESETS[size or "small"]

    async def measured() -> StressReport:
        runtime, limits = app.runtime(config), config.risk_limits()
        with _progress_bar(markets) as on_progress:
            if not real:
                workload = Synthetic(markets, config.sources.seed)
                return await run_stress(runtime, limits, workload, when, clock=now,
                                        on_progress=on_progress, repeat=repeat)
            async with app.sources(config) as loader:
                return await run_stress(runtime, limits, loader, when, clock=now,
                                        on_progress=on_progress, repeat=repeat)

    with errors_as_exit_codes():
        report = until_signal(measured)
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    else:
        click.echo(stress_summary(report))
    if not report.passed:
        raise click.exceptions.Exit(1)


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal; nothing at all otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit=" markets", file=sys.stderr, leave=False) as bar:

        def advance(done: int, of: int) -> None:
            bar.total = of
            bar.update(done - bar.n)

        yield advance
