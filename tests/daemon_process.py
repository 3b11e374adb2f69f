"""A real `pomabotd run` process for the daemon tests: started, watched, signalled, ended."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from conftest import clean_environ

LOG_WAIT_S = 60.0


def write_toml(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    """A TOML configuration file of these tables (values written as JSON, which TOML reads)."""
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _limit_open_files(limits: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def wait_for(what: str, check: Callable[[], Any], timeout: float = LOG_WAIT_S) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`.

    Every 20 ms at first, then less often, up to every 0.1 s: a check may parse a whole log
    or ask a daemon for /metrics, and a wait of ten seconds polled at 20 ms costs more CPU
    than the daemon it waits for."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 1.2, 0.1)


def jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file, decoded (a torn line fails the test)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class DaemonProcess:
    """`python -m pomabotd run ...` in `workdir`, its stderr (JSON log lines) in a file.

    `nofile` (soft, hard) sets the daemon's open-file limit before it starts, as systemd's
    `LimitNOFILE=` would. The status endpoint is on `status_addr` (any free loopback port).
    """

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None,
                 nofile: tuple[int, int] | None = None,
                 status_addr: str = "127.0.0.1:0") -> None:
        self.workdir = workdir
        self.log_path = workdir / f"daemon-{time.monotonic_ns()}.log"
        environ = clean_environ()
        environ.update(env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in finish)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pomabotd", "run", "--status-addr", status_addr, *args],
            cwd=workdir, env=environ, stdout=subprocess.DEVNULL, stderr=self._log,
            preexec_fn=None if nofile is None else partial(_limit_open_files, nofile),
        )
        self.pid = self.process.pid
        self.seen: dict[int, psutil.Process] = {}

    # --- watching -------------------------------------------------------------------------

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far."""
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def log_with(self, **fields: Any) -> dict[str, Any] | None:
        """The first log line carrying all these fields, if any."""
        for line in self.logs():
            if all(line.get(k) == v for k, v in fields.items()):
                return line
        return None

    def wait_log(self, timeout: float = LOG_WAIT_S, **fields: Any) -> dict[str, Any]:
        """Wait for a log line carrying these fields."""
        return wait_for(f"log line {fields}", lambda: self._alive_and(self.log_with, **fields),
                        timeout)

    def _alive_and(self, check: Callable[..., Any], **fields: Any) -> Any:
        found = check(**fields)
        if not found and self.process.poll() is not None:
            raise AssertionError(
                f"pomabotd exited with {self.process.returncode}:\n{self.log_path.read_text()}"
            )
        return found

    @property
    def url(self) -> str:
        """The status endpoint's base URL, once the daemon logged its start."""
        return f"http://{self.wait_log(event='start')['status_addr']}"

    def get(self, path: str) -> httpx.Response:
        """GET a path of the status endpoint."""
        return httpx.get(self.url + path, timeout=10)

    def remember_descendants(self) -> list[psutil.Process]:
        """Record every process the daemon runs now, to check later that none outlived it."""
        for proc in psutil.Process(self.pid).children(recursive=True):
            self.seen.setdefault(proc.pid, proc)
        return list(self.seen.values())

    def workers(self) -> list[psutil.Process]:
        """The daemon's pool workers now: the children of its fork server."""
        return [proc for child in psutil.Process(self.pid).children()
                if "forkserver" in " ".join(child.cmdline()) for proc in child.children()]

    def wait_mid_cycle(self, after_cycles: int = 0) -> None:
        """Wait until a cycle is running, after at least `after_cycles` finished ones."""

        def running() -> bool:
            body = self.get("/healthz").json()
            return body["cycle_running_s"] is not None and body["cycles_ok"] >= after_cycles

        wait_for("a cycle in flight", running)

    # --- ending ---------------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        """Send a signal to the daemon itself."""
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait for the daemon to exit and return its status."""
        return self.process.wait(timeout=timeout)

    def leftovers(self, within: float = 2.0) -> list[psutil.Process]:
        """Recorded descendants still alive `within` seconds from now (zombies count as gone)."""
        deadline = time.monotonic() + within
        while True:
            alive = []
            for proc in self.seen.values():
                try:
                    if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                        alive.append(proc)
                except psutil.NoSuchProcess:
                    pass
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.02)

    def finish(self) -> None:
        """Kill whatever is left of this daemon and its processes, by pid."""
        if self.process.poll() is None:
            with contextlib.suppress(psutil.Error):
                self.remember_descendants()
            self.process.kill()
            self.process.wait(timeout=30)
        for proc in self.seen.values():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self._log.close()


def gone(proc: psutil.Process) -> bool:
    """Whether a process has ended (a zombie has)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def started_daemons() -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts; each is killed (by pid, with its processes) afterwards.

    Import it into a test module to use it there."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.finish()
