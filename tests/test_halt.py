"""The halt rules in operation: `run-once` and `run` stop opening positions when their own closes
trip a rule, keep the halt across restarts, and lift it on `pomabotd resume` or a configuration
change.

The sequence, as of 2026-06-01, with the decision rules and the default limits:

- cycle 1 (12:00): markets a, b, c (politics, sports, weather) at 40, each with two
  authoritative up signals: 45-55 -> 51-61 -> 57-67, confidence 69.96, YES with edge 17; all
  three open at $500 (5% each).
- cycle 2 (13:00): the prices are 41 and three authoritative down signals move each belief to
  27-37. Held 41 is above the stop (38) and below the target (44) and the entry midpoint (62):
  the price is above the new range, so all three close `invalidated`. Three in a row: halted.
- cycle 3 (14:00): market d (economics) at 40 with two up signals is tradeable, edge 17, but the
  halt holds it back (1 opportunity, 0 selected).
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
from daemon_process import DaemonProcess, jsonl, started_daemons, wait_for
from halt_inputs import THREE, market_line, signal_lines
from research_helpers import TESTS, run_alone

from pomabotd.cycle import Portfolio
from pomabotd.resume import RESUME_FILE

daemons = started_daemons
IN_PROCESS = {"BATCH_WORKERS": "0", "POMABOTD_LOG_FORMAT": "json"}
REASON = "invalidation_streak: 3 invalidated exits in a row (markets a, b, c; limit 3)"
_market = market_line
_signals = signal_lines


def _write_inputs(directory: Path) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "m1.jsonl").write_text("".join(_market(i, c, 40) for i, c in THREE))
    (directory / "s1.jsonl").write_text("".join(_signals(i, "up", "10:00", "11:00")
                                                for i, _ in THREE))
    (directory / "m2.jsonl").write_text("".join(_market(i, c, 41) for i, c in THREE))
    downs = "".join(_signals(i, "down", "12:10", "12:20", "12:30") for i, _ in THREE)
    (directory / "s2.jsonl").write_text(downs)
    (directory / "m3.jsonl").write_text(
        (directory / "m2.jsonl").read_text() + _market("d", "economics", 40)
    )
    (directory / "s3.jsonl").write_text(downs + _signals("d", "up", "12:40", "12:50"))


def _cycle(workdir: Path, n: int, hour: int, *extra: str, out: str = "out"):
    markets = f"inputs/m{min(n, 3)}.jsonl"
    signals = f"inputs/s{min(n, 3)}.jsonl"
    result = run_alone(workdir, "run-once", "--markets", markets, "--signals", signals,
                       "--as-of", f"2026-06-01T{hour:02d}:00:00Z", "--out", out, "--json",
                       *extra, env=IN_PROCESS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), [json.loads(line) for line in result.stderr.splitlines()
                                       if line.startswith("{")]


@pytest.fixture(scope="module")
def halted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work directory whose `out` was halted by cycle 2; `state-1.json` is cycle 1's state."""
    workdir = tmp_path_factory.mktemp("halted")
    _write_inputs(workdir / "inputs")
    first, _ = _cycle(workdir, 1, 12)
    assert first["selected"] == 3 and first["halted"] is False
    shutil.copy(workdir / "out" / "state.json", workdir / "state-1.json")
    second, logs = _cycle(workdir, 2, 13)
    assert second["closed"] == 3 and second["halted"] is True
    assert second["halt_reason"] == REASON
    warnings = [line for line in logs if line.get("event") == "halt"]
    assert [(w["level"], w["rule"], w["cycle_id"]) for w in warnings] == [
        ("WARNING", "invalidation_streak", 2)
    ]
    return workdir


def _copy(halted: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "work"
    shutil.copytree(halted, workdir)
    return workdir


@pytest.mark.slow
def test_a_halt_survives_a_restart_and_is_lifted_by_resume(halted: Path, tmp_path: Path):
    """Cycle 3, a new process, is still halted (d held back, no second warning); `resume`
    leaves a request that cycle 4 acts on: d opens, the request is gone, and the rules judge
    afresh from cycle 4."""
    workdir = _copy(halted, tmp_path)
    third, logs = _cycle(workdir, 3, 14)
    assert third["halted"] is True and third["halt_reason"] == REASON
    assert third["opportunities"] == 1 and third["selected"] == 0
    assert not [line for line in logs if line.get("event") == "halt"]

    resumed = run_alone(workdir, "resume", "--out", "out", env=IN_PROCESS)
    assert resumed.returncode == 0, resumed.stderr
    assert "resume requested for out" in resumed.stdout and REASON in resumed.stdout
    assert (workdir / "out" / RESUME_FILE).exists()

    fourth, logs = _cycle(workdir, 4, 15)
    assert fourth["halted"] is False and fourth["halt_reason"] is None
    assert fourth["selected"] == 1
    assert not (workdir / "out" / RESUME_FILE).exists()
    lifted = [line for line in logs if line.get("event") == "halt_lifted"]
    assert [(line["lifted_by"], line["cycle_id"]) for line in lifted] == [("resume", 4)]
    halt = json.loads((workdir / "out" / "state.json").read_text())["halt"]
    assert halt["halted"] is False and halt["judging_since"] == 4 and halt["window"] == []
    opened = [e for e in jsonl(workdir / "out" / "positions.jsonl") if e["event"] == "open"]
    assert [(e["cycle_id"], e["market_id"]) for e in opened][-1] == (4, "d")
    assert [m["halted"] for m in jsonl(workdir / "out" / "metrics.jsonl")] == [
        False, True, True, False
    ]

    again = run_alone(workdir, "resume", "--out", "out", env=IN_PROCESS)
    assert again.returncode == 0 and "not halted: nothing to resume" in again.stdout
    assert not (workdir / "out" / RESUME_FILE).exists()


@pytest.mark.slow
def test_a_changed_configuration_lifts_the_halt_and_the_same_one_does_not(
    halted: Path, tmp_path: Path
):
    """A file setting `risk.min_edge` to what the environment overrides back changes nothing:
    still halted. The same file without that override changes the effective min_edge: lifted,
    d opens, and the log names the key."""
    workdir = _copy(halted, tmp_path)
    config = workdir / "changed.toml"
    config.write_text("[risk]\nmin_edge = 16.0\n")
    same = run_alone(workdir, "run-once", "--markets", "inputs/m3.jsonl", "--signals",
                     "inputs/s3.jsonl", "--as-of", "2026-06-01T14:00:00Z", "--out", "out",
                     "--json", "--config", str(config),
                     env={**IN_PROCESS, "BATCH_MIN_EDGE": "15"})
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["halted"] is True

    changed, logs = _cycle(workdir, 4, 15, "--config", str(config))
    assert changed["halted"] is False and changed["selected"] == 1
    lifted = [line for line in logs if line.get("event") == "halt_lifted"]
    assert [(line["lifted_by"], line["changed"]) for line in lifted] == [
        ("configuration", ["risk.min_edge"])
    ]


@pytest.mark.slow
def test_a_prior_change_does_not_lift_the_halt_of_a_strategy_plugin(tmp_path: Path):
    """The same halting sequence run by a strategy plugin (it decides like the built-in one and
    reads no prior): a cycle with `strategy.prior = "market"` stays halted, since the plugin
    decides exactly as before; a change of `[risk]` still lifts it."""
    _write_inputs(tmp_path / "inputs")
    record = tmp_path / "seen.jsonl"
    plugin = {**IN_PROCESS, "BATCH_EVALUATOR": "recording_evaluator:evaluate",
              "PYTHONPATH": str(TESTS), "POMABOTD_TEST_RECORD": str(record)}

    def cycle(n: int, hour: int, *extra: str) -> dict:
        result = run_alone(tmp_path, "run-once", "--markets", f"inputs/m{min(n, 3)}.jsonl",
                           "--signals", f"inputs/s{min(n, 3)}.jsonl", "--as-of",
                           f"2026-06-01T{hour:02d}:00:00Z", "--out", "out", "--json", *extra,
                           env=plugin)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert cycle(1, 12)["selected"] == 3
    assert cycle(2, 13)["halt_reason"] == REASON
    market_prior = tmp_path / "market.toml"
    market_prior.write_text('[strategy]\nprior = "market"\n')
    third = cycle(3, 14, "--config", str(market_prior))
    assert third["halted"] is True and third["selected"] == 0
    stricter = tmp_path / "stricter.toml"
    stricter.write_text('[strategy]\nprior = "market"\n[risk]\nmin_edge = 16.0\n')
    fourth = cycle(4, 15, "--config", str(stricter))
    assert fourth["halted"] is False and fourth["selected"] == 1


def test_the_halt_is_rebuilt_from_the_files_when_state_json_lags_behind(halted: Path,
                                                                      tmp_path: Path):
    """A crash between cycle 2's lines and its state.json: the halt comes back from cycle 2's
    metrics line (with its reason) and its closes from its position lines."""
    workdir = _copy(halted, tmp_path)
    shutil.copy(workdir / "state-1.json", workdir / "out" / "state.json")
    halt = Portfolio.read(workdir / "out").halt
    assert halt.halted and halt.since_cycle == 2 and halt.reason == REASON
    assert halt.rule == "invalidation_streak"
    assert [c.market_id for c in halt.window] == ["a", "b", "c"]
    (workdir / "out" / "state.json").unlink()
    assert Portfolio.read(workdir / "out").halt == halt


def test_resume_names_a_directory_that_holds_no_run(tmp_path: Path):
    """`resume` on a directory without metrics.jsonl is bad usage (exit 2), named, writing
    nothing."""
    result = run_alone(tmp_path, "resume", "--out", "nowhere", env=IN_PROCESS)
    assert result.returncode == 2
    assert "nowhere has no metrics.jsonl" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_a_running_daemon_shows_the_halt_and_lifts_it_on_resume(
    halted: Path, tmp_path: Path, daemons: list[DaemonProcess]
):
    """A daemon on the halted directory is healthy but says `halted` with the reason in
    /healthz, `pomabotd_halted 1` in /metrics and `status`; `resume` while it runs is acted on
    at its next cycle (d opens, the gauge drops to 0); on SIGTERM it leaves no process behind."""
    workdir = _copy(halted, tmp_path)
    daemon = DaemonProcess(workdir, "--markets", "inputs/m3.jsonl", "--signals",
                           "inputs/s3.jsonl", "--as-of", "2026-06-01T14:00:00Z", "--out", "out",
                           "--interval", "0.3", env={"POMABOTD_LOG_FORMAT": "json"})
    daemons.append(daemon)
    wait_for("a halted cycle", lambda: daemon.get("/healthz").json()["cycles_ok"] >= 1)
    daemon.remember_descendants()
    health = daemon.get("/healthz")
    body = health.json()
    assert health.status_code == 200 and body["status"] == "ok"
    assert body["halted"] is True and body["halt_reason"] == REASON
    assert body["halt_rule"] == "invalidation_streak" and body["halted_since_cycle"] == 2
    assert body["resume_pending"] is False and "HALTED since cycle 2" in body["summary"]
    assert "\npomabotd_halted 1.0\n" in daemon.get("/metrics").text
    status = run_alone(workdir, "status", "--addr", daemon.url.removeprefix("http://"))
    assert status.returncode == 0 and f"halted since cycle 2: {REASON}" in status.stdout
    assert daemon.get("/api/positions").json()["open_positions"] == []

    resumed = run_alone(workdir, "resume", "--out", "out")
    assert resumed.returncode == 0, resumed.stderr
    lifted = daemon.wait_log(event="halt_lifted")
    assert lifted["lifted_by"] == "resume"
    wait_for("the halt lifted", lambda: not daemon.get("/healthz").json()["halted"])
    assert "\npomabotd_halted 0.0\n" in daemon.get("/metrics").text
    opened = daemon.get("/api/positions").json()["open_positions"]
    assert [p["market_id"] for p in opened] == ["d"]
    assert not (workdir / "out" / RESUME_FILE).exists()

    daemon.remember_descendants()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.leftovers() == []
    metrics = jsonl(workdir / "out" / "metrics.jsonl")
    flags = [m["halted"] for m in metrics]
    assert flags[:3] == [False, True, True] and flags[-1] is False
    assert flags.index(False, 1) == lifted["cycle_id"] - 1
