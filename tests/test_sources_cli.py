"""Real sources through the `pomabotd` command in a fresh process, against loopback servers."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import DATA, RunCli
from pytest_httpserver import HTTPServer
from werkzeug import Response

GAMMA_SAMPLE = DATA / "gamma" / "markets_sample_50.json"
RSS = DATA / "rss"
AS_OF = "2026-10-01T00:00:00Z"


def _config(tmp_path: Path, **sources: object) -> Path:
    """A TOML file with a [sources] table; retries never wait."""
    values = {"retry_max_wait_s": 0.0, "retry_attempts": 1, **sources}
    lines = ["[sources]"] + [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    lines += ["[batch]", "workers = 0"]
    path = tmp_path / "pomabotd.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _serve_gamma(httpserver: HTTPServer) -> str:
    objects = json.loads(GAMMA_SAMPLE.read_text(encoding="utf-8"))
    httpserver.expect_request("/markets/keyset").respond_with_json({"markets": objects})
    return httpserver.url_for("").rstrip("/")


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    """Every command these tests start has ended, with all its workers, when the test ends."""
    yield
    assert psutil.Process().children(recursive=True) == []


def test_run_once_on_polymarket_with_feeds_reports_failures_and_still_runs(
    run_cli: RunCli, tmp_path: Path, httpserver: HTTPServer
):
    """Live markets plus good and hostile feeds: the cycle completes; failures logged, counted."""
    url = _serve_gamma(httpserver)
    httpserver.expect_request("/fed.xml").respond_with_data(
        (RSS / "fed_press_all_2026-09.xml").read_bytes(), content_type="application/rss+xml"
    )
    feeds = [httpserver.url_for("/fed.xml"), str(RSS / "sec_press_releases_2026-08.rss"),
             str(RSS / "entity_bomb.xml")]
    config = _config(tmp_path, markets="polymarket", polymarket_url=url, feeds=feeds)
    result = run_cli("run-once", "--config", str(config), "--as-of", "2026-02-07T12:00:00Z",
                     "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["markets_total"] == 50 and summary["markets_rejected"] == 0
    stats = summary["sources"]
    assert (stats["feeds_ok"], stats["feeds_failed"]) == (2, 1)
    assert stats["fetch_errors"] == {str(RSS / "entity_bomb.xml"): 1}
    assert "refused unsafe XML" in result.stderr and "entity_bomb.xml" in result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["markets_total"] == 50
    request = httpserver.log[0][0]
    assert request.path == "/markets/keyset" and request.args["closed"] == "false"


def test_feeds_that_loop_or_lie_are_counted_in_the_cycles_metrics(
    run_cli: RunCli, tmp_path: Path, httpserver: HTTPServer
):
    """Next to a good feed, a redirect loop and a body that is not its gzip fail alone: the
    cycle completes, and metrics.jsonl counts both by URL."""
    url = _serve_gamma(httpserver)
    httpserver.expect_request("/fed.xml").respond_with_data(
        (RSS / "fed_press_all_2026-09.xml").read_bytes(), content_type="application/rss+xml"
    )
    httpserver.expect_request("/loop.xml").respond_with_response(
        Response(status=302, headers={"Location": "/loop.xml"}))
    httpserver.expect_request("/gzip.xml").respond_with_response(
        Response(b"<rss/>", headers={"Content-Encoding": "gzip"}))
    bad = [httpserver.url_for("/loop.xml"), httpserver.url_for("/gzip.xml")]
    config = _config(tmp_path, markets="polymarket", polymarket_url=url,
                     feeds=[*bad, httpserver.url_for("/fed.xml")])
    result = run_cli("run-once", "--config", str(config), "--as-of", "2026-02-07T12:00:00Z",
                     "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[-1])
    assert (metrics["sources"]["feeds_ok"], metrics["sources"]["feeds_failed"]) == (1, 2)
    assert metrics["sources"]["fetch_errors"] == dict.fromkeys(bad, 1)
    assert "Traceback" not in result.stderr


def test_a_file_url_feed_is_bad_usage_saying_what_to_write(run_cli: RunCli, tmp_path: Path):
    """`feeds = ["file:///..."]`: exit 2, naming the key, the file it came from and the plain
    path to write instead."""
    config = _config(tmp_path, feeds=["file:///var/lib/feeds/fed.xml"])
    result = run_cli("run-once", "--config", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "sources.feeds 'file:///var/lib/feeds/fed.xml' is a file:// URL" in result.stderr
    assert "'/var/lib/feeds/fed.xml'" in result.stderr and f"file {config}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_save_snapshot_then_replay_it_offline(run_cli: RunCli, tmp_path: Path,
                                              httpserver: HTTPServer):
    """--save-snapshot stores the fetched objects; --markets gamma:PATH evaluates them again."""
    url = _serve_gamma(httpserver)
    snapshot = tmp_path / "gamma.json"
    live = run_cli("evaluate", "--markets", "polymarket", "--polymarket-url", url,
                   "--save-snapshot", str(snapshot), "--as-of", "2026-02-07T12:00:00Z",
                   "--config", str(_config(tmp_path)))
    assert live.returncode == 0, live.stderr
    assert len(json.loads(snapshot.read_text())) == 50
    offline = run_cli("evaluate", "--markets", f"gamma:{snapshot}", "--as-of",
                      "2026-02-07T12:00:00Z", "--config", str(_config(tmp_path)))
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.splitlines() and len(offline.stdout.splitlines()) == 50
    strip = [{k: v for k, v in json.loads(line).items() if k != "elapsed_us"}
             for line in live.stdout.splitlines()]
    again = [{k: v for k, v in json.loads(line).items() if k != "elapsed_us"}
             for line in offline.stdout.splitlines()]
    assert strip == again


def test_unreachable_polymarket_fails_the_cycle_with_one_line(run_cli: RunCli, tmp_path: Path):
    """Nothing listening: exit status 1 and one line saying why, after the retries."""
    with socket.create_server(("127.0.0.1", 0)) as spare:
        port = spare.getsockname()[1]
    result = run_cli("run-once", "--markets", "polymarket", "--polymarket-url",
                     f"http://127.0.0.1:{port}", "--config", str(_config(tmp_path)),
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "polymarket: no markets fetched" in errors[0]
    assert "after 2 attempts" in errors[0] and "Traceback" not in result.stderr
    metrics = tmp_path / "out" / "metrics.jsonl"
    assert not metrics.exists() or metrics.read_text() == ""


def test_gamma_file_with_every_record_refused_fails_the_cycle(run_cli: RunCli, tmp_path: Path):
    """A snapshot whose every record is refused: exit 1, each refusal logged with its id."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "7", "question": "q?", "outcomes": '["A","B","C"]',
                                "outcomePrices": '["0.2","0.3","0.5"]'}]))
    result = run_cli("evaluate", "--markets", f"gamma:{bad}", "--as-of", AS_OF)
    assert result.returncode == 1
    assert "record 1 (id 7): outcomes: 3 outcomes" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error:")


def test_evaluate_takes_signals_from_feeds_and_from_both_sources(run_cli: RunCli,
                                                                 tmp_path: Path):
    """Without --signals the feeds' signals apply; with it, the file's and the feeds' both."""
    markets = str(DATA / "news_markets.jsonl")
    config = _config(tmp_path, feeds=[str(RSS / "fed_press_all_2026-09.xml"),
                                      str(RSS / "sec_press_releases_2026-08.rss")])
    feeds_only = run_cli("evaluate", "--markets", markets, "--config", str(config),
                         "--as-of", AS_OF)
    assert feeds_only.returncode == 0, feeds_only.stderr
    applied = {json.loads(line)["market_id"]: json.loads(line)["signals_applied"]
               for line in feeds_only.stdout.splitlines()}
    assert applied["fed"] >= 1 and applied["sec"] >= 1 and applied["quiet"] == 0
    both = run_cli("evaluate", "--markets", markets, "--signals",
                   str(DATA / "news_signals.jsonl"), "--config", str(config), "--as-of", AS_OF)
    assert both.returncode == 0, both.stderr
    applied_both = {json.loads(line)["market_id"]: json.loads(line)["signals_applied"]
                    for line in both.stdout.splitlines()}
    assert applied_both["fed"] == applied["fed"] + 1
    assert applied_both["sec"] == applied["sec"]


def test_stress_real_runs_the_configured_live_source(run_cli: RunCli, tmp_path: Path,
                                                     httpserver: HTTPServer):
    """stress --real measures one cycle on the markets the Polymarket source fetched."""
    url = _serve_gamma(httpserver)
    config = _config(tmp_path, markets="polymarket", polymarket_url=url)
    result = run_cli("stress", "--real", "--config", str(config), "--as-of",
                     "2026-02-07T12:00:00Z", "--json")
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["markets"] == 50 and report["markets_evaluated"] == 50


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('markets = "gamma:"', "sources.markets 'gamma:' needs a path after 'gamma:' (from file"),
        ('feeds = "one.xml"',
         "sources.feeds must be a list of at most 1000 feed URLs or file paths"),
        ('polymarket_url = "gamma-api.polymarket.com"', "sources.polymarket_url must be an"),
        ("feed_concurrency = 0", "sources.feed_concurrency must be an integer from 1 to 64"),
    ],
)
def test_bad_source_settings_are_refused_naming_key_and_file(
    run_cli: RunCli, tmp_path: Path, table: str, message: str
):
    """Each bad [sources] value stops the command with exit 2, naming the key and the file."""
    config = tmp_path / "bad.toml"
    config.write_text(f"[sources]\n{table}\n", encoding="utf-8")
    result = run_cli("run-once", "--config", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert message in result.stderr and str(config) in result.stderr


def test_polymarket_url_flag_is_recorded_as_its_source(run_cli: RunCli):
    """`pomabotd config` shows the defaults of the new keys; flags are named in provenance."""
    result = run_cli("config")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["sources.polymarket_url"] == {
        "value": "https://gamma-api.polymarket.com", "source": "default"
    }
    assert shown["sources.feeds"]["value"] == []


@pytest.mark.parametrize(("value", "why", "suggestion"), [
    ("polymarkets", "is no file and no source name", "(did you mean 'polymarket'?)"),
    ("Synthetic", "is no file and no source name", "(did you mean 'synthetic'?)"),
    ("gamma", "is no file and no source name", "(did you mean 'gamma:PATH'?)"),
    ("synthetic:50", "names no known source", "(did you mean 'synthetic'?)"),
    ("http://example.com/markets.jsonl", "is a URL, not a market source", ""),
])
def test_a_markets_value_naming_no_source_is_bad_usage(
    run_cli: RunCli, tmp_path: Path, value: str, why: str, suggestion: str
) -> None:
    """A near miss of a source name or a scheme pomabotd does not know is refused with exit 2,
    naming the key, the flag, the valid choices and a suggestion; nothing is created."""
    result = run_cli("run-once", "--markets", value, "--out", "out")
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"Error: sources.markets {value!r} (from flag --markets) {why}")
    assert "'synthetic', 'polymarket' or 'gamma:PATH'" in message and message.endswith(
        suggestion or "sources.polymarket_url); it must be a JSON-lines file path, "
        "'synthetic', 'polymarket' or 'gamma:PATH'")
    assert not (tmp_path / "out").exists()


def test_run_refuses_a_bad_markets_value_before_starting(run_cli: RunCli, tmp_path: Path) -> None:
    """`run` checks sources.markets at start-up: exit 2 before the pool, the ledger or the
    status endpoint exist (no start line logged, no output directory)."""
    config = tmp_path / "pomabotd.toml"
    config.write_text('[sources]\nmarkets = "polymarkets"\n')
    result = run_cli("run", "--config", str(config), "--out", "out", "--status-addr", "")
    assert result.returncode == 2, result.stderr
    assert f"sources.markets 'polymarkets' (from file {config})" in result.stderr
    assert '"event":"start"' not in result.stderr and not (tmp_path / "out").exists()


def test_a_missing_input_file_names_its_setting(run_cli: RunCli, tmp_path: Path) -> None:
    """A markets or signals file that does not exist fails the cycle (exit 1) with a message
    naming the file, the key and where it was set."""
    markets = run_cli("run-once", "--markets", "nowhere.jsonl", "--out", "out")
    assert markets.returncode == 1
    assert "nowhere.jsonl: no such file (sources.markets, from flag --markets)" in markets.stderr
    signals = run_cli("run-once", "--markets", str(DATA / "markets_good.jsonl"),
                      "--signals", "gone.jsonl", "--out", "out")
    assert signals.returncode == 1
    assert "gone.jsonl: no such file (sources.signals, from flag --signals)" in signals.stderr
    assert not (tmp_path / "out").exists()


def test_an_input_file_that_is_a_fifo_is_refused_at_once(run_cli: RunCli, tmp_path: Path):
    """A markets path that is a FIFO nobody writes to fails the cycle at once, saying what it
    is, instead of waiting for a writer."""
    fifo = tmp_path / "markets.jsonl"
    os.mkfifo(fifo)
    result = run_cli("run-once", "--markets", str(fifo), "--config", str(_config(tmp_path)),
                     "--out", str(tmp_path / "out"), timeout=30)
    assert result.returncode == 1
    assert f"{fifo}: cannot be read (is a FIFO (named pipe), not a regular file)" in result.stderr
