"""The living world through the command line: runs that repeat, moments that reproduce, and
positions that are never marked against another world's markets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import RunCli

IN_PROCESS = {"BATCH_WORKERS": "0", "POMABOTD_LOG_FORMAT": "json"}
TIMES = ("2026-06-01T12:00:00Z", "2026-06-01T12:20:00Z")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _cycle(run_cli: RunCli, out: Path, when: str, *extra: str) -> dict:
    result = run_cli("run-once", "--as-of", when, "--out", str(out), "--json", *extra,
                     env=IN_PROCESS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_two_runs_of_the_same_cycles_write_the_same_positions(run_cli: RunCli, tmp_path: Path):
    """The world at a time is a function of the seed and that time: the same cycles, run
    twice into two directories, write identical position lines, and the world moved between
    them (positions closed)."""
    for out in ("one", "two"):
        for when in TIMES:
            _cycle(run_cli, tmp_path / out, when)
    one = (tmp_path / "one" / "positions.jsonl").read_text()
    assert one == (tmp_path / "two" / "positions.jsonl").read_text()
    assert any(line["event"] == "close" for line in _lines(tmp_path / "one" / "positions.jsonl"))


def test_as_of_shows_the_same_moment_again(run_cli: RunCli):
    """evaluate on the world at a given --as-of prints the same evaluations every time (but for
    the time each took)."""

    def evaluations() -> list[dict]:
        result = run_cli("evaluate", "--markets", "synthetic", "--as-of", TIMES[1],
                         env=IN_PROCESS)
        assert result.returncode == 0, result.stderr
        return [{**json.loads(line), "elapsed_us": 0} for line in result.stdout.splitlines()]

    first = evaluations()
    assert first == evaluations() and len(first) == 1000


def test_a_new_seed_leaves_held_positions_missing_not_marked(run_cli: RunCli, tmp_path: Path):
    """Changing sources.seed under held positions does not mark them against the new world's
    markets: they are counted missing, with a warning, and equity stays where it was."""
    out = tmp_path / "out"
    first = _cycle(run_cli, out, TIMES[0])
    held = [line["market_id"] for line in _lines(out / "positions.jsonl")]
    assert first["open_positions"] == len(held) > 0
    assert all(market_id.startswith("syn-s7-") for market_id in held)
    config = tmp_path / "seed8.toml"
    config.write_text("[sources]\nseed = 8\n")
    result = run_cli("run-once", "--as-of", "2026-06-01T12:01:00Z", "--out", str(out), "--json",
                     "--config", str(config), env=IN_PROCESS)
    assert result.returncode == 0, result.stderr
    second = json.loads(result.stdout)
    assert second["equity_usd"] == first["equity_usd"] == 10000.0
    assert second["closed"] == 0 and second["held_missing"] == len(held)
    assert "held markets are missing from synthetic" in result.stderr
    lines = _lines(out / "positions.jsonl")
    assert not [line for line in lines if line["event"] == "close"]
    assert all(line["market_id"].startswith("syn-s8-") for line in lines[len(held):])


def _replay(run_cli: RunCli, tmp_path: Path, prior: str) -> tuple[dict, str]:
    config = tmp_path / f"{prior}.toml"
    config.write_text(f'[strategy]\nprior = "{prior}"\n')
    result = run_cli("replay", "--markets", "synthetic", "--as-of-days-before", "7",
                     "--as-of", TIMES[0], "--json", "--config", str(config), env=IN_PROCESS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_replay_scores_the_worlds_resolved_markets_and_the_market_prior_earns(
    run_cli: RunCli, tmp_path: Path
):
    """replay --markets synthetic needs no file: it scores the markets that resolved in the 30
    days before --as-of, each at its price 7 days before its close. With the default news
    (informative 60% of the time) the market prior earns and is better calibrated; the fixed
    prior, buying the crowd's long shots, loses."""
    market, warnings = _replay(run_cli, tmp_path, "market")
    fixed, _ = _replay(run_cli, tmp_path, "fixed")
    assert market["markets"] == fixed["markets"] > 1000
    assert market["records"] == market["markets"] + market["skipped_no_horizon_price"]
    assert "listed fewer than 7 days before closing" in warnings
    assert market["signals"] > market["markets"] and market["signals_after_evaluation"] == 0
    assert market["brier"] < fixed["brier"]
    assert market["pnl_per_unit"] > 0.1 and market["realized_pnl_usd"] > 0
    assert fixed["pnl_per_unit"] < 0 and fixed["realized_pnl_usd"] < 0


def test_replay_of_the_world_says_which_markets_it_skipped_and_why(run_cli: RunCli):
    """The summary counts the world's markets too young at the horizon as listed fewer than D
    days before closing (they miss no field), every count with thousands separators."""
    result = run_cli("replay", "--markets", "synthetic", "--as-of-days-before", "7",
                     "--as-of", TIMES[0], env=IN_PROCESS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "replay of 1,110 resolved markets as of 7 days before closing (52,589 market records: "
        "0 without closes_at, 0 unresolved, 51,479 listed fewer than 7 days before closing, "
        "0 failed; 0 rejected)")
    assert "warning: synthetic: 51,479 of the markets resolved in the last 30 days were " \
        "listed fewer than 7 days before closing" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--markets", "markets.jsonl", "--as-of", TIMES[0]),
         "--as-of applies to --markets synthetic only"),
        (("--markets", "synthetic", "--price-fallback"),
         "--price-fallback cannot apply to synthetic"),
    ],
    ids=["as-of with a file", "price fallback with the world"],
)
def test_replay_options_that_do_not_apply_are_refused(
    run_cli: RunCli, arguments: tuple[str, ...], message: str
):
    """--as-of with a file, or --price-fallback with the world, would do nothing: exit 2."""
    result = run_cli("replay", *arguments, "--as-of-days-before", "7", env=IN_PROCESS)
    assert result.returncode == 2 and message in result.stderr, result.stderr
