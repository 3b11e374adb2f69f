"""`pomabotd status` finds a service's daemon without flags, and says what it tried when
nothing answers."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunCli
from daemon_process import DaemonProcess


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One running daemon for the module (in-process evaluation, one cycle an hour)."""
    workdir = tmp_path_factory.mktemp("daemon")
    started = DaemonProcess(workdir, "--interval", "3600", "--out", "out",
                            env={"BATCH_WORKERS": "0"})
    try:
        started.wait_log(event="cycle", cycle_id=1)
        yield started
        started.signal(signal.SIGTERM)
        assert started.wait_exit() == 0
        assert started.leftovers() == []
    finally:
        started.finish()


def _closed_address() -> str:
    """A loopback address where nothing listens (a port just let go of)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _config(path: Path, address: str) -> Path:
    path.write_text(f'[daemon]\nstatus_addr = "{address}"\n')
    return path


def test_status_without_flags_asks_the_service_configurations_address(
    run_cli: RunCli, tmp_path: Path, daemon: DaemonProcess
):
    """With no flag and no $POMABOTD_CONFIG, `status` reads the service configuration (the
    file $POMABOTD_SERVICE_CONFIG names in place of /etc/pomabotd/pomabotd.toml) and asks
    the daemon at its address."""
    service = _config(tmp_path / "pomabotd.toml", daemon.url.removeprefix("http://"))
    result = run_cli("status", env={"POMABOTD_SERVICE_CONFIG": str(service)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("healthy (pid ") and "1 cycle ok" in result.stdout


def test_pomabotd_config_comes_before_the_service_configuration(
    run_cli: RunCli, tmp_path: Path, daemon: DaemonProcess
):
    """$POMABOTD_CONFIG names the configuration to ask even when a service configuration
    exists: its address is the one tried."""
    service = _config(tmp_path / "service.toml", daemon.url.removeprefix("http://"))
    closed = _closed_address()
    own = _config(tmp_path / "own.toml", closed)
    result = run_cli("status", env={"POMABOTD_SERVICE_CONFIG": str(service),
                                    "POMABOTD_CONFIG": str(own)})
    assert result.returncode == 2
    assert f"http://{closed}/healthz" in result.stderr and str(own) in result.stderr


def test_nothing_answering_names_the_address_tried_and_how_to_point_it(
    run_cli: RunCli, tmp_path: Path
):
    """When nothing answers, `status` exits 2 naming the URL it tried, the file the address
    came from, and the options that point it elsewhere (--addr, --config)."""
    closed = _closed_address()
    service = _config(tmp_path / "pomabotd.toml", closed)
    result = run_cli("status", env={"POMABOTD_SERVICE_CONFIG": str(service)})
    assert result.returncode == 2
    assert f"unreachable: nothing answered at http://{closed}/healthz" in result.stderr
    assert f"from file {service}" in result.stderr
    assert "--addr HOST:PORT" in result.stderr and "--config FILE" in result.stderr


def test_a_bad_addr_is_named_as_addr(run_cli: RunCli):
    """`status --addr nonsense` exits 2 naming --addr, the option given, not --status-addr."""
    result = run_cli("status", "--addr", "nonsense")
    assert result.returncode == 2
    assert "from flag --addr" in result.stderr and "--status-addr" not in result.stderr


def test_an_empty_addr_says_there_is_nothing_to_ask(run_cli: RunCli):
    """`status --addr ''` exits 2: no address to ask, from --addr, and how to give one."""
    result = run_cli("status", "--addr", "")
    assert result.returncode == 2
    assert "no status address to ask (daemon.status_addr '', from flag --addr)" in result.stderr
    assert "--addr HOST:PORT" in result.stderr


def test_the_daemons_own_configuration_is_read_for_its_address_alone(
    run_cli: RunCli, tmp_path: Path, daemon: DaemonProcess
):
    """A service configuration whose strategy plugin is importable only in the service's
    environment, whose env file only root reads (here: one that cannot be read at all) and
    whose log file this user cannot open: `status` still asks the daemon at its address, and
    `verify`, `report` and `resume` still find its output directory."""
    address = daemon.url.removeprefix("http://")
    (tmp_path / "env").mkdir()  # reading it fails
    service = tmp_path / "pomabotd.toml"
    service.write_text(
        '[batch]\nevaluator = "only_in_the_service:evaluate"\n'
        f'[daemon]\nstatus_addr = "{address}"\nenv_file = "{tmp_path / "env"}"\n'
        f'output_dir = "{daemon.workdir / "out"}"\n'
        f'[log]\nfile = "{tmp_path / "no-such-directory" / "pomabotd.log"}"\n'
    )
    result = run_cli("status", env={"POMABOTD_SERVICE_CONFIG": str(service)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("healthy (pid ")
    result = run_cli("verify", "--config", str(service))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{daemon.workdir / 'out'} is sound: 1 metrics line "
                                    "(cycle 1), ")
    result = run_cli("resume", "--config", str(service))
    assert result.returncode == 0, result.stderr
    assert "is not halted" in result.stdout
    result = run_cli("report", "--config", str(service), "--plots", "plots")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "no-such-directory").exists()
    result = run_cli("run-once", "--config", str(service))  # a command that runs the plugin
    assert result.returncode == 2
    assert "only_in_the_service" in result.stderr
