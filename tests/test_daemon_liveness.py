"""A daemon and `run-once` against workers that stop moving and plugins that leave processes
behind: real processes, real signals, bounded in time."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from conftest import clean_environ
from daemon_process import DaemonProcess, gone, jsonl, started_daemons, wait_for

TESTS = str(Path(__file__).parent)
#: Far below the forgotten child's minute, generous for a loaded machine.
_RUN_ONCE_BOUND_S = 30.0
_GONE_WITHIN_S = 2.0


daemons = started_daemons


def _all_gone_within(procs: list[psutil.Process], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not all(gone(proc) for proc in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _children(record: Path) -> list[psutil.Process]:
    found = []
    for pid in record.read_text().split():
        try:
            found.append(psutil.Process(int(pid)))
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_stopped_idle_worker_is_killed_and_replaced_while_cycles_go_on(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """SIGSTOP to one idle worker of a running daemon: within seconds it is killed and
    replaced (a cycle counts the timeout and the restarts, the log says why), and cycles go
    on with a whole pool; /healthz stays ok."""
    config = tmp_path / "pool.toml"
    config.write_text("[sources]\nsynthetic_markets = 2500\n[batch]\nworkers = 2\n"
                      "timeout_ms = 500\n[daemon]\ninterval_s = 1\n")
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--out", "out")
    daemons.append(daemon)
    metrics = tmp_path / "out" / "metrics.jsonl"
    wait_for("a first cycle", lambda: jsonl(metrics))
    wait_for("the pool idle between cycles",
             lambda: daemon.get("/healthz").json()["cycle_running_s"] is None)
    stopped = daemon.workers()[0]
    daemon.remember_descendants()
    stopped.send_signal(signal.SIGSTOP)
    wait_for("the stopped worker killed", lambda: gone(stopped))
    # The kill counts in the cycle that made it; the new workers in the one that started them
    # (the next, when the kill came as its cycle ended).
    killed = wait_for("a cycle counting the kill",
                      lambda: [line for line in jsonl(metrics) if line["timeouts"]])[0]
    replaced = wait_for("a cycle counting the new workers", lambda: [
        line for line in jsonl(metrics)
        if line["worker_restarts"] and line["cycle_id"] >= killed["cycle_id"]])[0]
    after = replaced["cycle_id"]
    wait_for("two more cycles", lambda: jsonl(metrics)[-1]["cycle_id"] >= after + 2)
    kill = daemon.log_with(event="worker_killed")
    assert kill is not None and f"worker {stopped.pid}" in kill["message"]
    assert "stopped" in kill["message"]
    assert len(daemon.workers()) == 2
    assert daemon.get("/healthz").status_code == 200
    daemon.remember_descendants()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.leftovers() == []


def test_run_once_returns_and_leaves_nothing_of_a_plugins_children(tmp_path: Path) -> None:
    """A plugin forks a child that sleeps a minute in each worker: `run-once` still returns
    as soon as its cycle is written, and within two seconds none of those children is
    alive."""
    record = tmp_path / "children"
    environ = clean_environ()
    environ.update({"PYTHONPATH": TESTS, "POMABOTD_TEST_CHILDREN": str(record),
                    "BATCH_EVALUATOR": "forking_evaluator:evaluate", "BATCH_WORKERS": "2"})
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pomabotd", "run-once", "--out", "out", "--json"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120,
    )
    took = time.monotonic() - started
    children = _children(record)
    assert result.returncode == 0, result.stderr
    assert record.read_text().split()
    assert took < _RUN_ONCE_BOUND_S, f"run-once took {took:.1f} s"
    assert _all_gone_within(children, _GONE_WITHIN_S)


def test_a_daemon_whose_plugin_forked_stops_promptly(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """A daemon running a plugin that forks a sleeping child in each worker: SIGTERM ends
    it within its stop timeout plus a margin, and none of those children is left."""
    record = tmp_path / "children"
    daemon = DaemonProcess(tmp_path, "--out", "out", "--interval", "0.2", env={
        "PYTHONPATH": TESTS, "POMABOTD_TEST_CHILDREN": str(record),
        "BATCH_EVALUATOR": "forking_evaluator:evaluate", "BATCH_WORKERS": "2",
    })
    daemons.append(daemon)
    wait_for("a cycle", lambda: jsonl(tmp_path / "out" / "metrics.jsonl"))
    daemon.remember_descendants()
    children = _children(record)
    assert children
    signalled = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert time.monotonic() - signalled < 10 + 4.0  # stop_timeout_s, then the workers
    assert _all_gone_within(children, _GONE_WITHIN_S)
    assert daemon.leftovers() == []
