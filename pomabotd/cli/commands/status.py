"""`pomabotd status`: ask a running daemon's `/healthz` how it is."""

from __future__ import annotations

from pathlib import Path

import click

from pomabotd.cli.base import Command
from pomabotd.cli.options import config_option

__all__ = ["status"]

_STATUS_TIMEOUT_S = 5.0


@click.command(cls=Command)
@click.option("--addr", metavar="HOST:PORT",
              help="The daemon's status address (default: daemon.status_addr).")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's health as JSON.")
def status(addr: str | None, config_path: Path | None, as_json: bool) -> None:
    """Ask a running daemon how it is: exit 0 healthy, 1 unhealthy, 2 unreachable."""
    import httpx
    import msgspec

    from pomabotd.cli.common import UsageFailure, load_config
    from pomabotd.words import plural

    config = load_config(config_path, {"daemon.status_addr": addr})
    endpoint = config.daemon.status_endpoint()
    if endpoint is None:
        raise UsageFailure("no status address: give --addr HOST:PORT or set daemon.status_addr")
    host, port = endpoint
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    try:
        response = httpx.get(url, timeout=_STATUS_TIMEOUT_S)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        click.echo(f"unreachable: {url}: {exc}", err=True)
        raise SystemExit(2) from None
    healthy = response.status_code == 200
    if as_json:
        click.echo(msgspec.json.encode(body).decode())
    else:
        state = "healthy" if healthy else f"unhealthy: {body.get('reason')}"
        click.echo(f"{state} (pid {body.get('pid')}, up {body.get('uptime_s')} s, "
                   f"{plural(body.get('cycles_ok', 0), 'cycle')} ok, "
                   f"{body.get('cycles_failed')} failed)")
        click.echo(str(body.get("summary", "")))
        if body.get("halted"):
            pending = "; a resume request waits for the next cycle" \
                if body.get("resume_pending") else ""
            click.echo(f"halted since cycle {body.get('halted_since_cycle')}: "
                       f"{body.get('halt_reason')}{pending}")
    if not healthy:
        raise SystemExit(1)
