"""A cycle that cannot finish: a markets server that pages slowly with a fresh cursor forever,
and a daemon stuck between cycles. The cycle is abandoned at `daemon.cycle_timeout_s`,
`/healthz` tells the truth, and systemd's watchdog is fed only while the daemon makes progress.
Real processes, a real HTTP server and a real notify socket on this machine, bounded in time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import clean_environ
from daemon_process import DaemonProcess, gone, jsonl, started_daemons, wait_for
from pytest_httpserver import HTTPServer
from test_daemon import NotifySocket
from werkzeug import Request, Response

from pomabotd.config import load
from pomabotd.errors import ConfigError

TESTS = str(Path(__file__).parent)
#: The plugins' directory, after whatever the test run's own path holds.
PATH = os.pathsep.join(filter(None, (os.environ.get("PYTHONPATH"), TESTS)))
GAMMA = json.loads((Path(TESTS) / "data" / "gamma" / "markets_sample_50.json").read_text())
#: The deadline the tests give a cycle.
DEADLINE_S = 2.0
#: How long a deadline may be outrun before the test calls it missed: abandoning takes
#: moments, but a loaded machine schedules the daemon late.
_LATE_S = 10.0

daemons = started_daemons


class EndlessPages:
    """A Gamma keyset endpoint answering each page after `delay_s` with one market and a
    fresh cursor, forever, until `finish` makes the next page the last."""

    def __init__(self, delay_s: float = 0.2) -> None:
        self.delay_s = delay_s
        self.pages = 0
        self.first_page_at: float | None = None
        self._last = threading.Event()

    def finish(self) -> None:
        """Let the next page be the last one."""
        self._last.set()

    def __call__(self, request: Request) -> Response:
        if self.first_page_at is None:
            self.first_page_at = time.monotonic()
        self.pages += 1
        time.sleep(self.delay_s)
        market = dict(GAMMA[self.pages % len(GAMMA)], id=f"endless-{self.pages}")
        body: dict = {"markets": [market]}
        if not self._last.is_set():
            body["next_cursor"] = f"cursor-{self.pages}"
        return Response(json.dumps(body), content_type="application/json")


@pytest.fixture
def endless(httpserver: HTTPServer) -> Iterator[EndlessPages]:
    """The endless endpoint, served on 127.0.0.1."""
    pages = EndlessPages()
    httpserver.expect_request("/markets/keyset").respond_with_handler(pages)
    yield pages
    pages.finish()


def test_cycle_timeout_has_bounds_and_a_default() -> None:
    """`daemon.cycle_timeout_s` defaults to 600 s; below a second (no cycle could finish) and
    above a day are refused when the configuration loads, naming the key and where the value
    came from."""
    assert load(None, {}, {}).daemon.cycle_timeout_s == 600.0
    for good in (1, 86400):
        assert load(None, {}, {"daemon.cycle_timeout_s": good}).daemon.cycle_timeout_s == good
    for bad in (0, 0.5, -1, 86401):
        with pytest.raises(ConfigError, match=r"daemon\.cycle_timeout_s .*flag"):
            load(None, {}, {"daemon.cycle_timeout_s": bad})


def test_run_once_past_its_deadline_exits_1_saying_where_it_was(
    tmp_path: Path, httpserver: HTTPServer, endless: EndlessPages
) -> None:
    """`run-once` on a markets server that pages slowly forever exits 1 at its deadline,
    naming the source it was loading; nothing is created in --out."""
    config = tmp_path / "deadline.toml"
    config.write_text(f"[daemon]\ncycle_timeout_s = {DEADLINE_S}\n")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pomabotd", "run-once", "--config", str(config),
         "--markets", "polymarket", "--polymarket-url", httpserver.url_for(""),
         "--out", "out"],
        cwd=tmp_path, env=clean_environ(), capture_output=True, text=True, timeout=120,
    )
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.endswith(
        f"abandoned at its deadline of {DEADLINE_S:g} s (daemon.cycle_timeout_s) while loading "
        "polymarket (sources.markets, from flag --markets); nothing of cycle 1 was written")
    assert "Traceback" not in result.stderr
    assert endless.pages >= 2
    assert took < DEADLINE_S + _LATE_S + 20  # the interpreter's and the pool's start
    assert not (tmp_path / "out").exists()


def test_a_cycle_past_its_deadline_is_abandoned_and_healthz_says_so(
    daemons: list[DaemonProcess], tmp_path: Path, httpserver: HTTPServer,
    endless: EndlessPages
) -> None:
    """A daemon whose markets server pages slowly forever: each cycle is abandoned at its
    deadline, nothing of it written, counted failed and logged at ERROR saying it was loading
    the markets; /healthz answers 503 from the deadline on; the next cycle starts on schedule,
    and once the server ends its listing a cycle succeeds and /healthz is ok again."""
    config = tmp_path / "deadline.toml"
    config.write_text(f"[daemon]\ncycle_timeout_s = {DEADLINE_S}\ninterval_s = 0.5\n")
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--markets", "polymarket",
                           "--polymarket-url", httpserver.url_for(""), "--out", "out")
    daemons.append(daemon)
    url = daemon.url
    wait_for("the first page asked for", lambda: endless.first_page_at is not None)
    first_page_at = endless.first_page_at
    assert first_page_at is not None

    def unhealthy() -> httpx.Response | None:
        response = httpx.get(url + "/healthz", timeout=10)
        return response if response.status_code == 503 else None

    health = wait_for("503", unhealthy, timeout=DEADLINE_S + _LATE_S)
    assert time.monotonic() - first_page_at < DEADLINE_S + _LATE_S
    assert health.json()["reason"].startswith("cycle 1 failed: abandoned at its deadline")
    failed = daemon.wait_log(event="cycle_failed", timed_out=True)
    assert failed["level"] == "ERROR" and failed["cycle_id"] == 1
    assert failed["phase"] == "loading polymarket (sources.markets, from flag --markets)"
    assert "loading polymarket" in failed["message"]
    wait_for("a second abandoned cycle",
             lambda: daemon.get("/healthz").json()["cycles_failed"] >= 2,
             timeout=2 * (DEADLINE_S + _LATE_S))
    body = daemon.get("/healthz").json()
    assert body["cycles_ok"] == 0 and body["cycles_failed_in_a_row"] >= 2
    assert body["cycle_timeout_s"] == DEADLINE_S
    assert not jsonl(tmp_path / "out" / "metrics.jsonl")

    endless.finish()
    wait_for("a cycle that succeeds", lambda: jsonl(tmp_path / "out" / "metrics.jsonl"),
             timeout=2 * (DEADLINE_S + _LATE_S))
    wait_for("healthy again", lambda: daemon.get("/healthz").status_code == 200)
    daemon.remember_descendants()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.leftovers() == []


def test_the_watchdog_is_fed_only_while_the_daemon_makes_progress(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """A daemon feeds systemd's watchdog (a real notify socket, WATCHDOG_USEC) while cycles
    run; a reload that cannot end (its new evaluator hangs on import in every new worker)
    keeps any cycle from starting: past the deadline /healthz says so with 503, and no
    WATCHDOG=1 is sent any more, so that systemd would restart the daemon."""
    config = tmp_path / "watchdog.toml"
    config.write_text(f"[daemon]\ncycle_timeout_s = {DEADLINE_S}\ninterval_s = 0.2\n"
                      "[batch]\nworkers = 2\n")
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        daemon = DaemonProcess(tmp_path, "--config", str(config), "--out", "out", env={
            "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000",
            "PYTHONPATH": PATH,
        })
        daemons.append(daemon)
        wait_for("two cycles", lambda: len(jsonl(tmp_path / "out" / "metrics.jsonl")) >= 2)
        wait_for("a watchdog ping", lambda: notify.seen("WATCHDOG=1"))

        config.write_text(f"[daemon]\ncycle_timeout_s = {DEADLINE_S}\ninterval_s = 0.2\n"
                          '[batch]\nworkers = 1\nevaluator = "hanging_evaluator:evaluate"\n')
        daemon.signal(signal.SIGHUP)
        health = wait_for("503 while the reload hangs", lambda: (
            body := daemon.get("/healthz").json())["status"] == "unhealthy" and body,
            timeout=DEADLINE_S + _LATE_S)
        assert "reloading its configuration" in health["reason"]
        withheld = daemon.wait_log(event="watchdog_withheld", timeout=_LATE_S)
        assert "reloading its configuration" in withheld["message"]
        count = len(notify.messages)
        time.sleep(1.5)  # a ping every 0.2 s would have come meanwhile
        assert not any("WATCHDOG=1" in message for message in notify.messages[count:])
        daemon.remember_descendants()
    finally:
        notify.close()
    daemon.finish()  # the reload would only end when its pool gives up, minutes later
    assert daemon.leftovers() == []


def test_a_cycle_abandoned_while_evaluating_leaves_no_work_in_the_workers(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    """A strategy that blocks on every market, with no market timeout to stop it: the cycle
    is abandoned at its deadline saying it was evaluating, and the workers still holding its
    markets are replaced before the next cycle uses the pool, so its work cannot pile up."""
    config = tmp_path / "evaluating.toml"
    config.write_text(f"[daemon]\ncycle_timeout_s = {DEADLINE_S}\ninterval_s = 0.2\n"
                      '[batch]\nworkers = 2\ntimeout_ms = 600000\n'
                      'evaluator = "blocking_evaluator:evaluate"\n')
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--out", "out", env={
        "PYTHONPATH": PATH, "POMABOTD_TEST_STARTED": str(tmp_path / "started"),
    })
    daemons.append(daemon)
    wait_for("an evaluation in flight", (tmp_path / "started").exists)
    first = {proc.pid: proc for proc in daemon.workers()}
    failed = daemon.wait_log(event="cycle_failed", timed_out=True, timeout=DEADLINE_S + _LATE_S)
    assert failed["phase"] == "evaluating (no market done yet)"
    wait_for("the stuck workers replaced",
             lambda: all(gone(proc) for proc in first.values()), timeout=DEADLINE_S + _LATE_S)
    wait_for("a new pool", lambda: len(daemon.workers()) == 2)
    assert not set(first) & {proc.pid for proc in daemon.workers()}
    assert not jsonl(tmp_path / "out" / "metrics.jsonl")
    daemon.remember_descendants()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.leftovers() == []
