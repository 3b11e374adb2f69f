"""Options several commands share, declared once so they read the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["config_option", "out_option", "source_options"]

_F = TypeVar("_F", bound=Callable[..., Any])


def config_option(function: _F) -> _F:
    """`--config FILE`."""
    return click.option(
        "--config", "config_path", type=click.Path(path_type=Path),
        help="TOML configuration file (default: none, or $POMABOTD_CONFIG).",
    )(function)


def out_option(function: _F) -> _F:
    """`--out DIR`: a run's output directory, wherever a command takes one."""
    return click.option(
        "--out", "out_dir", type=click.Path(path_type=Path),
        help="The run's output directory: positions.jsonl, metrics.jsonl and state.json "
             "(default: daemon.output_dir).",
    )(function)


def source_options(function: _F) -> _F:
    """`--config` and the options that choose a cycle's input: `--markets`, `--signals`,
    `--polymarket-url`, `--save-snapshot`, `--as-of`."""
    options = (
        config_option,
        click.option("--markets", help="Markets: a JSON-lines file, 'synthetic', 'polymarket' "
                     "or 'gamma:PATH' (a saved Gamma JSON array)."),
        click.option("--signals", help="Signals: a JSON-lines file (feeds in the config add "
                     "theirs)."),
        click.option("--polymarket-url", "polymarket_url", metavar="URL",
                     help="Base URL of the Polymarket Gamma API (sources.polymarket_url); "
                          "only with the polymarket source."),
        click.option("--save-snapshot", "save_snapshot", metavar="PATH",
                     help="Save the fetched Polymarket objects to PATH as a JSON array; only "
                          "with the polymarket source."),
        click.option("--as-of", "as_of", metavar="ISO8601",
                     help="Evaluate as of this UTC time (default: now)."),
    )
    for option in reversed(options):
        function = option(function)
    return function
