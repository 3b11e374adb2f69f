"""The `pomabotd` command line end to end, through the real entry point in a fresh process."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import AS_OF_TEXT, DATA, RunCli

from pomabotd.engine.kernels import native
from pomabotd.output import CycleMetrics

MARKETS = str(DATA / "cycle_markets.jsonl")
SIGNALS = str(DATA / "cycle_signals.jsonl")
METRIC_FIELDS = set(CycleMetrics.__struct_fields__)


@pytest.fixture
def run_in_process(run_cli: RunCli) -> RunCli:
    """`run_cli` with `batch.workers = 0`. A cycle of fewer than 2,000 markets runs in-process
    even beside a pool, so the tests about what a command prints and writes spare the machine
    a pool start; the pool's own behaviour is tested by the stress, daemon and engine tests."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 90):
        return run_cli(*args, env={"BATCH_WORKERS": "0", **(env or {})}, timeout=timeout)

    return run


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run_once(run_cli: RunCli, out: Path, markets: str = MARKETS, *extra: str):
    return run_cli("run-once", "--markets", markets, "--signals", SIGNALS, "--as-of",
                   AS_OF_TEXT, "--out", str(out), *extra)


def test_evaluate_writes_one_evaluation_per_market_in_input_order(
    run_in_process: RunCli, tmp_path: Path
):
    """evaluate prints every market's evaluation, in input order, and writes no file."""
    result = run_in_process("evaluate", "--markets", MARKETS, "--signals", SIGNALS,
                            "--as-of", AS_OF_TEXT)
    assert result.returncode == 0, result.stderr
    evaluations = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["market_id"] for e in evaluations] == [
        "m-yes", "m-no", "m-illiquid", "m-closed", "m-flat"
    ]
    by_id = {e["market_id"]: e for e in evaluations}
    assert by_id["m-yes"]["side"] == "YES" and by_id["m-yes"]["failed_check"] is None
    assert (by_id["m-yes"]["belief_low"], by_id["m-yes"]["belief_high"]) == (57.0, 67.0)
    assert by_id["m-yes"]["edge"] == 27.0 and by_id["m-yes"]["expected_edge"] == 32.0
    assert by_id["m-no"]["side"] == "NO" and by_id["m-no"]["edge"] == 47.0
    assert by_id["m-illiquid"]["failed_check"] == "liquidity"
    assert by_id["m-illiquid"]["side"] == "NONE"
    assert by_id["m-closed"]["failed_check"] == "market_open"
    assert by_id["m-flat"]["category"] == "other"
    assert by_id["m-flat"]["signals_rejected"] == 1
    assert all(e["error"] is None for e in evaluations)
    assert list(tmp_path.iterdir()) == []


def test_evaluate_reports_bad_records_by_line_and_field_and_runs_the_rest(run_in_process: RunCli):
    """Bad market lines are named on stderr with line and field; good lines are still evaluated."""
    result = run_in_process("evaluate", "--markets", str(DATA / "cli_bad_markets.jsonl"), "--as-of",
                     AS_OF_TEXT)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["market_id"] for line in result.stdout.splitlines()] == [
        "good-1", "good-2"
    ]
    assert "Traceback" not in result.stderr
    assert "line 2" in result.stderr
    assert "line 3" in result.stderr and "id" in result.stderr
    assert "line 4: price" in result.stderr
    assert "line 6: price" in result.stderr


def test_run_once_opens_positions_and_continues_the_portfolio(
    run_in_process: RunCli, tmp_path: Path
):
    """Two runs on one directory: positions open once, the second run continues the ledger."""
    out = tmp_path / "out"
    first = _run_once(run_in_process, out)
    assert first.returncode == 0, first.stderr
    second = _run_once(run_in_process, out)
    assert second.returncode == 0, second.stderr

    events = _lines(out / "positions.jsonl")
    assert [(e["event"], e["market_id"], e["side"]) for e in events] == [
        ("open", "m-no", "NO"), ("open", "m-yes", "YES")
    ]
    yes = next(e for e in events if e["market_id"] == "m-yes")
    assert yes["entry_price"] == 30.0 and yes["size_usd"] == 500.0 and yes["cycle_id"] == 1
    assert yes["stop_price"] == 28.5 and abs(yes["target_price"] - 33.0) < 1e-9
    metrics = _lines(out / "metrics.jsonl")
    assert [m["cycle_id"] for m in metrics] == [1, 2]
    assert set(metrics[0]) == METRIC_FIELDS
    assert metrics[0]["selected"] == 2 and metrics[1]["selected"] == 0
    assert metrics[1]["open_positions"] == 2
    assert metrics[0]["markets_total"] == 5 and metrics[0]["markets_evaluated"] == 5
    assert metrics[0]["portfolio_risk_pct"] == 10.0


def test_run_once_closes_a_position_at_its_profit_target(run_in_process: RunCli, tmp_path: Path):
    """A later cycle whose price reaches the target closes the position with its P&L."""
    out = tmp_path / "out"
    assert _run_once(run_in_process, out).returncode == 0
    moved = tmp_path / "moved.jsonl"
    original = (DATA / "cycle_markets.jsonl").read_text()
    moved.write_text(original.replace('"price": 30', '"price": 34'))
    result = _run_once(run_in_process, out, str(moved), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["closed"] == 1 and summary["realized_pnl_usd"] == 66.67
    assert summary["equity_usd"] == 10066.67
    close = _lines(out / "positions.jsonl")[-1]
    assert close["event"] == "close" and close["market_id"] == "m-yes"
    assert close["exit_reason"] == "profit_target" and close["exit_price"] == 34.0
    assert close["pnl_usd"] == 66.67 and close["cycle_id"] == 2


def test_the_summary_writes_a_loss_as_minus_dollars(run_in_process: RunCli, tmp_path: Path):
    """A later cycle whose price falls to 20 closes m-yes at its stop (-$166.67): the summary
    says `-$166.67`, never `$-166.67`, for the close and the realized P&L."""
    out = tmp_path / "out"
    assert _run_once(run_in_process, out).returncode == 0
    fallen = tmp_path / "fallen.jsonl"
    fallen.write_text((DATA / "cycle_markets.jsonl").read_text().replace('"price": 30',
                                                                         '"price": 20'))
    result = _run_once(run_in_process, out, str(fallen))
    assert result.returncode == 0, result.stderr
    assert "equity $9,833.33, realized P&L -$166.67" in result.stdout
    assert "close m-yes stop_loss P&L -$166.67" in result.stdout
    assert "$-" not in result.stdout


def test_run_once_without_arguments_uses_the_embedded_synthetic_default(
    run_cli: RunCli, tmp_path: Path
):
    """With no arguments and no config, run-once trades the seeded synthetic markets."""
    result = run_cli("run-once", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) >= METRIC_FIELDS
    assert summary["markets_total"] == 1000 and summary["markets_failed"] == 0
    assert summary["selected"] > 0
    assert (tmp_path / "pomabotd-output" / "metrics.jsonl").exists()


def test_run_once_prints_a_human_summary(run_in_process: RunCli, tmp_path: Path):
    """Without --json, run-once prints a readable summary naming the cycle and the output."""
    result = _run_once(run_in_process, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cycle 1: 5 markets")
    assert "2 opened" in result.stdout and "positions.jsonl" in result.stdout


def test_config_shows_values_and_their_sources(run_cli: RunCli, tmp_path: Path):
    """config reports each value with where it came from: default, file or env var."""
    config = tmp_path / "pomabotd.toml"
    config.write_text("[batch]\nbatch_size = 10\n\n[risk]\nmin_edge = 11\n")
    result = run_cli("config", "--config", str(config), env={"BATCH_SIZE": "20"})
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["batch.batch_size"] == {"value": 20, "source": "env:BATCH_SIZE"}
    assert described["risk.min_edge"]["value"] == 11
    assert described["risk.min_edge"]["source"].startswith("file:")
    assert described["risk.kelly_fraction"] == {"value": 0.25, "source": "default"}


def test_flags_override_the_config_file(run_in_process: RunCli, tmp_path: Path):
    """--markets on the command line wins over sources.markets in the file."""
    config = tmp_path / "pomabotd.toml"
    config.write_text('[sources]\nmarkets = "does-not-exist.jsonl"\n')
    result = _run_once(run_in_process, tmp_path / "out", MARKETS, "--config", str(config))
    assert result.returncode == 0, result.stderr


def test_unknown_config_key_is_refused_with_exit_status_2(run_cli: RunCli, tmp_path: Path):
    """A misspelt key names itself and the file, and nothing runs."""
    config = tmp_path / "pomabotd.toml"
    config.write_text("[batch]\nworker = 2\n")
    result = run_cli("run-once", "--config", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "batch.worker" in result.stderr and str(config) in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_env_value_is_refused_naming_the_variable(run_cli: RunCli):
    """A bad BATCH_* value names the variable and exits 2."""
    result = run_cli("config", env={"BATCH_WORKERS": "-1"})
    assert result.returncode == 2
    assert "BATCH_WORKERS" in result.stderr and "Traceback" not in result.stderr


def test_missing_markets_file_fails_the_cycle_without_touching_the_output(
    run_in_process: RunCli, tmp_path: Path
):
    """A markets path that does not exist fails the cycle (exit 1, one line naming it), and
    the output directory is not even created."""
    result = run_in_process("run-once", "--markets", "nope.jsonl", "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert "nope.jsonl" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_a_file_of_refused_records_fails_the_cycle_and_leaves_the_output_alone(
    run_in_process: RunCli, tmp_path: Path
):
    """When every market record is refused the cycle fails with the reason; an existing
    output directory keeps its files byte for byte, and a new one is not created."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "price": 500}\n{"question": "no id"}\n')
    out = tmp_path / "out"
    assert _run_once(run_in_process, out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for target in (out, tmp_path / "fresh"):
        result = _run_once(run_in_process, target, str(bad))
        assert result.returncode == 1, result.stderr
        assert "no usable market: every record" in result.stderr
        assert "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "fresh").exists()


def test_positions_never_open_before_their_cycle_started(run_in_process: RunCli, tmp_path: Path):
    """Without --as-of a cycle runs as of its own start: opened_at is its started_at."""
    result = run_in_process("run-once", "--json", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    started_at = json.loads(result.stdout)["started_at"]
    opened = [e for e in _lines(tmp_path / "o" / "positions.jsonl") if e["event"] == "open"]
    assert opened and {e["opened_at"] for e in opened} == {started_at}


def test_a_date_without_offset_gets_a_suggestion_that_parses(
    run_in_process: RunCli, tmp_path: Path
):
    """--as-of 2026-06-01 is refused with a suggestion that is itself accepted."""
    refused = run_in_process("run-once", "--as-of", "2026-06-01", "--out", str(tmp_path / "o"))
    assert refused.returncode == 2
    assert "e.g. 2026-06-01T00:00:00Z" in refused.stderr
    accepted = run_in_process("run-once", "--as-of", "2026-06-01T00:00:00Z", "--out",
                       str(tmp_path / "o"))
    assert accepted.returncode == 0, accepted.stderr


def test_as_of_without_offset_is_refused(run_cli: RunCli):
    """--as-of must say which time zone it is in."""
    result = run_cli("evaluate", "--markets", MARKETS, "--as-of", "2026-06-01T12:00:00")
    assert result.returncode == 2
    assert "--as-of" in result.stderr


def test_stress_small_passes_its_checks(run_cli: RunCli):
    """stress small runs 100 markets through the engine and every validation check passes."""
    result = run_cli("stress", "small", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["markets"] == 100 and report["passed"] is True
    assert {c["name"] for c in report["checks"]} == {
        "processing_completed", "throughput", "memory", "portfolio_risk", "min_edge",
        "diversification",
    }
    assert report["wall_s"] > 0 and report["throughput_per_s"] > 10
    assert report["peak_rss_mb"] > 0
    assert "%|" not in result.stderr  # no progress bar when stderr is not a terminal


def test_stress_repeat_runs_cycles_on_one_pool_and_reports_their_median(run_cli: RunCli):
    """stress --repeat 5 runs five full cycles on the same warm pool (each into a fresh
    ledger, so each opens the same positions) and reports the median wall time, the least,
    the throughput of the median and the highest peak."""
    result = run_cli("stress", "--markets", "3000", "--repeat", "5", "--json",
                     env={"BATCH_WORKERS": "2"})
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["repeats"] == 5 and report["passed"] is True
    assert 0 < report["wall_s_min"] <= report["wall_s_median"] == report["wall_s"]
    wall = report["wall_s"]  # rounded to 0.1 ms
    assert report["throughput_per_s"] == pytest.approx(3000 / wall, rel=0.0001 / wall)
    assert report["markets_evaluated"] == 3000 and report["selected"] > 0
    cycles = [json.loads(line) for line in result.stderr.splitlines()
              if line.startswith("{") and '"event":"cycle"' in line]
    assert len(cycles) == 5
    assert {(c["opened"], c["opportunities"]) for c in cycles} == {
        (report["selected"], report["opportunities"])}
    assert report["peak_rss_mb"] == max(c["peak_rss_mb"] for c in cycles)


def test_stress_and_its_cycle_lines_say_which_decoder_ran(run_cli: RunCli):
    """`stress --json` and each cycle's log line name the decoder the workers used and how
    many markets it decoded; `batch.decoder` "msgspec" and the default ("auto": native where
    it is built) open the same positions."""
    runs = {}
    for setting in ("msgspec", "auto"):
        result = run_cli("stress", "--markets", "3000", "--json",
                         env={"BATCH_WORKERS": "2", "BATCH_DECODER": setting})
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        cycle, = (json.loads(line) for line in result.stderr.splitlines()
                  if line.startswith("{") and '"event":"cycle"' in line)
        runs[setting] = report
        assert (cycle["decoder"], cycle["markets_native"]) == (
            report["decoder"], report["markets_native"])
        assert f"{report['decoder']} decoder" in cycle["message"]
    expected = "native" if native.available() else "msgspec"
    assert (runs["msgspec"]["decoder"], runs["msgspec"]["markets_native"]) == ("msgspec", 0)
    assert (runs["auto"]["decoder"], runs["auto"]["markets_native"]) == (
        expected, 3000 if expected == "native" else 0)
    assert {(r["opportunities"], r["selected"], r["markets_evaluated"])
            for r in runs.values()} == {(runs["msgspec"]["opportunities"],
                                         runs["msgspec"]["selected"], 3000)}


def test_stress_draws_a_progress_bar_on_a_terminal(tmp_path: Path):
    """With stderr on a terminal, stress draws a progress bar there."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    with subprocess.Popen(
        [sys.executable, "-m", "pomabotd", "stress", "--markets", "3000"],
        cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=terminal,
    ) as process:
        os.close(terminal)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's last writer is gone
                break
            if not chunk:
                break
            drawn += chunk
        stdout, _ = process.communicate(timeout=60)
    os.close(controller)
    assert process.returncode == 0, stdout
    assert b"markets" in drawn and b"%|" in drawn


def test_stress_fails_with_exit_status_1_when_markets_fail(run_cli: RunCli):
    """A strategy that fails every market fails the processing check and exits 1."""
    tests_dir = str(Path(__file__).parent)
    result = run_cli(
        "stress", "--markets", "20",
        env={"BATCH_EVALUATOR": "failing_evaluator:evaluate_market", "PYTHONPATH": tests_dir,
             "BATCH_RETRY_ATTEMPTS": "0"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[FAIL] processing_completed" in result.stdout


def test_python_dash_m_and_console_script_agree(run_cli: RunCli):
    """The installed console script is the same program as python -m pomabotd."""
    shutil_path = shutil.which("pomabotd")
    assert shutil_path is not None
    assert run_cli("--version").stdout.strip().startswith("pomabotd, version")


def test_as_of_beyond_sane_years_is_a_usage_error(run_cli: RunCli):
    """An --as-of at the edge of the calendar is refused cleanly rather than overflowing."""
    result = run_cli("run-once", "--as-of", "9999-12-31T23:00:00Z")
    assert result.returncode == 2
    assert "--as-of" in result.stderr and "Traceback" not in result.stderr


def test_out_that_is_a_file_is_a_usage_error(run_in_process: RunCli, tmp_path: Path):
    """--out naming an existing file, or a path under one, is refused with exit 2, and the
    file is left alone."""
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    for out in (target, target / "sub"):
        result = _run_once(run_in_process, out)
        assert result.returncode == 2, result.stderr
        assert "not a directory" in result.stderr and "--out" in result.stderr
    assert target.read_text() == "keep me"


@pytest.mark.slow
def test_both_kernels_open_the_same_positions_and_the_prior_matters(
    run_in_process: RunCli, tmp_path: Path
):
    """run-once on the synthetic default writes identical positions with BATCH_KERNEL=scalar
    and with the default columnar kernel; `strategy.prior = "market"` changes what is opened,
    the same way under both kernels."""
    config = tmp_path / "market-prior.toml"
    config.write_text('[strategy]\nprior = "market"\n')
    positions = {}
    for kernel in ("columnar", "scalar"):
        for prior, extra in (("fixed", ()), ("market", ("--config", str(config)))):
            out = tmp_path / f"{kernel}-{prior}"
            result = run_in_process("run-once", "--as-of", AS_OF_TEXT, "--out", str(out), *extra,
                             env={"BATCH_KERNEL": kernel})
            assert result.returncode == 0, result.stderr
            positions[kernel, prior] = (out / "positions.jsonl").read_bytes()
    assert positions["columnar", "fixed"] == positions["scalar", "fixed"]
    assert positions["columnar", "market"] == positions["scalar", "market"]
    assert positions["columnar", "fixed"] != positions["columnar", "market"]
    assert positions["columnar", "fixed"].count(b'"event":"open"') > 0


def test_run_once_with_batch_disabled_runs_no_cycle(run_in_process: RunCli, tmp_path: Path):
    """BATCH_MODE_ENABLED=false: run-once says so, exits 0 and writes nothing."""
    result = run_in_process("run-once", "--out", str(tmp_path / "o"),
                     env={"BATCH_MODE_ENABLED": "false"})
    assert result.returncode == 0
    assert "batch.enabled is false (from env BATCH_MODE_ENABLED)" in result.stderr
    assert not (tmp_path / "o").exists()


def test_refused_records_log_one_json_warning_per_file(run_in_process: RunCli, tmp_path: Path):
    """With stderr not a terminal, logs are flat JSON lines: one WARNING for the markets file
    with its counts, and one INFO line for the cycle with its figures."""
    bad = str(DATA / "cli_bad_markets.jsonl")
    result = _run_once(run_in_process, tmp_path / "out", bad)
    assert result.returncode == 0, result.stderr
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    warnings = [line for line in logs if line["level"] == "WARNING"]
    assert len(warnings) == 1 and warnings[0]["source"] == bad
    assert warnings[0]["refused"] >= 4 and warnings[0]["records"] > warnings[0]["refused"]
    assert warnings[0]["event"] == "records_refused" and warnings[0]["cycle_id"] == 1
    (cycle,) = [line for line in logs if line["event"] == "cycle"]
    assert cycle["level"] == "INFO" and cycle["cycle_id"] == 1 and cycle["time"].endswith("Z")
    text = run_in_process("run-once", "--out", str(tmp_path / "t"),
                          env={"POMABOTD_LOG_FORMAT": "text"})
    assert " INFO " in text.stderr and not text.stderr.lstrip().startswith("{")


@pytest.mark.parametrize("command", ["run-once", "run"])
def test_an_output_directory_that_cannot_be_created_is_bad_usage(
    run_cli: RunCli, command: str
) -> None:
    """`--out /proc/x` is refused with exit 2 before the pool starts, naming the key, the
    flag and why."""
    result = run_cli(command, "--out", "/proc/pomabotd-test/out", "--status-addr", "") \
        if command == "run" else run_cli(command, "--out", "/proc/pomabotd-test/out")
    assert result.returncode == 2, result.stderr
    assert ("daemon.output_dir '/proc/pomabotd-test/out' (from flag --out) cannot be created "
            "in '/proc'") in result.stderr


def test_a_status_address_that_cannot_be_served_is_refused_before_anything_is_created(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """An address in use, or not on this machine, ends `run` with exit 2 naming
    daemon.status_addr and its source in words, before the output directory is created."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        in_use = run_cli("run", "--out", "out", "--status-addr", address)
    assert in_use.returncode == 2, in_use.stderr
    assert (f"daemon.status_addr '{address}' (from flag --status-addr) cannot be served: "
            "Address already in use") in in_use.stderr
    elsewhere = run_cli("run", "--out", "out", "--status-addr", "192.0.2.1:8787")
    assert elsewhere.returncode == 2 and "cannot be served" in elsewhere.stderr
    assert not (tmp_path / "out").exists()


def test_stress_removes_the_scratch_directories_of_runs_that_died(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """A scratch directory left by a stress run killed with SIGKILL (its lock held by no one)
    is removed by the next stress run; one whose lock a live run holds, or that has no lock
    yet, is kept; the run's own directory is gone when it ends."""
    scratch_root = tmp_path / "tmp"
    dead, live, new = (scratch_root / f"pomabotd-stress-{name}" for name in ("dead", "live",
                                                                               "new"))
    for directory in (dead, live, new):
        directory.mkdir(parents=True)
        (directory / "markets.jsonl").write_text("{}\n")
    (dead / ".stress.lock").touch()
    (live / ".stress.lock").touch()
    held = os.open(live / ".stress.lock", os.O_RDWR)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_cli("stress", "--markets", "100", "--json",
                         env={"TMPDIR": str(scratch_root), "BATCH_WORKERS": "0"})
    finally:
        os.close(held)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in scratch_root.iterdir()) == [live.name, new.name]
