"""`pomabotd run` as a real process: cycles, status endpoint, reload, stop, crashes, sd_notify."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import psutil
import pytest
from conftest import RunCli, clean_environ
from daemon_process import DaemonProcess, jsonl, wait_for
from exposition import EXPOSED_SERIES, exposed_series

from pomabotd.engine.kernels import native

#: For the tests of configuration, health and the ledger, where the pool plays no part: a
#: daemon without one starts in a fraction of the time and CPU.
NO_POOL = {"BATCH_WORKERS": "0"}

#: Seconds a stop may take beyond what it waits for (a cycle's stop_timeout_s): the workers'
#: shutdown and the interpreter's, on a busy shared machine.
_PROMPTLY_S = 4.0


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts; each is killed (by pid, with its processes) afterwards."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.finish()


def _start(daemons: list[DaemonProcess], workdir: Path, *args: str,
           env: dict[str, str] | None = None) -> DaemonProcess:
    daemon = DaemonProcess(workdir, *args, env=env)
    daemons.append(daemon)
    return daemon


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's notify socket, read as
    systemd reads it: all the time, by a thread."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.address = address
        self.messages: list[list[str]] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append(data.decode().split("\n"))

    def fields(self) -> list[str]:
        time.sleep(0.1)
        return [field for message in list(self.messages) for field in message]

    def seen(self, field: str) -> bool:
        """Whether a message carrying `field` has arrived yet."""
        return any(field in message for message in list(self.messages))

    def close(self) -> None:
        self._stop.set()
        self._reader.join()
        self.sock.close()


def _check_ledger(out: Path) -> tuple[list[dict], list[dict]]:
    """Every line parses, cycles are consecutive and unique, every position line belongs to a
    finished cycle, and no market is opened again while its position is open."""
    metrics = jsonl(out / "metrics.jsonl")
    positions = jsonl(out / "positions.jsonl")
    ids = [m["cycle_id"] for m in metrics]
    assert ids == list(range(1, len(ids) + 1)), ids
    assert {e["cycle_id"] for e in positions} <= set(ids)
    held: set[str] = set()
    for event in positions:
        if event["event"] == "open":
            assert event["market_id"] not in held, event
            held.add(event["market_id"])
        else:
            held.discard(event["market_id"])
    return metrics, positions


@pytest.mark.slow
def test_daemon_cycles_serves_status_and_stops_cleanly(
    daemons: list[DaemonProcess], tmp_path: Path, run_cli: RunCli
) -> None:
    """A daemon on a short interval runs cycles on one warm pool, answers every endpoint,
    tells systemd it is ready and alive, and on SIGTERM exits 0 leaving no process behind."""
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        daemon = _start(daemons, tmp_path, "--interval", "0.2", "--out", "out", env={
            "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000",
        })
        wait_for("three cycles", lambda: len(jsonl(tmp_path / "out" / "metrics.jsonl")) >= 3)
        workers = {p.pid for p in daemon.remember_descendants()}
        assert len(workers) >= 3  # fork server, resource tracker, workers

        health = daemon.get("/healthz")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok" and body["cycles_ok"] >= 3
        assert body["last_cycle"]["markets_total"] == 1000
        assert body["decoder"] == ("native" if native.available() else "msgspec")
        positions = daemon.get("/api/positions").json()
        assert positions["open_positions"]
        # The synthetic world's prices move: a position may close within these cycles.
        assert positions["equity_usd"] == round(10000.0 + positions["realized_pnl_usd"], 2)
        config = daemon.get("/api/batch/config").json()
        assert config["daemon.interval_s"] == {"value": 0.2, "source": "flag:--interval"}
        exposition = daemon.get("/metrics")
        assert exposition.headers["content-type"].startswith("text/plain")
        assert exposed_series(exposition.text) == EXPOSED_SERIES
        assert 'pomabotd_cycles_total{result="ok"}' in exposition.text
        if shutil.which("promtool"):
            lint = subprocess.run(["promtool", "check", "metrics"], input=exposition.text,
                                  capture_output=True, text=True, timeout=30)
            assert lint.returncode == 0, lint.stdout + lint.stderr

        status = run_cli("status", "--addr", daemon.url.removeprefix("http://"))
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("healthy") and "markets" in status.stdout

        later = wait_for("more cycles", lambda: daemon.get("/healthz").json()["cycles_ok"] > 4)
        assert later
        assert {p.pid for p in daemon.remember_descendants()} == workers  # one pool throughout
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        assert daemon.leftovers() == []
        fields = notify.fields()
    finally:
        notify.close()
    metrics, _ = _check_ledger(tmp_path / "out")
    assert fields[0] == "READY=1"
    assert "WATCHDOG=1" in fields and "STOPPING=1" in fields
    assert any(f.startswith("STATUS=cycle ") for f in fields)
    stop = daemon.log_with(event="start")
    assert stop is not None and stop["level"] == "INFO"
    lines = daemon.logs()
    assert all("event" in line for line in lines), [ln for ln in lines if "event" not in ln]
    cycle_lines = [line for line in lines if line["event"] == "cycle"]
    assert len(cycle_lines) == len(metrics)
    assert [line["cycle_id"] for line in cycle_lines] == [m["cycle_id"] for m in metrics]
    assert set(cycle_lines[0]) >= {"time", "level", "message", "markets", "opportunities",
                                   "opened", "closed", "throughput_per_s", "peak_rss_mb"}
    assert cycle_lines[0]["time"].endswith("Z")


def test_sighup_reloads_the_toml_and_env_file_and_survives_a_broken_one(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """Edited TOML and env file take effect on SIGHUP (batch mode switched on, new values with
    their sources); a broken TOML then keeps the old values and logs one error naming the file
    and line; systemd hears RELOADING=1 with MONOTONIC_USEC and READY=1 on an abstract socket."""
    env_file = tmp_path / "env"
    env_file.write_text("# operator settings\nBATCH_MODE_ENABLED=false\n")
    config = tmp_path / "pomabotd.toml"
    config.write_text(f'[daemon]\ninterval_s = 0.2\nenv_file = "{env_file}"\n')
    notify = NotifySocket(f"@pomabotd-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        daemon = _start(daemons, tmp_path, "--config", str(config), "--out", "out",
                        env={"NOTIFY_SOCKET": notify.address, "BATCH_SIZE": "50", **NO_POOL})
        daemon.wait_log(event="start")
        assert daemon.get("/healthz").json()["batch_enabled"] is False
        time.sleep(0.5)
        assert not (tmp_path / "out" / "metrics.jsonl").read_bytes()  # no cycle while off

        env_file.write_text("# operator settings\nBATCH_MODE_ENABLED=true\n\nBATCH_SIZE=7\n")
        config.write_text(f'[daemon]\ninterval_s = 0.2\nenv_file = "{env_file}"\n'
                          "[risk]\nmin_edge = 17.5\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_log(event="reload")
        shown = daemon.get("/api/batch/config").json()
        assert shown["batch.batch_size"] == {"value": 7, "source": f"env-file:{env_file}:4"}
        assert shown["risk.min_edge"] == {"value": 17.5, "source": f"file:{config}"}
        assert shown["batch.enabled"]["value"] is True
        wait_for("a cycle after enabling", lambda: jsonl(tmp_path / "out" / "metrics.jsonl"))

        config.write_text("[risk]\nmin_edge = \n")
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_log(event="reload_failed")
        assert str(config) in failed["message"] and "line 2" in failed["message"]
        assert failed["level"] == "ERROR" and "\n" not in failed["message"]
        assert daemon.process.poll() is None
        shown = daemon.get("/api/batch/config").json()
        assert shown["risk.min_edge"]["value"] == 17.5
        exposition = daemon.get("/metrics").text
        assert 'pomabotd_reloads_total{result="ok"} 1.0' in exposition
        assert 'pomabotd_reloads_total{result="failed"} 1.0' in exposition
        daemon.signal(signal.SIGINT)
        assert daemon.wait_exit() == 0
        fields = notify.fields()
    finally:
        notify.close()
    reloading = [f for f in fields if f.startswith(("RELOADING", "MONOTONIC_USEC", "READY"))]
    assert reloading[0] == "READY=1" and reloading[1] == "RELOADING=1"
    assert reloading[2].startswith("MONOTONIC_USEC=") and reloading[3] == "READY=1"
    assert reloading.count("RELOADING=1") == 2 and reloading[-1] == "READY=1"
    assert "STOPPING=1" in fields


@pytest.mark.slow
def test_sigterm_mid_cycle_lets_it_finish_and_a_second_signal_abandons_it(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """SIGTERM mid-cycle: the cycle finishes and is written, exit 0. SIGTERM then SIGINT: the
    cycle in flight is abandoned at once, nothing of it written, exit 0. No process is left.

    The cycle is held in flight by its evaluator in the pool's workers (a plugin that waits for
    the test's word), not by its size, so that a slow machine cannot end it before a signal
    lands: the stop is acted on mid-cycle (systemd hears STOPPING=1), and only then is the
    first cycle let go; the second never is."""
    config = tmp_path / "held.toml"
    config.write_text(
        '[sources]\nsynthetic_markets = 200\n[daemon]\ninterval_s = 0.05\nstop_timeout_s = 60\n'
        '[batch]\nworkers = 2\ntimeout_ms = 600000\nevaluator = "blocking_evaluator:evaluate"\n'
    )
    for second_signal, out in ((None, "finish"), (signal.SIGINT, "abandon")):
        started, release = tmp_path / f"{out}.started", tmp_path / f"{out}.release"
        notify = NotifySocket(str(tmp_path / f"{out}.sock"))
        try:
            env = {"PYTHONPATH": str(Path(__file__).parent), "NOTIFY_SOCKET": notify.address,
                   "POMABOTD_TEST_STARTED": str(started)}
            if second_signal is None:
                env["POMABOTD_TEST_RELEASE"] = str(release)
            daemon = _start(daemons, tmp_path, "--config", str(config), "--out", out, env=env)
            wait_for("an evaluation in flight", started.exists)
            daemon.remember_descendants()
            daemon.signal(signal.SIGTERM)
            wait_for("the stop seen mid-cycle", partial(notify.seen, "STOPPING=1"))
            assert not jsonl(tmp_path / out / "metrics.jsonl")  # still in flight
            if second_signal is None:
                release.touch()
            else:
                daemon.signal(second_signal)
            assert daemon.wait_exit() == 0
            assert daemon.leftovers() == []
        finally:
            notify.close()
        metrics, _ = _check_ledger(tmp_path / out)
        abandoned = daemon.log_with(event="cycle_abandoned")
        if second_signal is None:
            assert abandoned is None and len(metrics) == 1
        else:
            assert abandoned is not None and abandoned["cycle_id"] == 1 and metrics == []


@pytest.mark.slow
def test_kill_9_mid_cycle_three_times_then_restart(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """SIGKILL mid-cycle, three times: every process pomabotd started is gone within 2 s; a
    restart then continues the ledger: no torn line, no cycle twice, no market opened twice."""
    config = tmp_path / "pomabotd.toml"
    config.write_text("[sources]\nsynthetic_markets = 8000\n[daemon]\ninterval_s = 0.01\n"
                      "[risk]\nmax_positions_per_category = 4\nmax_portfolio_risk = 60\n")
    for round_ in range(3):
        daemon = _start(daemons, tmp_path, "--config", str(config), "--out", "out")
        daemon.wait_mid_cycle(after_cycles=1 if round_ == 0 else 0)
        recorded = daemon.remember_descendants()
        assert len(recorded) >= 3
        daemon.signal(signal.SIGKILL)
        daemon.wait_exit()
        assert daemon.leftovers(within=2.0) == [], f"orphans after kill {round_ + 1}"
        _check_ledger(tmp_path / "out")
        # The resource tracker, which outlives pomabotd by a moment, adds no plain-text line.
        lines = daemon.log_path.read_text().splitlines()
        assert lines and all(line.startswith("{") for line in lines), lines
    daemon = _start(daemons, tmp_path, "--config", str(config), "--out", "out")
    before = len(jsonl(tmp_path / "out" / "metrics.jsonl"))
    wait_for("two more cycles",
             lambda: len(jsonl(tmp_path / "out" / "metrics.jsonl")) >= before + 2)
    daemon.remember_descendants()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.leftovers() == []
    metrics, positions = _check_ledger(tmp_path / "out")
    assert len(metrics) >= before + 2 and positions
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert state["last_cycle_id"] == metrics[-1]["cycle_id"]


@pytest.mark.slow
def test_sigterm_during_a_long_load_exits_within_stop_timeout(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """SIGTERM while a cycle generates 2,000,000 markets (about 9 s of work off the event
    loop, so well past stop_timeout_s plus the margin; a stopped generation ends at its next
    block, long before most of the input exists): the daemon exits 0 within stop_timeout_s plus
    a margin, not when the generation would have ended; nothing of the cycle is written and no
    process is left."""
    config = tmp_path / "big.toml"
    config.write_text("[sources]\nsynthetic_markets = 2000000\n[daemon]\nstop_timeout_s = 1\n")
    daemon = _start(daemons, tmp_path, "--config", str(config), "--out", "out")
    daemon.wait_mid_cycle()
    daemon.remember_descendants()
    time.sleep(0.3)
    daemon.signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert daemon.wait_exit() == 0
    stopped_s = time.monotonic() - signalled
    assert stopped_s < 1 + _PROMPTLY_S, f"exited {stopped_s:.1f} s after SIGTERM"
    assert daemon.leftovers() == []
    assert not (tmp_path / "out" / "metrics.jsonl").read_bytes()
    assert daemon.log_with(event="cycle_abandoned", cycle_id=1) is not None


def test_a_failing_cycle_makes_the_daemon_unhealthy(
    daemons: list[DaemonProcess], tmp_path: Path, run_cli: RunCli
) -> None:
    """A cycle that cannot load its input fails: /healthz says 503 with the reason, `status`
    exits 1, the log names the file, the daemon lives on; a closed port makes `status` exit 2."""
    daemon = _start(daemons, tmp_path, "--markets", "missing.jsonl", "--interval", "0.2",
                    "--out", "out", env=NO_POOL)
    failed = daemon.wait_log(event="cycle_failed")
    assert "missing.jsonl" in failed["message"]
    health = daemon.get("/healthz")
    assert health.status_code == 503 and "missing.jsonl" in health.json()["reason"]
    address = daemon.url.removeprefix("http://")
    status = run_cli("status", "--addr", address)
    assert status.returncode == 1 and status.stdout.startswith("unhealthy")
    assert not (tmp_path / "out" / "metrics.jsonl").read_bytes()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    unreachable = run_cli("status", "--addr", address)
    assert unreachable.returncode == 2 and "unreachable" in unreachable.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("command", "signum"), [
    (("run-once", "--out", "out"), signal.SIGTERM),
    (("stress", "--markets", "200000"), signal.SIGINT),
])
def test_a_signal_abandons_run_once_and_stress_with_128_plus_its_number(
    tmp_path: Path, command: tuple[str, ...], signum: int
) -> None:
    """run-once and stress stopped by a signal write nothing, leave no process, and exit
    with 128 + the signal's number."""
    config = tmp_path / "big.toml"
    config.write_text("[sources]\nsynthetic_markets = 200000\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "pomabotd", *command, "--config", str(config)],
        cwd=tmp_path, env=clean_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    seen: dict[int, psutil.Process] = {}
    try:
        def pool_up() -> bool:
            for child in psutil.Process(process.pid).children(recursive=True):
                seen.setdefault(child.pid, child)
            return len(seen) >= 3

        wait_for("the worker pool", pool_up)
        time.sleep(0.3)  # generating the 200,000 markets now: seconds of work in a thread
        os.kill(process.pid, signum)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        stopped_s = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signum, stderr
    assert b"abandoned" in stderr
    assert stopped_s < _PROMPTLY_S, f"exited {stopped_s:.1f} s after the signal"
    assert not (tmp_path / "out").exists()
    deadline = time.monotonic() + 2
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in seen.values()):
        assert time.monotonic() < deadline, "a process outlived pomabotd"
        time.sleep(0.02)


def test_a_line_deleted_from_the_env_file_reverts_on_reload(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """Started as systemd starts it (the env file also copied into the process environment,
    named by --env-file), a daemon whose env file loses a line reverts that key to the TOML
    value on SIGHUP; a variable the environment set on its own keeps counting."""
    env_file = tmp_path / "env"
    env_file.write_text("BATCH_SIZE=50\nBATCH_RETRY_ATTEMPTS=1\n")
    config = tmp_path / "pomabotd.toml"
    config.write_text("[batch]\nenabled = false\nbatch_size = 25\n")
    daemon = _start(daemons, tmp_path, "--config", str(config), "--env-file", str(env_file),
                    "--out", "out", env={"BATCH_SIZE": "50", "BATCH_RETRY_ATTEMPTS": "1",
                                         "BATCH_TIMEOUT_MS": "900", **NO_POOL})
    daemon.wait_log(event="start")
    shown = daemon.get("/api/batch/config").json()
    assert shown["daemon.env_file"] == {"value": str(env_file), "source": "flag:--env-file"}
    assert shown["batch.batch_size"] == {"value": 50, "source": f"env-file:{env_file}:1"}

    env_file.write_text("BATCH_RETRY_ATTEMPTS=1\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(event="reload")
    shown = daemon.get("/api/batch/config").json()
    assert shown["batch.batch_size"] == {"value": 25, "source": f"file:{config}"}
    assert shown["batch.retry_attempts"] == {"value": 1, "source": f"env-file:{env_file}:1"}
    assert shown["batch.timeout_ms"] == {"value": 900, "source": "env:BATCH_TIMEOUT_MS"}
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_a_reload_reads_the_new_configuration_before_reopening_files(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """With log.file's directory deleted, a reload that drops log.file succeeds (the old file is
    not reopened first); a reload naming a file that cannot be opened fails naming log.file,
    the path and where the setting came from, and the daemon runs on."""
    logs = tmp_path / "logs"
    logs.mkdir()
    config = tmp_path / "pomabotd.toml"
    config.write_text(f'[batch]\nenabled = false\n[log]\nfile = "{logs}/daemon.log"\n')
    daemon = _start(daemons, tmp_path, "--config", str(config), "--out", "out", env=NO_POOL)
    daemon.wait_log(event="start")
    shutil.rmtree(logs)
    config.write_text("[batch]\nenabled = false\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(event="reload")
    config.write_text(f'[batch]\nenabled = false\n[log]\nfile = "{logs}/daemon.log"\n')
    daemon.signal(signal.SIGHUP)
    failed = daemon.wait_log(event="reload_failed")
    assert f"log.file '{logs}/daemon.log' (from file {config}) cannot be opened" in (
        failed["message"]), failed["message"]
    assert daemon.get("/api/batch/config").json()["log.file"]["value"] == ""
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_a_deleted_output_directory_fails_cycles_until_a_reload_starts_it_again(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """Removing the output directory of a running daemon is noticed: cycles fail naming it
    (/healthz 503) instead of writing to unlinked files; a reload starts a new ledger there and
    the next cycle is written and healthy."""
    out = tmp_path / "out"
    daemon = _start(daemons, tmp_path, "--interval", "0.2", "--out", "out", env=NO_POOL)
    wait_for("a cycle", lambda: jsonl(out / "metrics.jsonl"))
    shutil.rmtree(out)
    failed = daemon.wait_log(event="cycle_failed")
    assert f"output directory {out.name} was removed or replaced" in failed["message"]
    health = daemon.get("/healthz")
    assert health.status_code == 503 and "was removed or replaced" in health.json()["reason"]
    assert not out.exists()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(event="reload")
    wait_for("a cycle in the new ledger", lambda: jsonl(out / "metrics.jsonl"))
    wait_for("health again", lambda: daemon.get("/healthz").status_code == 200)
    assert jsonl(out / "metrics.jsonl")[0]["cycle_id"] == 1
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
