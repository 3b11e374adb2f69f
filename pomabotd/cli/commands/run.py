"""`pomabotd run`: the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pomabotd.cli.base import Command
from pomabotd.cli.options import out_option, source_options

__all__ = ["run"]


@click.command(cls=Command)
@source_options
@out_option
@click.option("--interval", "interval_s", type=float, metavar="SECONDS",
              help="Seconds between cycle starts (default: daemon.interval_s).")
@click.option("--status-addr", "status_addr", metavar="HOST:PORT",
              help="Status endpoint address; '' switches it off (default: daemon.status_addr).")
@click.option("--env-file", "env_file", metavar="PATH",
              help="BATCH_NAME=value lines read at start and on every reload "
                   "(default: daemon.env_file).")
def run(config_path: Path | None, markets: str | None, signals: str | None,
        polymarket_url: str | None, save_snapshot: str | None, as_of: str | None,
        out_dir: Path | None, interval_s: float | None, status_addr: str | None,
        env_file: str | None) -> None:
    """Run the daemon: a cycle every interval until SIGTERM; SIGHUP reloads."""
    import asyncio
    import os

    from pomabotd import app
    from pomabotd.cli.common import CycleFailure, errors_as_exit_codes, load_config, parse_as_of
    from pomabotd.config import SETTLE_S, Config, environ_for_reload, load
    from pomabotd.daemon.loop import Daemon

    when = parse_as_of(as_of)
    flags: dict[str, Any] = {
        "sources.markets": markets,
        "sources.signals": signals,
        "sources.polymarket_url": polymarket_url,
        "sources.save_snapshot": save_snapshot,
        "daemon.output_dir": str(out_dir) if out_dir is not None else None,
        "daemon.interval_s": interval_s,
        "daemon.status_addr": status_addr,
        "daemon.env_file": env_file,
    }
    config = load_config(config_path, flags, settle_s=SETTLE_S)
    with errors_as_exit_codes():
        app.output_dir(config)  # refused (exit 2) before the pool starts or anything is made
    environ = environ_for_reload(config, os.environ)

    def reload() -> Config:
        return load(config_path, environ, flags, settle_s=SETTLE_S)

    daemon = Daemon(config, reload=reload, as_of=when)
    try:
        with errors_as_exit_codes():
            asyncio.run(daemon.run())
    except OSError as exc:
        raise CycleFailure(exc.strerror or str(exc)) from None
