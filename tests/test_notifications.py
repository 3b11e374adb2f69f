"""Notifications of a real daemon posted to real receivers on 127.0.0.1: every event, the three
payloads, the rate limit, and receivers that fail or hang without slowing a cycle."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from daemon_process import DaemonProcess, jsonl, wait_for
from halt_inputs import THREE
from halt_inputs import market_line as _market
from halt_inputs import signal_lines as _signals
from pytest_httpserver import HTTPServer
from research_helpers import run_alone

IN_PROCESS = {"BATCH_WORKERS": "0"}
#: A webhook URL whose path is its secret, as Slack's and Discord's are.
SECRET = "T0000/B0000/s3cr3tT0k3nXXXXXXXXXXXX"
HOSTILE = "<!channel> <script>alert(1)</script> & @everyone: will a happen?"


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts; each is killed (by pid, with its processes) afterwards."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.finish()


@pytest.fixture
def receiver() -> Iterator[HTTPServer]:
    """A real HTTP server on 127.0.0.1 that records what is posted to it."""
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        server.stop()


@pytest.fixture
def hanging() -> Iterator[str]:
    """A webhook URL whose server never answers: the kernel accepts the connections into a
    listening socket's backlog, and nothing ever reads them or replies."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/{SECRET}"
    finally:
        sock.close()




def _opening_inputs(directory: Path, question: str = "") -> tuple[str, str]:
    """Markets a, b, c at 40 with two up signals each: all three open at 12:00 (the halt
    tests' first cycle); a's question is `question` when given."""
    (directory / "m1.jsonl").write_text("".join(
        _market(i, c, 40, question if i == "a" else "") for i, c in THREE
    ))
    (directory / "s1.jsonl").write_text("".join(_signals(i, "up", "10:00", "11:00")
                                                for i, _ in THREE))
    return "m1.jsonl", "s1.jsonl"


def _config(directory: Path, **notify: Any) -> str:
    lines = ["[notify]", *(f"{key} = {json.dumps(value)}" for key, value in notify.items())]
    (directory / "pomabotd.toml").write_text("\n".join(lines) + "\n")
    return "pomabotd.toml"


def _posted(server: HTTPServer, path: str) -> list[dict[str, Any]]:
    return [json.loads(request.get_data()) for request, _ in list(server.log)
            if request.path == path]


def _replace(path: Path, text: str) -> None:
    """Write `path` atomically, as the docs ask of a file a daemon reads."""
    temporary = path.with_suffix(".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def _metric(daemon: DaemonProcess, result: str) -> float:
    for line in daemon.get("/metrics").text.splitlines():
        if line.startswith(f'pomabotd_notifications_total{{result="{result}"}} '):
            return float(line.split()[-1])
    raise AssertionError(f"no notifications series for {result}")


def _stop(daemon: DaemonProcess) -> None:
    daemon.remember_descendants()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.leftovers() == []


@pytest.mark.slow
def test_every_event_reaches_the_webhook_as_json(
    tmp_path: Path, receiver: HTTPServer, daemons: list[DaemonProcess]
) -> None:
    """One daemon tells all six events in order, each one POST of pomabotd's JSON: three
    closes and the halt they trip, the halt lifted by `pomabotd resume` and the position it
    lets open, then `unhealthy` when its input turns bad and `recovered` when it is good
    again. The webhook URL comes from the environment (as the env file gives it)."""
    receiver.expect_request(f"/hooks/{SECRET}", method="POST").respond_with_data("ok")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    markets, signals = _opening_inputs(inputs)
    first = run_alone(tmp_path, "run-once", "--markets", f"inputs/{markets}", "--signals",
                      f"inputs/{signals}", "--as-of", "2026-06-01T12:00:00Z", "--out", "out",
                      env=IN_PROCESS)
    assert first.returncode == 0, first.stderr
    # Cycle 2 on: the prices are 41 and three down signals invalidate every belief.
    current_m, current_s = inputs / "markets.jsonl", inputs / "signals.jsonl"
    downs = "".join(_signals(i, "down", "12:10", "12:20", "12:30") for i, _ in THREE)
    prices_41 = "".join(_market(i, c, 41) for i, c in THREE)
    _replace(current_m, prices_41)
    _replace(current_s, downs)
    url = receiver.url_for(f"/hooks/{SECRET}")
    daemon = DaemonProcess(
        tmp_path, "--markets", str(current_m), "--signals", str(current_s), "--as-of",
        "2026-06-01T13:00:00Z", "--out", "out", "--interval", "0.3",
        env={**IN_PROCESS, "POMABOTD_NOTIFY_WEBHOOK_URL": url},
    )
    daemons.append(daemon)
    path = f"/hooks/{SECRET}"
    wait_for("the halt told", lambda: "halt" in [e["event"] for e in _posted(receiver, path)])

    # d at 40 with two up signals would open; the halt holds it until resume.
    _replace(current_m, prices_41 + _market("d", "economics", 40, HOSTILE))
    _replace(current_s, downs + _signals("d", "up", "12:40", "12:50"))
    resumed = run_alone(tmp_path, "resume", "--out", "out")
    assert resumed.returncode == 0, resumed.stderr
    wait_for("d opened", lambda: "open" in [e["event"] for e in _posted(receiver, path)])

    _replace(current_m, "not a market\n")
    wait_for("unhealthy told", lambda: _posted(receiver, path)[-1]["event"] == "unhealthy")
    _replace(current_m, prices_41 + _market("d", "economics", 40, HOSTILE))
    wait_for("recovered told", lambda: _posted(receiver, path)[-1]["event"] == "recovered")
    assert _metric(daemon, "sent") == len(_posted(receiver, path))
    assert _metric(daemon, "failed") == 0
    _stop(daemon)

    posted = _posted(receiver, path)
    assert [e["event"] for e in posted] == [
        "close", "close", "close", "halt", "resume", "open", "unhealthy", "recovered"
    ]
    for event in posted:
        assert set(event) == {"event", "time", "host", "text", "details"}
        assert event["text"].startswith(f"pomabotd on {event['host']}: ")
        datetime.fromisoformat(event["time"])
    closes = posted[:3]
    assert [c["details"]["market_id"] for c in closes] == ["a", "b", "c"]
    assert all(c["details"]["exit_reason"] == "invalidated" for c in closes)
    assert closes[0]["details"]["question"] == "Will a happen?"
    assert 'closed YES on "Will a happen?" at 41 (invalidated): +$' in closes[0]["text"]
    assert posted[3]["details"]["rule"] == "invalidation_streak"
    assert posted[4]["details"]["lifted_by"] == "resume"
    opened = posted[5]["details"]
    assert opened["market_id"] == "d" and opened["question"] == HOSTILE
    assert opened["side"] == "YES" and opened["entry_price"] == 40
    assert "failed: no usable market: every record of" in posted[6]["details"]["reason"]
    assert posted[6]["text"].endswith(f"unhealthy: {posted[6]['details']['reason']}")
    assert posted[7]["details"]["after"] == posted[6]["details"]["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("format_", ["slack", "discord"])
def test_slack_and_discord_payloads_and_the_rate_limit(
    tmp_path: Path, receiver: HTTPServer, daemons: list[DaemonProcess], format_: str
) -> None:
    """Slack gets `{"text"}` with `&`, `<` and `>` escaped (a market's title pings no one),
    Discord `{"content"}` with mentions off; with `max_per_minute = 2`, the third position
    opened in the same minute is dropped, counted in /metrics and logged once."""
    path = f"/{format_}/{SECRET}"
    receiver.expect_request(path, method="POST").respond_with_data("ok")
    markets, signals = _opening_inputs(tmp_path, HOSTILE)
    config = _config(tmp_path, webhook_url=receiver.url_for(path), format=format_,
                     events=["open"], max_per_minute=2)
    daemon = DaemonProcess(tmp_path, "--config", config, "--markets", markets, "--signals",
                           signals, "--as-of", "2026-06-01T12:00:00Z", "--out", "out",
                           "--interval", "0.3", env=IN_PROCESS)
    daemons.append(daemon)
    wait_for("two posts", lambda: len(_posted(receiver, path)) == 2)
    wait_for("the third dropped", lambda: _metric(daemon, "rate_limited") == 1)
    assert _metric(daemon, "sent") == 2
    dropped = daemon.wait_log(event="notify_dropped")
    assert dropped["result"] == "rate_limited" and "notify.max_per_minute (2)" in dropped[
        "message"]
    _stop(daemon)
    posted = _posted(receiver, path)
    assert len(posted) == 2
    first = posted[0]
    if format_ == "slack":
        assert set(first) == {"text"}
        assert ("&lt;!channel&gt; &lt;script&gt;alert(1)&lt;/script&gt; &amp; @everyone"
                in first["text"])
        assert "<" not in first["text"] and ">" not in first["text"]
    else:
        assert set(first) == {"content", "allowed_mentions"}
        assert first["allowed_mentions"] == {"parse": []}
        assert f'opened YES on "{HOSTILE}" at 40' in first["content"]
    assert [e for e in daemon.logs() if e.get("event") == "notify_dropped"] == [dropped]


@pytest.mark.slow
def test_failing_and_hanging_receivers_do_not_slow_the_cycles(
    tmp_path: Path, receiver: HTTPServer, hanging: str, daemons: list[DaemonProcess]
) -> None:
    """Three daemons side by side run the same cycles: one without notifications, one whose
    receiver answers 500, one whose receiver never answers. The cycles of the last two keep
    their pace (their wall times and the span of their starts within generous bounds of the
    first's, where one post in a cycle would add 10 s), and each failure is counted and
    logged with the URL's secret path hidden."""
    failing = receiver.url_for(f"/hooks/{SECRET}")
    receiver.expect_request(f"/hooks/{SECRET}", method="POST").respond_with_data(
        "down", status=500)
    runs = {}
    for name, url in (("baseline", ""), ("failing", failing), ("hanging", hanging)):
        workdir = tmp_path / name
        workdir.mkdir()
        config = _config(workdir, webhook_url=url, max_per_minute=60)
        runs[name] = DaemonProcess(workdir, "--config", config, "--out", "out", "--interval",
                                   "0.2", env={**IN_PROCESS, "BATCH_MAX_PORTFOLIO_RISK": "100",
                                               "BATCH_MAX_POSITIONS_PER_CATEGORY": "50"})
        daemons.append(runs[name])
    cycles = 12

    def done() -> bool:
        return all(len(jsonl(d.workdir / "out" / "metrics.jsonl")) >= cycles
                   for d in runs.values())

    wait_for(f"{cycles} cycles each", done, timeout=120)
    figures = {}
    for name, daemon in runs.items():
        metrics = jsonl(daemon.workdir / "out" / "metrics.jsonl")[:cycles]
        starts = [datetime.fromisoformat(m["started_at"]) for m in metrics]
        figures[name] = (
            statistics.median(m["processing_time_ms"] for m in metrics[1:]) / 1000,
            (starts[-1] - starts[1]).total_seconds(),
            sum(m["selected"] + m["closed"] for m in metrics),
        )
    print("median wall s, span of starts s, events:", figures)
    base_wall, base_span, _ = figures["baseline"]
    for name in ("failing", "hanging"):
        wall, span, events = figures[name]
        assert events > 5, figures
        assert wall <= 3 * base_wall + 0.5, figures
        assert span <= 2 * base_span + 3.0, figures
    for name in ("failing", "hanging"):
        daemon = runs[name]
        wait_for(f"a failure counted ({name})", lambda d=daemon: _metric(d, "failed") >= 1,
                 timeout=60)
        failure = daemon.wait_log(event="notify_failed")
        assert SECRET not in daemon.log_path.read_text()
        port = (failing if name == "failing" else hanging).split(":")[2].split("/")[0]
        assert failure["url"] == f"http://127.0.0.1:{port}/***"
        if name == "failing":
            assert "answered HTTP 500 after 3 attempts" in failure["message"]
        else:
            assert "no response within the deadline of 10 s" in failure["message"]
        assert _metric(daemon, "sent") == 0
    assert len([r for r, _ in receiver.log]) >= 3
    for daemon in runs.values():
        _stop(daemon)


def test_the_webhook_url_is_shown_by_scheme_and_host_only(tmp_path: Path, run_cli) -> None:
    """`pomabotd config` (as `/api/batch/config`, from the same `describe`) shows the
    webhook's URL without its secret path, and names where it came from."""
    url = f"https://hooks.example.com/services/{SECRET}"
    result = run_cli("config", env={"POMABOTD_NOTIFY_WEBHOOK_URL": url})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)["notify.webhook_url"]
    assert shown == {"value": "https://hooks.example.com/***",
                     "source": "env:POMABOTD_NOTIFY_WEBHOOK_URL"}
    assert SECRET not in result.stdout + result.stderr


def test_a_bad_notify_section_is_refused_naming_each_key(tmp_path: Path, run_cli) -> None:
    """Unknown events, a repeated event, an unknown format and a rate out of bounds are each
    refused at load (exit 2), naming the key and the file."""
    _config(tmp_path, events=["open", "open", "trade"], format="teams", max_per_minute=61,
            webhook_url="ftp://example.com/hook")
    result = run_cli("config", "--config", "pomabotd.toml")
    assert result.returncode == 2
    for key in ("notify.events", "notify.format", "notify.max_per_minute", "notify.webhook_url"):
        assert f"  - {key} must be " in result.stderr, result.stderr
    assert "from file pomabotd.toml" in result.stderr
