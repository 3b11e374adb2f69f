"""Nothing a file can do blocks a real daemon: a FIFO as a feed or as the configuration, a
reload stuck in a read; /healthz keeps answering and SIGTERM is honoured in every state."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import DATA
from daemon_process import DaemonProcess, started_daemons, wait_for, write_toml

daemons = started_daemons

FED_FEED = DATA / "rss" / "fed_press_all_2026-09.xml"
#: Seconds a stop may take beyond daemon.stop_timeout_s: the workers' shutdown and the
#: interpreter's, on a busy shared machine.
PROMPTLY_S = 4.0
STOP_TIMEOUT_S = 2.0
#: Seconds the worker pool may still take to come up after a stop signal during the start
#: (its workers import the evaluator; about 1.5 s under a load of 15 on 2 cores): the pool
#: is started whole, then stopped.
WARM_UP_S = 6.0


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO nobody writes to; any reader stuck on it is released at the end."""
    path = tmp_path / "stuck.fifo"
    os.mkfifo(path)
    yield path
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def _config(path: Path, **sections: dict[str, object]) -> Path:
    return write_toml(path, {"batch": {"workers": 0},
                             "daemon": {"stop_timeout_s": STOP_TIMEOUT_S}, **sections})


def _healthz(daemon: DaemonProcess) -> dict | None:
    """/healthz's body, or None when it does not answer within 2 s."""
    try:
        return httpx.get(daemon.url + "/healthz", timeout=2).json()
    except httpx.HTTPError:
        return None


def _stops_promptly(daemon: DaemonProcess) -> None:
    """SIGTERM: the daemon exits 0 within stop_timeout_s and a little, leaving nothing."""
    daemon.remember_descendants()
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=STOP_TIMEOUT_S + PROMPTLY_S + 5) == 0
    assert time.monotonic() - started < STOP_TIMEOUT_S + PROMPTLY_S
    assert daemon.leftovers() == []


def test_a_feed_that_is_a_fifo_does_not_freeze_the_daemon(
    daemons: list[DaemonProcess], tmp_path: Path, fifo: Path
) -> None:
    """A feed path that is a FIFO nobody writes to: cycles go on with the other feed, the
    FIFO counted as a failed feed, /healthz answers, SIGTERM stops the daemon at once."""
    config = _config(tmp_path / "pomabotd.toml",
                     sources={"feeds": [str(fifo), str(FED_FEED)], "feed_min_interval_s": 0.0})
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--interval", "0.2",
                           "--out", "out")
    daemons.append(daemon)
    body = wait_for("three cycles", lambda: (_healthz(daemon) or {}).get("cycles_ok", 0) >= 3,
                    timeout=30)
    assert body
    failed = daemon.wait_log(event="feed_failed", timeout=10)
    assert "is a FIFO (named pipe), not a regular file" in failed["message"]
    metrics = httpx.get(daemon.url + "/metrics", timeout=5).text
    assert f'pomabotd_source_fetch_errors_total{{source="{fifo}"}}' in metrics
    _stops_promptly(daemon)


def test_a_configuration_file_that_became_a_fifo_fails_the_reload_only(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """The TOML file replaced by a FIFO, then SIGHUP: the reload fails saying what the file
    is, the daemon keeps running and answering, and SIGTERM stops it at once."""
    config = _config(tmp_path / "pomabotd.toml")
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--interval", "0.2",
                           "--out", "out")
    daemons.append(daemon)
    daemon.wait_log(event="start")
    config.unlink()
    os.mkfifo(config)
    try:
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_log(event="reload_failed", timeout=10)
        assert "is a FIFO (named pipe), not a regular file" in failed["message"]
        assert _healthz(daemon) is not None
        _stops_promptly(daemon)
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(config, os.O_WRONLY | os.O_NONBLOCK))


def test_a_reload_stuck_in_a_read_does_not_hold_the_stop(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """A reload whose configuration never finishes loading (its plugin's import hangs, as a
    read on a dead network mount would): /healthz still answers, and SIGTERM stops the daemon
    within stop_timeout_s, the reload abandoned."""
    config = _config(tmp_path / "pomabotd.toml")
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--interval", "0.2",
                           "--out", "out", env={"PYTHONPATH": str(Path(__file__).parent)})
    daemons.append(daemon)
    daemon.wait_log(event="start")
    _config(config, batch={"workers": 0, "evaluator": "hanging_plugin:evaluate"})
    daemon.signal(signal.SIGHUP)
    time.sleep(0.5)  # the reload is under way: it cannot finish for 60 s
    assert _healthz(daemon) is not None
    _stops_promptly(daemon)
    assert daemon.log_with(event="reload_abandoned") is not None


def test_sigterm_during_start_is_honoured(daemons: list[DaemonProcess], tmp_path: Path) -> None:
    """SIGTERM while the daemon is still starting (its worker pool warming up): it exits 0
    once the pool is up, without a cycle, within stop_timeout_s, leaving nothing behind."""
    config = _config(tmp_path / "pomabotd.toml", batch={"workers": 2})
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--out", "out")
    daemons.append(daemon)
    wait_for("the worker pool starting", daemon.remember_descendants, timeout=30)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    bound = STOP_TIMEOUT_S + PROMPTLY_S + WARM_UP_S
    assert daemon.wait_exit(timeout=bound + 5) == 0
    assert time.monotonic() - started < bound
    assert daemon.leftovers() == []
    assert daemon.log_with(event="cycle") is None


def test_a_resume_request_that_is_a_fifo_fails_the_cycle_instead_of_hanging(
    run_cli, tmp_path: Path
) -> None:
    """`resume.request` replaced by a FIFO nobody writes to: the cycle that looks for it fails
    at once naming the file, instead of waiting on it with the event loop."""
    out = tmp_path / "out"
    first = run_cli("run-once", "--out", str(out), env={"BATCH_WORKERS": "0"}, timeout=60)
    assert first.returncode == 0, first.stderr
    os.mkfifo(out / "resume.request")
    try:
        again = run_cli("run-once", "--out", str(out), env={"BATCH_WORKERS": "0"}, timeout=30)
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(out / "resume.request", os.O_WRONLY | os.O_NONBLOCK))
    assert again.returncode != 0
    assert f"{out / 'resume.request'}" in again.stderr
    assert "is a FIFO (named pipe), not a regular file" in again.stderr
