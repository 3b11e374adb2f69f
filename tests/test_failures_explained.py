"""A market that fails is explained, not only counted: the cycle's log names the first failed
markets with why and counts the rest, `run-once` prints them and `--json` carries them, and a
hang is called a timeout. Real worker processes, a real plugin."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
from conftest import RunCli
from mixed_faults_evaluator import EXPECTED

from pomabotd.domain.models import Market

#: The plugins' directory, after whatever the test run's own path holds.
PATH = os.pathsep.join(filter(None, (os.environ.get("PYTHONPATH"), str(Path(__file__).parent))))


def _markets(path: Path, count: int) -> Path:
    encoder = msgspec.json.Encoder()
    with path.open("wb") as out:
        for index in range(count):
            market = Market(id=f"m{index:04d}", question=f"Will thing {index} happen?",
                            category="politics", price=30.0 + index % 40, liquidity=5000.0,
                            closes_at="2026-07-01T00:00:00Z")  # type: ignore[arg-type]
            out.write(encoder.encode(market) + b"\n")
    return path


def _log_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_each_failure_is_named_with_why_and_a_hang_is_a_timeout(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """Four markets failing four ways (an exception, a hang no interrupt reaches, a
    MemoryError, a crash): the cycle completes; its WARNING names each with its reason, the
    hang as `timeout`; `run-once --json` carries them in input order."""
    markets = _markets(tmp_path / "markets.jsonl", 40)
    result = run_cli(
        "run-once", "--markets", str(markets), "--out", "out", "--json",
        "--as-of", "2026-06-01T00:00:00Z",
        env={"PYTHONPATH": PATH, "BATCH_EVALUATOR": "mixed_faults_evaluator:evaluate",
             "BATCH_WORKERS": "2", "BATCH_TIMEOUT_MS": "300", "BATCH_RETRY_ATTEMPTS": "0"},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = [{"market_id": market, "error": error} for market, error in EXPECTED.items()]
    assert summary["failures"] == expected
    assert summary["markets_failed"] == 4 and summary["markets_evaluated"] == 36
    (line,) = [ln for ln in _log_lines(result.stderr) if ln["event"] == "markets_failed"]
    assert line["level"] == "WARNING" and line["failed"] == 4
    assert line["failures"] == expected
    assert "m0002 (timeout)" in line["message"] and "m0004 (worker crashed)" in line["message"]


def test_beyond_ten_failures_the_rest_are_counted(run_cli: RunCli, tmp_path: Path) -> None:
    """A plugin failing all 25 markets: the log names ten and counts 15 more, the summary
    lists ten and says how many more failed, `--json` carries ten and counts all 25."""
    markets = _markets(tmp_path / "markets.jsonl", 25)
    env = {"PYTHONPATH": PATH, "BATCH_EVALUATOR": "failing_evaluator:evaluate_market",
           "BATCH_WORKERS": "2", "BATCH_RETRY_ATTEMPTS": "0"}
    shown = run_cli("run-once", "--markets", str(markets), "--out", "out", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["markets_failed"] == 25 and len(summary["failures"]) == 10
    assert summary["failures"][0] == {"market_id": "m0000",
                                      "error": "RuntimeError: no strategy for m0000"}
    (line,) = [ln for ln in _log_lines(shown.stderr) if ln["event"] == "markets_failed"]
    assert line["message"].startswith("25 markets failed: m0000 (RuntimeError: no strategy")
    assert line["message"].endswith(" and 15 more")
    printed = run_cli("run-once", "--markets", str(markets), "--out", "again", env=env)
    assert printed.returncode == 0, printed.stderr
    assert "  failed m0009: RuntimeError: no strategy for m0009" in printed.stdout
    assert "  ... and 15 more failed markets" in printed.stdout
