"""`pomabotd status`: ask a running daemon's `/healthz` how it is.

Without `--addr` it asks the address of the daemon's configuration: the file `--config` or
`$POMABOTD_CONFIG` names, else a service install's `/etc/pomabotd/pomabotd.toml` when it exists
(`$POMABOTD_SERVICE_CONFIG` names another such file), else the default address. When nothing
answers, it says which address it tried, where that came from, and how to point it elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import click

from pomabotd.cli.base import Command
from pomabotd.cli.common import UsageFailure

__all__ = ["SERVICE_CONFIG", "SERVICE_CONFIG_ENV", "status"]

#: Where the service install keeps the daemon's configuration.
SERVICE_CONFIG: Final = Path("/etc/pomabotd/pomabotd.toml")
#: Names another service configuration file to look for instead (an install elsewhere).
SERVICE_CONFIG_ENV: Final = "POMABOTD_SERVICE_CONFIG"
_STATUS_TIMEOUT_S: Final = 5.0
_POINT_IT: Final = ("point it at the daemon with --addr HOST:PORT, or --config FILE naming the "
                    "daemon's configuration")


@click.command(cls=Command)
@click.option("--addr", metavar="HOST:PORT",
              help="The daemon's status address (default: daemon.status_addr of the daemon's "
                   "configuration).")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="The daemon's TOML configuration (default: $POMABOTD_CONFIG, else "
                   f"{SERVICE_CONFIG} when it exists).")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's health as JSON.")
def status(addr: str | None, config_path: Path | None, as_json: bool) -> None:
    """Ask a running daemon how it is: exit 0 healthy, 1 unhealthy, 2 unreachable."""
    import httpx
    import msgspec

    from pomabotd.cli.common import load_config
    from pomabotd.config import default_config_path
    from pomabotd.words import plural

    if config_path is None and default_config_path() is None:
        config_path = _service_config()
    config = load_config(config_path, {"daemon.status_addr": addr},
                         flag_names={"daemon.status_addr": "--addr"}, reader=True)
    address = config.daemon.status_addr
    tried = f"daemon.status_addr {address!r}, from {config.source_phrase('daemon.status_addr')}"
    endpoint = config.daemon.status_endpoint()
    if endpoint is None:
        raise UsageFailure(f"no status address to ask ({tried}): {_POINT_IT}")
    host, port = endpoint
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    try:
        response = httpx.get(url, timeout=_STATUS_TIMEOUT_S)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        click.echo(f"unreachable: nothing answered at {url} ({tried}): {exc}", err=True)
        click.echo(_POINT_IT, err=True)
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


def _service_config() -> Path | None:
    """The service install's configuration file, when there is one."""
    path = Path(os.environ.get(SERVICE_CONFIG_ENV, "").strip() or SERVICE_CONFIG)
    return path if path.is_file() else None
