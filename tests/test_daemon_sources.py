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
from daemon_process import DaemonProcess, jsonl, wait_for, write_toml
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
    return write_toml(path, {
        "sources": {"retry_attempts": 1, "retry_max_wait_s": 0.0, **sources},
        "batch": {"workers": 0}, **sections,
    })


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


#: The cycle time of the held-market tests, an hour after each market's two neutral signals.
HELD_AS_OF = "2026-02-07T12:00:00Z"
#: What the fixed prior opens on the sample's open markets (all YES at under a cent), and the
#: two the tests follow: XRP resolves YES the next cycle, Lee Jun-seok's market vanishes.
OPENED = ["679502", "1087528", "1308477", "947275"]
RESOLVES, VANISHES = "1308477", "679502"


class GammaMarkets:
    """A Gamma API on a loopback server: a keyset listing of the open markets still listed, and
    `/markets?id=...` answering the markets it still knows, closed ones as resolved."""

    def __init__(self, httpserver: HTTPServer, directory: Path) -> None:
        objects = [o for o in json.loads(GAMMA_SAMPLE.read_text()) if not o["closed"]]
        self.known = {str(o["id"]): o for o in objects}
        self.listed = list(self.known)
        self.asked: list[list[str]] = []
        httpserver.expect_request("/markets/keyset").respond_with_handler(self._keyset)
        httpserver.expect_request("/markets").respond_with_handler(self._by_id)
        self.url = httpserver.url_for("").rstrip("/")
        self.signals = directory / "signals.jsonl"
        self.signals.write_text("".join(
            json.dumps({"market_id": market_id, "type": "authoritative", "direction": "neutral",
                        "strength": strength, "timestamp": "2026-02-07T11:00:00Z"}) + "\n"
            for market_id in self.known for strength in (3, 2)
        ))

    def resolve(self, market_id: str, outcome: str) -> None:
        """The market closes at 1/0 (YES) or 0/1 (NO) and leaves the open listing."""
        prices = ["1", "0"] if outcome == "YES" else ["0", "1"]
        self.known[market_id] = dict(self.known[market_id], closed=True,
                                     outcomePrices=json.dumps(prices))
        self.listed.remove(market_id)

    def vanish(self, market_id: str) -> None:
        """The server forgets the market altogether."""
        del self.known[market_id]
        self.listed.remove(market_id)

    def _keyset(self, request: Request) -> Response:
        body = {"markets": [self.known[i] for i in self.listed]}
        return Response(json.dumps(body), content_type="application/json")

    def _by_id(self, request: Request) -> Response:
        asked = request.args.getlist("id")
        self.asked.append(asked)
        found = [self.known[i] for i in asked if i in self.known]
        return Response(json.dumps(found), content_type="application/json")


def _held_config(path: Path, gamma: GammaMarkets) -> Path:
    return _config(path, {"markets": "polymarket", "polymarket_url": gamma.url,
                          "signals": str(gamma.signals)})


def test_a_held_market_that_closes_settles_as_resolved_and_one_that_vanishes_is_counted(
    tmp_path: Path, httpserver: HTTPServer, run_cli
) -> None:
    """run-once on a live Gamma API: the first cycle opens four positions; then one of their
    markets resolves (leaving the open listing) and another vanishes. The next cycle asks for
    both by id, closes the first as `resolved` at 100 with its P&L, keeps the second open,
    counts it (`held_missing`) in its metrics line and log line with a warning, and its log line
    carries the halt rules' figures over the one resolved position."""
    gamma = GammaMarkets(httpserver, tmp_path)
    config = _held_config(tmp_path / "pomabotd.toml", gamma)
    args = ("run-once", "--config", str(config), "--as-of", HELD_AS_OF, "--out", "out")
    env = {"POMABOTD_LOG_FORMAT": "json"}
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    opened = [e["market_id"] for e in jsonl(tmp_path / "out" / "positions.jsonl")]
    assert opened == OPENED and gamma.asked == []

    gamma.resolve(RESOLVES, "YES")
    gamma.vanish(VANISHES)
    second = run_cli(*args, "--json", env=env)
    assert second.returncode == 0, second.stderr
    assert gamma.asked == [sorted([RESOLVES, VANISHES])]
    [close] = [e for e in jsonl(tmp_path / "out" / "positions.jsonl") if e["event"] == "close"]
    assert (close["market_id"], close["exit_reason"], close["exit_price"]) == (
        RESOLVES, "resolved", 100.0)
    assert close["pnl_usd"] == 124500.0  # $500 at 0.4 cents a share, paid 100
    metrics = json.loads(second.stdout)
    assert metrics["held_missing"] == 1 and metrics["closed"] == 1
    assert metrics["open_positions"] == 3 + metrics["selected"]  # the vanished one still open
    logs = [json.loads(line) for line in second.stderr.splitlines() if line.startswith("{")]
    [warning] = [line for line in logs if line.get("event") == "held_missing"]
    assert warning["level"] == "WARNING" and warning["markets"] == [VANISHES]
    [cycle] = [line for line in logs if line.get("event") == "cycle"]
    assert cycle["held_missing"] == 1
    figures = cycle["halt_figures"]
    assert (figures["resolved"], figures["coverage_observed"], figures["coverage_expected"],
            figures["invalidation_streak"]) == (1, 1.0, 1.0, 0)
    assert figures["low_confidence"] == {"count": 1, "hit_rate": 1.0}
    assert "1 held market missing from the input" in cycle["message"]
    assert "1 resolved, coverage 100.0% against 100.0% expected" in cycle["message"]


@pytest.mark.slow
def test_the_daemon_shows_missing_held_markets_and_the_halt_figures(
    daemon_runs: list[DaemonProcess], tmp_path: Path, httpserver: HTTPServer
) -> None:
    """A daemon on a live Gamma API, before any rule trips: once a held market resolves and
    another vanishes, /healthz shows the halt rules' figures over the resolved position and the
    missing count, /api/positions names the missing market with the cycle it went missing in,
    and /metrics has the gauges; SIGTERM leaves nothing behind."""
    gamma = GammaMarkets(httpserver, tmp_path)
    config = _held_config(tmp_path / "pomabotd.toml", gamma)
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--interval", "0.3", "--out",
                           "out", "--as-of", HELD_AS_OF)
    daemon_runs.append(daemon)
    metrics_path = tmp_path / "out" / "metrics.jsonl"
    wait_for("the first cycle", lambda: jsonl(metrics_path))
    gamma.resolve(RESOLVES, "YES")
    gamma.vanish(VANISHES)
    wait_for("the resolved close", lambda: any(
        e["event"] == "close" for e in jsonl(tmp_path / "out" / "positions.jsonl")))

    def settled() -> dict | None:
        body = daemon.get("/healthz").json()
        return body if body["halt_figures"]["resolved"] == 1 else None

    body = wait_for("the figures of the resolved position", settled)
    assert body["halted"] is False and body["held_missing"] == 1
    assert body["halt_figures"]["coverage_observed"] == 1.0
    assert body["halt_figures"]["high_confidence"] == {"count": 0, "hit_rate": None}
    missing = daemon.get("/api/positions").json()["missing_markets"]
    assert list(missing) == [VANISHES] and missing[VANISHES] >= 2
    exposition = daemon.get("/metrics").text
    assert _sample(exposition, "pomabotd_held_markets_missing") == 1.0
    assert _sample(exposition, "pomabotd_halt_resolved_positions") == 1.0
    assert _sample(exposition, "pomabotd_halt_coverage_observed_ratio") == 1.0
    assert _sample(exposition, "pomabotd_halt_invalidation_streak") == 0.0
    assert _sample(exposition, 'pomabotd_halt_confidence_positions{bucket="low"}') == 1.0
    assert _sample(exposition, 'pomabotd_halt_confidence_hit_ratio{bucket="low"}') == 1.0
    assert "pomabotd_halt_confidence_hit_ratio{bucket=\"high\"} NaN" in exposition
    _stop(daemon)
