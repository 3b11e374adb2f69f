"""pomabotd inside the sandbox the shipped unit builds (`tests/sandbox.py`), for real.

The unit's hardening changes what a process can see: `ProcSubset=pid` hides `/proc/stat`,
`ProtectSystem=strict` makes everything but the state directory read-only, `PrivateTmp=` gives
an empty /tmp, `MemoryDenyWriteExecute=` refuses writable code. Building those namespaces needs
root, which CI has; elsewhere these tests are skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import clean_environ
from daemon_process import jsonl, wait_for

SANDBOX = Path(__file__).with_name("sandbox.py")
UNIT = Path(__file__).resolve().parents[1] / "systemd" / "pomabotd.service"
#: System calls pomabotd's processes make that the unit's filter refuses, with why that is
#: harmless (the unit answers them EPERM: `SystemCallErrorNumber=EPERM`).
DENIED_AND_HARMLESS = {
    "mbind": "OpenBLAS (numpy) asks for NUMA placement of its buffers and ignores a refusal",
}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="building the unit's namespaces needs root (CI runs as root)"
)

#: Enough markets for a cycle to go through the pool (smaller ones run in process), so that
#: workers read the input through `/proc/PID/fd/N` of pomabotd's memory file or input file.
POOLED_MARKETS = 5000


def _pooled_environ() -> dict[str, str]:
    return {**clean_environ(), "BATCH_WORKERS": "2"}


def _sandboxed(state: Path, *args: str) -> list[str]:
    return ["unshare", "--mount", "--pid", "--fork", sys.executable, str(SANDBOX), str(state),
            "--", sys.executable, "-m", "pomabotd", *args]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """The state directory the sandbox makes writable (at /tmp/state inside), holding a
    configuration of `POOLED_MARKETS` synthetic markets at /tmp/state/pooled.toml."""
    directory = tmp_path / "state"
    directory.mkdir()
    (directory / "pooled.toml").write_text(
        f"[sources]\nsynthetic_markets = {POOLED_MARKETS}\n"
    )
    yield directory


def test_run_once_works_under_the_units_sandbox(state: Path) -> None:
    """run-once completes a pooled cycle where /proc shows only processes and the system is
    read-only (its workers reading pomabotd's memory file through /proc/PID/fd/N): its metrics
    line is written and it exits 0 without a traceback."""
    result = subprocess.run(
        _sandboxed(state, "run-once", "--config", "/tmp/state/pooled.toml",
                   "--out", "/tmp/state/out", "--json"),
        env=_pooled_environ(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["markets_evaluated"] == POOLED_MARKETS and summary["rss_mb"] > 0
    assert [m["cycle_id"] for m in jsonl(state / "out" / "metrics.jsonl")] == [1]


def test_stress_works_under_the_units_sandbox(state: Path) -> None:
    """stress under the sandbox writes its workload to files in the private /tmp by blocks
    over the pool, has the workers read them through /proc/PID/fd/N, passes its checks, and
    leaves no scratch directory behind."""
    result = subprocess.run(
        _sandboxed(state, "stress", "--markets", str(POOLED_MARKETS), "--json"),
        env=_pooled_environ(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["markets_evaluated"] == POOLED_MARKETS and report["passed"] is True


def test_the_daemon_cycles_and_stops_under_the_units_sandbox(state: Path, tmp_path: Path) -> None:
    """`run` under the sandbox: every cycle succeeds (healthy, two cycles written), SIGTERM
    stops it with exit 0, and nothing of the namespace is left."""
    log = tmp_path / "daemon.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            _sandboxed(state, "run", "--config", "/tmp/state/pooled.toml",
                       "--out", "/tmp/state/out", "--interval", "0.2",
                       "--status-addr", "127.0.0.1:0"),
            env=_pooled_environ(), stdout=subprocess.DEVNULL, stderr=stderr,
        )
    seen: dict[int, psutil.Process] = {}
    try:
        metrics = state / "out" / "metrics.jsonl"

        def cycled() -> bool:
            assert process.poll() is None, log.read_text()
            return len(jsonl(metrics)) >= 2

        wait_for("two cycles", cycled)
        lines = [json.loads(line) for line in log.read_text().splitlines()
                 if line.startswith("{")]
        start = next(line for line in lines if line.get("event") == "start")
        health = httpx.get(f"http://{start['status_addr']}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["cycles_failed"] == 0
        for child in psutil.Process(process.pid).children(recursive=True):
            seen[child.pid] = child
        daemon = psutil.Process(process.pid).children()[0]
        daemon.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "Traceback" not in text and '"level":"ERROR"' not in text, text
    assert len(seen) >= 4  # pomabotd, its fork server, resource tracker and workers
    assert not [p for p in seen.values() if p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE]


def _syscall_groups() -> dict[str, list[str]]:
    listing = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in listing.splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not line.startswith(" ") and text.startswith("@"):
            current = groups.setdefault(text, [])
        elif current is not None:
            current.append(text)
    return groups


def _expand(groups: dict[str, list[str]], names: list[str]) -> set[str]:
    found: set[str] = set()
    for name in names:
        found |= _expand(groups, groups.get(name, [])) if name.startswith("@") else {name}
    return found


def _unit_filter() -> set[str]:
    """The system calls the unit's SystemCallFilter= lines allow, as systemd reads them."""
    groups = _syscall_groups()
    allowed: set[str] = set()
    for line in UNIT.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1]
        if value.startswith("~"):
            allowed -= _expand(groups, value[1:].split())
        else:
            allowed |= _expand(groups, value.split())
    return allowed


@pytest.mark.skipif(shutil.which("strace") is None or shutil.which("systemd-analyze") is None,
                    reason="needs strace and systemd-analyze (.ci/run installs both)")
def test_every_system_call_of_a_cycle_passes_the_units_filter(tmp_path: Path) -> None:
    """run-once of a pooled cycle traced with strace, every process followed (pool, fork
    server, resource tracker): each system call made is one the unit's SystemCallFilter=
    allows, or a documented harmless one it answers with EPERM."""
    trace = tmp_path / "trace.txt"
    config = tmp_path / "pooled.toml"
    config.write_text(f"[sources]\nsynthetic_markets = {POOLED_MARKETS}\n")
    result = subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), sys.executable, "-m", "pomabotd", "run-once",
         "--config", str(config), "--out", str(tmp_path / "out")],
        env=_pooled_environ(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = trace.read_text().splitlines()
    used = {found.group(1) for line in lines
            if (found := re.match(r"\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]", line))}
    # Traced for real: the pool's processes, its fork server's fd passing, the ledger, the
    # memory file holding the input and the workers reading it through /proc/PID/fd/N.
    assert {"sendmsg", "flock", "fdatasync", "memfd_create", "pread64"} <= used
    assert {"clone", "clone3"} & used
    main = int(lines[0].split()[0])
    opened = [(int(found.group(1)), int(found.group(2))) for line in lines
              if (found := re.match(r'(\d+)\s+openat\(AT_FDCWD, "/proc/(\d+)/fd/\d+"', line))]
    assert any(opener != main and owner == main for opener, owner in opened), opened
    refused = used - _unit_filter() - set(DENIED_AND_HARMLESS)
    assert refused == set()
