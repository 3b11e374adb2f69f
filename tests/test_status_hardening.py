"""The status endpoint of a real daemon under attack: idle and half-sent connections under a
low open-file limit, requests without the token, secrets in the configuration, an address
other machines can reach."""

from __future__ import annotations

import contextlib
import json
import select
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from daemon_process import DaemonProcess, started_daemons, wait_for, write_toml

daemons = started_daemons

TOKEN = "status-token-0123456789abcdef"
FEED = "https://reader:hunter2@feeds.invalid/news.xml?api_key=k3y&lang=en"
GAMMA = "https://gamma.invalid/api?token=t0k3n"


class Attack:
    """`count` connections to `address` kept open by a thread: every other one has sent half
    a request header, the rest nothing; each one the server closes is opened again."""

    def __init__(self, address: tuple[str, int], count: int) -> None:
        self.address = address
        self.count = count
        self.reopened = 0
        self._socks: dict[int, tuple[int, socket.socket]] = {}
        self._poll = select.poll()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Attack:
        for index in range(self.count):
            self._open(index)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for _, sock in self._socks.values():
            sock.close()

    def _open(self, index: int) -> None:
        """Connect without waiting (a server that stops accepting must not stall the attack);
        a half-sent header goes out once the connection is up."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(self.address)
        self._socks[sock.fileno()] = (index, sock)
        self._poll.register(sock, select.POLLIN | (select.POLLOUT if index % 2 else 0))

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.reopened:
                self._stop.wait(0.01)  # churn enough to test, not to starve the tests beside
            for fd, events in self._poll.poll(50):
                index, sock = self._socks[fd]
                if events & select.POLLOUT and not events & (select.POLLERR | select.POLLHUP):
                    with contextlib.suppress(OSError):
                        sock.send(b"GET /healthz HTTP/1.1\r\nHost: pomabotd\r\nX-Slow: ")
                    self._poll.modify(sock, select.POLLIN)
                    continue
                try:
                    closed = sock.recv(4096) == b""
                except BlockingIOError:
                    continue
                except OSError:
                    closed = True
                if closed:
                    self._poll.unregister(fd)
                    del self._socks[fd]
                    sock.close()
                    self.reopened += 1
                    self._open(index)


def _health(url: str) -> int | None:
    """The /healthz status code, or None when it cannot be had within 5 s. A connection the
    server closed before reading the request (the idlest, to make room for the attack's own)
    is tried again, as any client would."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return httpx.get(url + "/healthz", timeout=max(0.1, deadline - time.monotonic()))\
                .status_code
        except httpx.TransportError:
            if time.monotonic() > deadline:
                return None


#: Runs on the same xdist worker as the tests that time a file's rewrite (one after another):
#: the attack's churn takes a core while it lasts.
@pytest.mark.xdist_group("timing")
def test_idle_and_half_sent_connections_cannot_stop_cycles(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """Under an open-file limit of 256, 600 idle and half-sent connections held against the
    status address for 4 s: every cycle still succeeds, /healthz answers, the daemon holds at
    most a quarter of its limit in connections (64) though daemon.status_max_connections
    allows far more, and the log does not flood."""
    config = write_toml(tmp_path / "pomabotd.toml",
                        {"daemon": {"status_max_connections": 10_000}})
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--interval", "0.2",
                           "--out", "out", env={"BATCH_WORKERS": "1"}, nofile=(256, 256))
    daemons.append(daemon)
    url = daemon.url
    wait_for("two cycles", lambda: daemon.get("/healthz").json()["cycles_ok"] >= 2)
    process = psutil.Process(daemon.pid)
    before = daemon.get("/healthz").json()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    answers = []
    held = []
    with Attack((host, int(port)), 600) as attack:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            answers.append(_health(url))
            held.append(process.num_fds())
            time.sleep(0.2)
    after = daemon.get("/healthz").json()
    assert after["cycles_failed"] == before["cycles_failed"] == 0
    assert after["cycles_ok"] - before["cycles_ok"] >= 5
    assert answers and all(code == 200 for code in answers), answers
    assert max(held) <= 64 + 48, held  # its connections plus its own files and pipes
    assert attack.reopened > 0  # the idlest were closed to make room
    lines = daemon.logs()
    assert len([line for line in lines if line["level"] in ("WARNING", "ERROR")]) <= 12
    assert all(line.get("event") != "library_log" for line in lines)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=30) == 0


def test_page_streams_held_open_do_not_shut_out_healthz(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """More status-page update streams than daemon.status_max_connections (8) held open: the
    daemon never holds more than 8 connections, and /healthz still answers, the oldest stream
    closed to make room for it."""
    config = write_toml(tmp_path / "pomabotd.toml", {
        "batch": {"enabled": False, "workers": 0},
        "daemon": {"status_max_connections": 8},
    })
    daemon = DaemonProcess(tmp_path, "--config", str(config))
    daemons.append(daemon)
    daemon.wait_log(event="start")
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    streams = []
    try:
        for _ in range(12):  # one after another, each served (its first event read)
            sock = socket.create_connection((host, int(port)), timeout=5)
            streams.append(sock)
            sock.sendall(b"GET /page/stream HTTP/1.1\r\nHost: pomabotd\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert [_health(daemon.url) for _ in range(3)] == [200, 200, 200]
        held = [c for c in psutil.Process(daemon.pid).net_connections("tcp") if c.raddr]
        assert len(held) <= 8, held
    finally:
        for sock in streams:
            sock.close()
    evictions = [line["message"] for line in daemon.logs()
                 if line.get("event") == "status_connection_evicted"]  # repeats counted
    assert evictions and all("closed the oldest stream" in text for text in evictions)


@pytest.fixture
def exposed(daemons: list[DaemonProcess], tmp_path: Path) -> DaemonProcess:
    """A daemon serving every interface with a token from its env file, secrets in its feed
    and API URLs, a 0.5 s request timeout, no cycles, and room to raise its open-file
    limit."""
    env_file = tmp_path / "env"
    env_file.write_text(f"POMABOTD_STATUS_TOKEN={TOKEN}\n", encoding="utf-8")
    config = write_toml(tmp_path / "pomabotd.toml", {
        "batch": {"enabled": False, "workers": 0},
        "sources": {"feeds": [FEED], "polymarket_url": GAMMA},
        "daemon": {"status_timeout_s": 0.5, "env_file": str(env_file)},
        "log": {"format": "json"},
    })
    daemon = DaemonProcess(tmp_path, "--config", str(config), status_addr="0.0.0.0:0",
                           nofile=(512, 2048))
    daemons.append(daemon)
    daemon.wait_log(event="start")
    return daemon


def _local(daemon: DaemonProcess) -> str:
    port = daemon.wait_log(event="start")["status_addr"].rsplit(":", 1)[1]
    return f"http://127.0.0.1:{port}"


def test_every_path_but_healthz_needs_the_bearer_token(exposed: DaemonProcess) -> None:
    """With daemon.status_token set, /healthz answers anyone; every other path (an unknown
    one too) answers 401 without the token or with a wrong one, and 200 with it."""
    url = _local(exposed)
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    for path in ("/metrics", "/api/positions", "/api/batch/config", "/nothing-here"):
        bare = httpx.get(url + path, timeout=5)
        assert bare.status_code == 401, path
        assert bare.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = httpx.get(url + path, timeout=5,
                          headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
        assert wrong.status_code == 401, path
    for path in ("/metrics", "/api/positions", "/api/batch/config"):
        good = httpx.get(url + path, timeout=5, headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200, path


def test_the_configuration_shows_no_secret(exposed: DaemonProcess, tmp_path: Path) -> None:
    """/api/batch/config redacts the token, a URL's password and its key-like query values;
    the token appears in no log line."""
    url = _local(exposed)
    shown = httpx.get(url + "/api/batch/config", timeout=5,
                      headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert shown["daemon.status_token"]["value"] == "***"
    assert shown["daemon.status_token"]["source"].startswith("env-file:")
    assert shown["sources.feeds"]["value"] == [
        "https://***@feeds.invalid/news.xml?api_key=***&lang=en"]
    assert shown["sources.polymarket_url"]["value"] == "https://gamma.invalid/api?token=***"
    text = json.dumps(shown)
    for secret in (TOKEN, "hunter2", "k3y", "t0k3n"):
        assert secret not in text
    assert TOKEN not in exposed.log_path.read_text()


def test_an_address_other_machines_reach_is_warned_about_at_start_and_reload(
    exposed: DaemonProcess
) -> None:
    """daemon.status_addr 0.0.0.0 logs a WARNING at start and again at every reload, and the
    start line reports the raised open-file limit."""
    start = exposed.wait_log(event="start")
    assert start["open_files"] == 2048
    first = exposed.wait_log(event="status_exposed")
    assert first["level"] == "WARNING" and "0.0.0.0:0" in first["message"]
    exposed.signal(signal.SIGHUP)
    exposed.wait_log(event="reload")
    wait_for("a second warning",
             lambda: len([ln for ln in exposed.logs() if ln.get("event") == "status_exposed"])
             == 2)


def test_idle_and_half_sent_connections_are_closed_after_the_status_timeout(
    exposed: DaemonProcess
) -> None:
    """An idle connection, a half-sent request and a kept-alive one after its answer are all
    closed within daemon.status_timeout_s (0.5 s) and a little."""
    host, port = _local(exposed).removeprefix("http://").rsplit(":", 1)
    idle = socket.create_connection((host, int(port)))
    half = socket.create_connection((host, int(port)))
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: pomabotd\r\n")
    kept = socket.create_connection((host, int(port)))
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: pomabotd\r\n\r\n")
    started = time.monotonic()
    try:
        for sock in (idle, half, kept):
            sock.settimeout(5)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            if sock is kept:
                assert data.startswith(b"HTTP/1.1 200")
    finally:
        for sock in (idle, half, kept):
            sock.close()
    assert time.monotonic() - started < 3.0


def test_pomabotd_config_never_prints_the_token(run_cli, tmp_path: Path) -> None:
    """`pomabotd config` shows the token from the environment as `***`, and a refused token
    is named by its key and length, never quoted."""
    shown = run_cli("config", env={"POMABOTD_STATUS_TOKEN": TOKEN})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["daemon.status_token"] == {
        "value": "***", "source": "env:POMABOTD_STATUS_TOKEN"}
    assert TOKEN not in shown.stdout + shown.stderr
    short = "secret with space"
    refused = run_cli("config", env={"POMABOTD_STATUS_TOKEN": short})
    assert refused.returncode == 2
    assert "daemon.status_token must be empty, or 16 to 512 printable characters" in refused.stderr
    assert "got a value of 17 characters (from env POMABOTD_STATUS_TOKEN)" in refused.stderr
    assert short not in refused.stderr
