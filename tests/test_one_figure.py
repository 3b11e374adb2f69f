"""One figure for one thing: the records a cycle refused count the same in its summary, its
metrics line and the daemon's `/metrics`; a stress cycle has one throughput; counts read
right for people (`1 market`, `2 markets`)."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import AS_OF_TEXT, DATA, RunCli
from daemon_process import DaemonProcess, jsonl

from pomabotd.words import plural

#: Two market lines and one signal line that the decoder refuses.
_BAD_MARKETS = '{"id": "bad-price", "question": "?", "price": 500}\nnot json\n'
_BAD_SIGNALS = '{"market_id": "m-yes", "type": "rumour"}\n'


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """The cycle fixture with three records the decoder refuses (two markets, one signal)."""
    markets, signals = tmp_path / "markets.jsonl", tmp_path / "signals.jsonl"
    markets.write_text((DATA / "cycle_markets.jsonl").read_text() + _BAD_MARKETS)
    signals.write_text((DATA / "cycle_signals.jsonl").read_text() + _BAD_SIGNALS)
    return markets, signals


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts; each is killed (by pid, with its processes) afterwards."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.finish()


def test_the_summary_and_the_metrics_line_count_every_refused_record(
    run_cli: RunCli, tmp_path: Path, inputs: tuple[Path, Path]
):
    """run-once lists three refusals and its summary says `3 records refused`, as its metrics
    line's `sources.records_refused` does (the decoder's refusals, markets and signals)."""
    markets, signals = inputs
    result = run_cli("run-once", "--markets", str(markets), "--signals", str(signals),
                     "--as-of", AS_OF_TEXT, "--out", "out")
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stderr.splitlines()
                if line.startswith("rejected: ")]) == 3
    assert "  sources: 3 records refused, 0 fetches failed" in result.stdout
    (metrics,) = jsonl(tmp_path / "out" / "metrics.jsonl")
    assert metrics["sources"]["records_refused"] == 3
    assert metrics["markets_rejected"] == 2


def test_the_daemons_metrics_count_the_same_refusals(
    daemons: list[DaemonProcess], tmp_path: Path, inputs: tuple[Path, Path]
):
    """A daemon's `/metrics` counts, by source, the refusals its metrics line counts: 3 after
    one cycle, and `/healthz`'s last cycle says the same."""
    markets, signals = inputs
    daemon = DaemonProcess(tmp_path, "--markets", str(markets), "--signals", str(signals),
                           "--as-of", AS_OF_TEXT, "--interval", "3600", "--out", "out",
                           env={"BATCH_WORKERS": "0"})
    daemons.append(daemon)
    daemon.wait_log(event="cycle", cycle_id=1)
    (metrics,) = jsonl(tmp_path / "out" / "metrics.jsonl")
    exposition = daemon.get("/metrics").text
    refused = {
        match.group(1): float(match.group(2)) for match in re.finditer(
            r'^pomabotd_source_records_refused_total\{source="([^"]*)"\} (\S+)$', exposition,
            re.MULTILINE)
    }
    assert refused == {str(markets): 2.0, str(signals): 1.0}
    assert sum(refused.values()) == metrics["sources"]["records_refused"] == 3
    assert daemon.get("/healthz").json()["last_cycle"]["sources"]["records_refused"] == 3
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.leftovers() == []
    stop = daemon.log_with(event="stop")
    assert stop is not None and "after 1 cycle (0 failed)" in stop["message"]


@pytest.mark.parametrize("repeat", ["1", "3"])
def test_stress_prints_the_throughput_its_cycle_logged(run_cli: RunCli, repeat: str):
    """stress's summary gives the same throughput and wall time as the log line of its (median)
    cycle, and its throughput check judges that figure."""
    result = run_cli("stress", "small", "--repeat", repeat)
    assert result.returncode == 0, result.stderr
    cycles = [json.loads(line) for line in result.stderr.splitlines()
              if line.startswith("{") and '"event":"cycle"' in line]
    assert len(cycles) == int(repeat)
    median = sorted(cycles, key=lambda c: c["wall_s"])[(len(cycles) - 1) // 2]
    figure = f"{median['throughput_per_s']:,.0f} markets/s"
    assert f"throughput     {figure}" in result.stdout
    assert f"[PASS] throughput: {figure} (minimum 10)" in result.stdout
    assert f"wall time      {median['wall_s']:.3f} s" in result.stdout


def test_stress_json_is_its_median_cycles_figures(run_cli: RunCli):
    """`stress --json`'s wall_s and throughput_per_s are its cycle's own, as logged."""
    result = run_cli("stress", "small", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (cycle,) = [json.loads(line) for line in result.stderr.splitlines()
                if line.startswith("{") and '"event":"cycle"' in line]
    assert report["throughput_per_s"] == cycle["throughput_per_s"]
    assert report["wall_s"] == cycle["wall_s"]


def test_counts_read_right_for_one_and_for_many():
    """The one plural helper: `1 position`, `2 positions`, `0 positions`, `1,000 markets`, and
    an irregular plural when given."""
    assert plural(1, "position") == "1 position"
    assert plural(2, "position") == "2 positions"
    assert plural(0, "position") == "0 positions"
    assert plural(1000, "market") == "1,000 markets"
    assert plural(1, "opportunity", "opportunities") == "1 opportunity"
    assert plural(3, "opportunity", "opportunities") == "3 opportunities"


def test_a_one_market_cycle_says_one_market(run_cli: RunCli, tmp_path: Path):
    """run-once on one market, with one signal refused, prints `1 market` and `1 record
    refused`, and nothing it prints or logs reads `1 markets` or the like."""
    markets, signals = tmp_path / "one.jsonl", tmp_path / "signals.jsonl"
    markets.write_text((DATA / "cycle_markets.jsonl").read_text().splitlines()[0] + "\n")
    signals.write_text((DATA / "cycle_signals.jsonl").read_text().splitlines()[0] + "\n"
                       + _BAD_SIGNALS)
    result = run_cli("run-once", "--markets", str(markets), "--signals", str(signals),
                     "--as-of", AS_OF_TEXT, "--out", "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cycle 1: 1 market in ")
    assert "  sources: 1 record refused, 0 fetches failed" in result.stdout
    (cycle,) = [json.loads(line) for line in result.stderr.splitlines()
                if line.startswith("{") and '"event":"cycle"' in line]
    assert cycle["message"].startswith("cycle 1 done: 1 market, ")
    assert re.search(r"\b1 (markets|records|positions|cycles|opportunities|workers)\b",
                     result.stdout + result.stderr) is None
