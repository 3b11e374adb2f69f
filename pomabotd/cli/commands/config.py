"""`pomabotd config`: the effective configuration, and where each value came from."""

from __future__ import annotations

from pathlib import Path

import click

from pomabotd.cli.base import Command
from pomabotd.cli.options import config_option

__all__ = ["show_config"]


@click.command("config", cls=Command)
@config_option
def show_config(config_path: Path | None) -> None:
    """Print the effective configuration as JSON, with where each value came from."""
    import msgspec

    from pomabotd.cli.common import load_config

    config = load_config(config_path, {})
    click.echo(msgspec.json.format(msgspec.json.encode(config.describe()), indent=2).decode())
