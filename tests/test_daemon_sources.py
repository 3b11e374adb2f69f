"""`pomabotd run` on live sources served by loopback HTTP servers: failures, recovery, caching."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import DATA
from daemon_process import DaemonProcess, jsonl, wait_for
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

GAMMA_SAMPLE = DATA / "gamma" / "markets_sample_50.json"
FED_FEED = DATA / "rss" / "fed_press_all_2026-09.xml"
NEWS_MARKETS = DATA / "news_markets.jsonl"


@pytest.fixture
def daemon_runs(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts; each is killed (by pid, with its processes) afterwards."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.finish()


def _config(path: Path, sources: dict[str, object], **sections: dict[str, object]) -> Path:
    """A TOML file: the given [sources], one in-process evaluator, quick retries."""
    tables = {"sources": {"retry_attempts": 1, "retry_max_wait_s": 0.0, **sources},
              "batch": {"workers": 0}, **sections}
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _sample(exposition: str, series: str) -> float:
    """The value of one series in a Prometheus text exposition."""
    for line in exposition.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {series} in /metrics")


def _stop(daemon: DaemonProcess) -> None:
    """SIGTERM: exit 0, and nothing the daemon started, nor the daemon, is left running."""
    daemon.remember_descendants()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.leftovers() == []
    assert psutil.Process().children(recursive=True) == []


def test_unreachable_market_api_fails_cycles_until_it_recovers(
    daemon_runs: list[DaemonProcess], tmp_path: Path, httpserver: HTTPServer
) -> None:
    """While the Gamma API answers 503 after every retry, each cycle fails with one error line
    naming the source and the status, writes nothing, and /healthz is 503 with that reason;
    once the API recovers the next cycle succeeds and /healthz is 200 again."""
    down = threading.Event()
    down.set()
    objects = GAMMA_SAMPLE.read_bytes()

    def keyset(request: Request) -> Response:
        if down.is_set():
            return Response("overloaded", status=503)
        return Response(b'{"markets": ' + objects + b"}", content_type="application/json")

    httpserver.expect_request("/markets/keyset").respond_with_handler(keyset)
    url = httpserver.url_for("").rstrip("/")
    config = _config(tmp_path / "pomabotd.toml", {"markets": "polymarket", "polymarket_url": url})
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--interval", "0.3", "--out", "out",
                           "--as-of", "2026-02-07T12:00:00Z")
    daemon_runs.append(daemon)

    failed = daemon.wait_log(event="cycle_failed")
    assert failed["level"] == "ERROR" and "\n" not in failed["message"]
    assert "polymarket" in failed["message"] and "HTTP 503 after 2 attempts" in failed["message"]
    health = daemon.get("/healthz")
    assert health.status_code == 503
    assert "HTTP 503" in health.json()["reason"]
    assert jsonl(tmp_path / "out" / "metrics.jsonl") == []
    requests_while_down = len(httpserver.log)
    assert requests_while_down >= 2  # the request and its retry
    wait_for("two failed cycles",
             lambda: daemon.get("/healthz").json()["cycles_failed"] >= 2)
    exposition = daemon.get("/metrics").text
    failed_cycles = _sample(exposition, 'pomabotd_cycles_total{result="failed"}')
    assert failed_cycles >= 2
    assert _sample(exposition, 'pomabotd_source_fetch_errors_total{source="polymarket"}') in (
        failed_cycles, failed_cycles + 1)  # a cycle may end between the two reads
    errors = [line for line in daemon.logs() if line["level"] == "ERROR"]
    assert errors and all(line.get("event") == "cycle_failed" for line in errors), errors

    down.clear()
    wait_for("a cycle on the recovered API",
             lambda: jsonl(tmp_path / "out" / "metrics.jsonl"))
    def healthy() -> dict[str, object] | None:
        response = daemon.get("/healthz")
        return response.json() if response.status_code == 200 else None

    body = wait_for("a healthy daemon", healthy)
    assert body["reason"] is None and body["cycles_failed"] >= 1
    assert body["last_cycle"]["markets_total"] == 50
    exposition = daemon.get("/metrics").text
    assert 'pomabotd_cycles_total{result="failed"}' in exposition
    _stop(daemon)


def test_feeds_are_asked_conditionally_and_kept_across_a_reload_of_other_keys(
    daemon_runs: list[DaemonProcess], tmp_path: Path, httpserver: HTTPServer
) -> None:
    """The daemon reads its feed once, then sends If-None-Match every cycle and keeps making the
    feed's signals from its cache on 304; a dead feed beside it is counted per source in
    metrics.jsonl and /metrics. A reload that changes [risk] keeps the cache (still
    conditional); one that changes [sources] starts afresh (unconditional)."""
    etag = '"fed-2026-09"'
    asked: list[str | None] = []

    def fed(request: Request) -> Response:
        asked.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers={"ETag": etag})
        return Response(FED_FEED.read_bytes(), content_type="application/rss+xml",
                        headers={"ETag": etag})

    httpserver.expect_request("/fed.xml").respond_with_handler(fed)
    httpserver.expect_request("/gone.xml").respond_with_data("gone", status=404)
    feeds = [httpserver.url_for("/fed.xml"), httpserver.url_for("/gone.xml")]
    sources = {"markets": str(NEWS_MARKETS), "feeds": feeds, "feed_min_interval_s": 0.0}
    config = _config(tmp_path / "pomabotd.toml", sources)
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--interval", "0.3", "--out", "out",
                           "--as-of", "2026-10-01T00:00:00Z")
    daemon_runs.append(daemon)
    metrics_path = tmp_path / "out" / "metrics.jsonl"

    first, second = wait_for("two cycles", lambda: jsonl(metrics_path)[:2]
                             if len(jsonl(metrics_path)) >= 2 else None)
    assert asked[:2] == [None, etag]
    assert (first["sources"]["feeds_ok"], second["sources"]["feeds_unchanged"]) == (1, 1)
    assert first["sources"]["news_signals"] > 0
    feeds_read = daemon.log_with(event="feeds_read")  # a source's line carries its cycle's id
    assert feeds_read is not None and feeds_read["cycle_id"] == first["cycle_id"]
    assert second["sources"]["news_signals"] == first["sources"]["news_signals"]
    assert second["sources"]["fetch_errors"] == {feeds[1]: 1}
    exposition = daemon.get("/metrics").text
    assert 'pomabotd_feeds_total{result="unchanged"}' in exposition
    assert f'pomabotd_source_fetch_errors_total{{source="{feeds[1]}"}}' in exposition

    _config(config, sources, risk={"min_edge": 16.0})
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(event="reload")
    seen = len(asked)
    wait_for("a request after the first reload", lambda: len(asked) > seen)
    assert asked[seen] == etag

    _config(config, {**sources, "feed_concurrency": 2}, risk={"min_edge": 16.0})
    daemon.signal(signal.SIGHUP)
    wait_for("the second reload", lambda: len([line for line in daemon.logs()
                                                if line.get("event") == "reload"]) == 2)
    seen = len(asked)
    wait_for("a request after the second reload", lambda: len(asked) > seen)
    assert asked[seen] is None
    _stop(daemon)
