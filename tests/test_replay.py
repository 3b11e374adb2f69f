"""`pomabotd replay` on a small resolved fixture whose every figure is worked out by hand here.

The fixture (`data/replay_markets.jsonl`, `data/replay_signals.jsonl`), replayed 7 days before
each close, with the belief rules:

- p-yes (politics): two authoritative up signals an hour apart, the last an hour before the
  evaluation: 45-55 -> 51-61 -> 57-67 (each shift capped at 60% of the 10-point width),
  confidence 70 - 0.5/24 - 0.5/24 = 69.96. `price_7d` 30: YES, edge 27. Resolved YES.
- p-no (politics): the same downwards: 33-43. `price_7d` 80: NO, edge 37, entry 20. Resolved YES.
- c-yes (crypto): like p-yes, 57-67, plus an authoritative down signal stamped a day after the
  evaluation (news from the future, dropped). `price_7d` 20 (its `price_1d` is another
  horizon, its `price` 99 the last one before settling): YES, edge 37. Resolved YES.
- s-flat (sports): no signals, the prior 45-55, confidence 50: not tradeable. Resolved NO.
- w-one (weather): one authoritative up signal: 51-61, confidence 59.98: not tradeable.
  Resolved NO.
- x-noclose has no `closes_at`, x-open no outcome: skipped. Lines 8 (`price_7d` 150) and 9
  (`price` "high") are rejected.

Selection (defaults: min edge 15, 2 per category, 20% risk, Kelly 0.25 capped at 5%): all three
tradeable markets have p = 0.57 at cost 0.2 or 0.3, so each is capped at $500 ($1,500 at risk).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from research_helpers import TESTS, assert_png, finish_alone, run_alone, start_alone

from pomabotd.domain.models import RiskLimits
from pomabotd.replay.source import load_resolved
from pomabotd.replay.timeline import prepare_input

MARKETS = str(TESTS / "data" / "replay_markets.jsonl")
SIGNALS = str(TESTS / "data" / "replay_signals.jsonl")
REPLAY = ("replay", "--markets", MARKETS, "--signals", SIGNALS, "--as-of-days-before", "7")
#: Where the pool makes no difference, the tests spare the machine its start-up.
IN_PROCESS = {"BATCH_WORKERS": "0"}


def _json(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """`replay --json` of the fixture with the built-in evaluator, run once for the module."""
    return run_alone(tmp_path_factory.mktemp("replay"), *REPLAY, "--json", env=IN_PROCESS)


def test_replay_json_gives_the_hand_computed_figures(replayed):
    """Brier, coverage, hit rate, P&L and their per-category breakdown match the hand sums."""
    result = replayed
    report = _json(result)

    assert report["markets"] == 5 and report["records"] == 7
    assert report["settings"] == {
        "evaluator": "pomabotd:evaluate_market", "builtin": True, "kernel": "columnar",
        "prior": "fixed", "risk": msgspec.to_builtins(RiskLimits()),
    }
    assert report["skipped_no_closes_at"] == 1 and report["skipped_unresolved"] == 1
    assert report["rejected_markets"] == 2 and report["failed"] == 0
    assert report["signal_records"] == 8 and report["rejected_signals"] == 0
    assert report["signals"] == 7 and report["signals_after_evaluation"] == 1
    assert "line 8: price_7d" in result.stderr and "line 9: price" in result.stderr
    # midpoints 62, 38, 62, 50, 56 against outcomes 1, 1, 1, 0, 0
    brier = ((0.62 - 1) ** 2 + (0.38 - 1) ** 2 + (0.62 - 1) ** 2 + 0.5**2 + 0.56**2) / 5
    assert report["brier"] == pytest.approx(brier, abs=1e-6)
    # covered: p-yes, c-yes (above 50, YES) and s-flat (contains 50); not p-no nor w-one
    assert report["coverage"] == pytest.approx(3 / 5)
    assert report["expected_coverage"] == pytest.approx((0.62 * 3 + 1.0 + 0.56) / 5)
    assert report["tradeable"] == 3
    assert report["hit_rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert report["mean_edge"] == pytest.approx((27 + 37 + 37) / 3, abs=1e-6)
    # per unit staked: p-yes 70/30, p-no -1, c-yes 80/20
    assert report["pnl_per_unit"] == pytest.approx((70 / 30 - 1 + 4) / 3, abs=1e-6)
    # $500 each: c-yes +2000, p-no -500, p-yes +1166.67
    assert report["selected"] == 3
    assert report["realized_pnl_usd"] == pytest.approx(2666.67)
    assert report["return_on_equity_pct"] == pytest.approx(26.6667)
    assert report["worst_position"]["market_id"] == "p-no"
    assert [(p["market_id"], p["side"], p["entry_price"], p["size_usd"], p["exit_price"],
             p["pnl_usd"]) for p in report["positions"]] == [
        ("c-yes", "YES", 20.0, 500.0, 100.0, 2000.0),
        ("p-no", "NO", 20.0, 500.0, 0.0, -500.0),
        ("p-yes", "YES", 30.0, 500.0, 100.0, 1166.67),
    ]

    by_category = report["by_category"]
    assert list(by_category) == ["politics", "crypto", "sports", "weather"]
    politics, crypto = by_category["politics"], by_category["crypto"]
    assert politics["markets"] == 2 and politics["tradeable"] == 2 and politics["selected"] == 2
    assert politics["brier"] == pytest.approx(((0.62 - 1) ** 2 + (0.38 - 1) ** 2) / 2)
    assert politics["coverage"] == 0.5 and politics["hit_rate"] == 0.5
    assert politics["pnl_per_unit"] == pytest.approx((70 / 30 - 1) / 2, abs=1e-6)
    assert politics["realized_pnl_usd"] == pytest.approx(666.67)
    assert crypto["mean_edge"] == 37.0  # 57 - 20: the late down signal was not used
    assert crypto["hit_rate"] == 1.0 and crypto["realized_pnl_usd"] == 2000.0
    assert by_category["sports"]["tradeable"] == 0 and by_category["sports"]["hit_rate"] is None
    assert by_category["weather"]["coverage"] == 0.0
    # return on the portfolio's $10,000: politics 666.67, crypto 2000; they add up to the total
    assert politics["return_on_equity_pct"] == 6.6667 and crypto["return_on_equity_pct"] == 20.0
    assert by_category["sports"]["return_on_equity_pct"] == 0.0
    # each category's calibration: politics' midpoints 62 (YES) and 38 (YES)
    assert [(b["low"], b["count"], b["predicted"], b["observed"])
            for b in politics["calibration"] if b["count"]] == [
        (30.0, 1, 0.38, 1.0), (60.0, 1, 0.62, 1.0)]
    assert [b["count"] for b in politics["confidence_buckets"]] == [0, 0, 2, 0]
    assert by_category["weather"]["confidence_buckets"][1]["count"] == 1  # confidence 59.98

    calibration = {(b["low"], b["count"]): b for b in report["calibration"] if b["count"]}
    assert set(calibration) == {(30.0, 1), (50.0, 2), (60.0, 2)}
    assert calibration[(50.0, 2)]["predicted"] == pytest.approx(0.53)
    assert calibration[(60.0, 2)]["observed"] == 1.0
    assert [b["count"] for b in report["confidence_buckets"]] == [0, 2, 3, 0]


def test_replay_prints_a_readable_summary_with_its_caveat(tmp_path: Path):
    """Without --json, the figures come as sentences and tables, with the no-promise line."""
    result = run_alone(tmp_path, *REPLAY, env=IN_PROCESS)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("replay of 5 resolved markets as of 7 days before closing")
    assert "decided by pomabotd:evaluate_market (built-in: fixed prior, columnar kernel)" in out
    assert "risk: min_edge 15, max_portfolio_risk 20, require_diversification true, " in out
    assert "Brier 0.2474" in out and "range coverage 60.0% (expected 68.4%)" in out
    assert "hit rate 66.7%" in out and "realized P&L $2,666.67" in out
    assert "politics" in out and "promise nothing" in out


def test_market_and_signal_records_are_counted_apart(tmp_path: Path):
    """A signals file with two refused lines among the fixture's eight: `rejected_signals` is 2,
    `rejected_markets` still the markets' 2, `records` counts markets only, and the summary
    gives the two kinds their own counts."""
    signals = tmp_path / "signals.jsonl"
    signals.write_text(Path(SIGNALS).read_text()
                       + '{"market_id": "p-yes", "type": "rumour", "direction": "up", '
                         '"strength": 1, "timestamp": "2026-03-01T00:00:00Z"}\n'
                       + '{"market_id": "w-one"}\n')
    args = ("replay", "--markets", MARKETS, "--signals", str(signals), "--as-of-days-before", "7")
    report = _json(run_alone(tmp_path, *args, "--json", env=IN_PROCESS))
    assert (report["records"], report["rejected_markets"]) == (7, 2)
    assert (report["signal_records"], report["rejected_signals"]) == (8, 2)
    assert (report["signals"], report["signals_after_evaluation"]) == (7, 1)
    summary = run_alone(tmp_path, *args, env=IN_PROCESS)
    assert "(7 market records: 1 without closes_at, 1 unresolved, 0 failed; 2 rejected)" \
        in summary.stdout
    assert "8 signal records (2 rejected): 7 used, 1 stamped too late" in summary.stdout
    assert "signals.jsonl line 9: type" in summary.stderr


def test_the_configuration_sets_the_risk_rules_and_the_signals(tmp_path: Path):
    """--config with one position per category and `sources.signals`: p-yes (edge 27) loses
    politics' only place to p-no (edge 37), leaving c-yes +2000 and p-no -500."""
    config = tmp_path / "pomabotd.toml"
    config.write_text(
        f'[risk]\nmax_positions_per_category = 1\n\n[sources]\nsignals = "{SIGNALS}"\n'
    )
    report = _json(run_alone(
        tmp_path, "replay", "--markets", MARKETS, "--as-of-days-before", "7", "--json",
        "--config", str(config), env=IN_PROCESS,
    ))
    assert report["signals"] == 7 and report["tradeable"] == 3
    assert report["settings"]["risk"]["max_positions_per_category"] == 1
    assert [p["market_id"] for p in report["positions"]] == ["c-yes", "p-no"]
    assert report["realized_pnl_usd"] == 1500.0


def test_the_evaluator_sees_neither_the_outcome_nor_later_news(tmp_path: Path, replayed):
    """A recording plugin, run in real workers, is shown each market at its own evaluation
    time: no outcome, the 7-day price, closing 7 days later, only signals from before, at their
    true distance in time; and it decides exactly as the built-in evaluator does."""
    record = tmp_path / "seen.jsonl"
    env = {"BATCH_EVALUATOR": "recording_evaluator:evaluate", "BATCH_WORKERS": "2",
           "PYTHONPATH": str(TESTS), "POMABOTD_TEST_RECORD": str(record)}
    with_plugin = _json(run_alone(tmp_path, *REPLAY, "--json", env=env))
    built_in = _json(replayed)
    assert with_plugin.pop("settings") == {
        "evaluator": "recording_evaluator:evaluate", "builtin": False, "kernel": None,
        "prior": None, "risk": built_in.pop("settings")["risk"],
    }
    assert with_plugin == built_in

    seen = {r["market"]["id"]: r for r in map(json.loads, record.read_text().splitlines())}
    assert set(seen) == {"p-yes", "p-no", "c-yes", "s-flat", "w-one"}
    # `replay` leads its own session here: a plugin call inside it would share its pid
    assert all(r["pid"] != r["session"] for r in seen.values())
    for market_id, price in {"p-yes": 30, "p-no": 80, "c-yes": 20, "s-flat": 40,
                             "w-one": 50}.items():
        shown = seen[market_id]
        as_of = datetime.fromisoformat(shown["as_of"])
        assert shown["market"].get("outcome") is None
        assert "price_7d" not in shown["market"] and "price_1d" not in shown["market"]
        assert shown["market"]["price"] == price
        assert datetime.fromisoformat(shown["market"]["closes_at"]) - as_of == timedelta(days=7)
        assert all(datetime.fromisoformat(s["timestamp"]) <= as_of for s in shown["signals"])
    c_yes = seen["c-yes"]
    assert [s["direction"] for s in c_yes["signals"]] == ["up", "up"]
    as_of = datetime.fromisoformat(c_yes["as_of"])
    assert [as_of - datetime.fromisoformat(s["timestamp"]) for s in c_yes["signals"]] == [
        timedelta(hours=2), timedelta(hours=1)
    ]


def test_a_replay_whose_every_evaluation_failed_exits_1(tmp_path: Path):
    """A plugin that fails every market leaves nothing to score: each failure is listed, then
    one line says so, exit 1, and no report is printed."""
    env = {"BATCH_EVALUATOR": "failing_evaluator:evaluate_market", "PYTHONPATH": str(TESTS),
           "BATCH_RETRY_ATTEMPTS": "0", "BATCH_WORKERS": "1"}
    result = run_alone(tmp_path, *REPLAY, "--json", env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert "failed: p-yes: RuntimeError: no strategy for p-yes" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: nothing scored: every evaluation failed (5 markets; "
        "first: p-yes: RuntimeError: no strategy for p-yes)"
    )


_MARKET = ('{"id": "%s", "question": "?", "category": "sports", "price": 99, "price_7d": 20, '
           '"liquidity": 5000, "closes_at": "2026-03-10T00:00:00Z", "outcome": "YES"}\n')


@pytest.mark.parametrize(("markets", "signals", "message"), [
    ("", "", "no market to replay: m.jsonl holds no record"),
    ('{"id": "a", "price": 50}\n{"id": ""}\n', "",
     "no usable market: every record of m.jsonl was refused (2 records; first: m.jsonl line 1: "
     "question"),
    (_MARKET.replace(', "outcome": "YES"', "") % "a"
     + _MARKET.replace('"closes_at": "2026-03-10T00:00:00Z", ', "") % "b"
     + _MARKET.replace(', "price_7d": 20', "") % "c" + '{"id": 1}\n', "",
     "nothing to score: none of the 3 market records of m.jsonl can be replayed (1 without "
     "closes_at, 1 unresolved (no outcome), 1 without a price at the horizon, 1 refused)"),
    (_MARKET % "a", '{"market_id": "a"}\n{"market_id": "a", "type": "rumour"}\n',
     "no usable signal: every record of s.jsonl was refused (2 records; first: s.jsonl line 1: "),
])
def test_a_replay_with_nothing_to_score_exits_1(tmp_path: Path, markets: str, signals: str,
                                                message: str):
    """An empty file, every record refused, no replayable market, or a signals file none of
    whose lines is usable: exit 1 with one line saying why, before any evaluation, and no
    report."""
    (tmp_path / "m.jsonl").write_text(markets)
    (tmp_path / "s.jsonl").write_text(signals)
    args = ["replay", "--markets", "m.jsonl", "--as-of-days-before", "7", "--json"]
    if signals:
        args += ["--signals", "s.jsonl"]
    result = run_alone(tmp_path, *args, env=IN_PROCESS)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith(f"Error: {message}")
    assert "Traceback" not in result.stderr


def test_horizon_prices_pick_price_nd_and_skip_records_without_it():
    """3 days back only p-yes has its `price_3d` (60): every other resolved record is skipped
    and counted, with a warning, rather than evaluated at its `price`, which for p-no, c-yes
    and w-one is the settled 99 or 1."""
    resolved = load_resolved(MARKETS, SIGNALS, 3)
    assert {m.market.id: m.horizon_price for m in resolved.markets} == {"p-yes": 60.0}
    assert (resolved.no_horizon_price, resolved.price_fallbacks) == (5, 0)
    assert [r.line for r in resolved.rejected] == [9]  # price_7d 150 is no concern 3 days back
    assert resolved.warnings == (
        f"{MARKETS}: 5 resolved records without price_3d skipped (a resolved record's price is "
        "usually its last one, near the settlement); give them price_3d, or --price-fallback if "
        "the file's price was recorded 3 days before closing",
    )
    prepared = prepare_input(resolved)
    shown = {line["id"]: line for line in map(json.loads, prepared.markets.splitlines())}
    assert shown == {"p-yes": shown["p-yes"]} and shown["p-yes"]["price"] == 60
    assert "outcome" not in shown["p-yes"]
    # the latest evaluation time is the common as_of: p-yes's, 3 days before 2026-03-10
    assert prepared.as_of == datetime.fromisoformat("2026-03-07T00:00:00+00:00")


def test_price_fallback_evaluates_at_price_and_says_which_prices_look_settled():
    """With the fallback the five records show their `price`, counted, and the warning names
    the three whose price sits at the settlement (p-no 99 and c-yes 99 resolved YES, w-one 1
    resolved NO)."""
    resolved = load_resolved(MARKETS, SIGNALS, 3, price_fallback=True)
    prices = {m.market.id: m.horizon_price for m in resolved.markets}
    assert prices == {"p-yes": 60.0, "p-no": None, "c-yes": None, "s-flat": None,
                      "w-one": None, "x-badhorizon": None}
    assert (resolved.no_horizon_price, resolved.price_fallbacks) == (0, 5)
    assert resolved.warnings == (
        f"{MARKETS}: 5 resolved records without price_3d evaluated at their price "
        "(--price-fallback); 3 of them sit at the settled price (99 or more on the side that "
        "won), which hands the outcome to the evaluator",
    )
    prepared = prepare_input(resolved)
    shown = {line["id"]: line for line in map(json.loads, prepared.markets.splitlines())}
    assert shown["p-yes"]["price"] == 60 and shown["p-no"]["price"] == 99
    assert all("outcome" not in line for line in shown.values())


def test_replay_without_horizon_prices_warns_and_counts(tmp_path: Path):
    """The command 3 days back: one market scored, five skipped, the warning on stderr; with
    --price-fallback six scored and five counted as fallbacks; a Gamma snapshot refuses the
    fallback (exit 2), its prices being its settlement."""
    back_3 = ("replay", "--markets", MARKETS, "--signals", SIGNALS, "--as-of-days-before", "3",
              "--json")
    result = run_alone(tmp_path, *back_3, env=IN_PROCESS)
    report = _json(result)
    assert (report["markets"], report["skipped_no_horizon_price"], report["price_fallbacks"]) \
        == (1, 5, 0)
    assert "warning: " in result.stderr and "5 resolved records without price_3d skipped" \
        in result.stderr
    fallback = _json(run_alone(tmp_path, *back_3, "--price-fallback", env=IN_PROCESS))
    assert (fallback["markets"], fallback["skipped_no_horizon_price"],
            fallback["price_fallbacks"]) == (6, 0, 5)
    gamma = run_alone(tmp_path, "replay", "--markets", "gamma:snapshot.json",
                      "--as-of-days-before", "3", "--price-fallback", env=IN_PROCESS)
    assert gamma.returncode == 2
    assert "--price-fallback cannot apply to gamma:snapshot.json" in gamma.stderr


def test_a_signal_at_the_evaluation_time_is_used_and_one_after_it_is_not(tmp_path: Path):
    """The boundary: stamped exactly at `closes_at - D` is known then; a second later is not."""
    markets = tmp_path / "m.jsonl"
    markets.write_text(
        '{"id": "a", "question": "?", "category": "sports", "price": 99, "price_7d": 20, '
        '"liquidity": 5000, "closes_at": "2026-03-10T00:00:00Z", "outcome": "YES"}\n'
    )
    signals = tmp_path / "s.jsonl"
    signals.write_text(
        '{"market_id": "a", "type": "authoritative", "direction": "up", "strength": 5, '
        '"timestamp": "2026-03-03T00:00:00Z"}\n'
        '{"market_id": "a", "type": "authoritative", "direction": "up", "strength": 5, '
        '"timestamp": "2026-03-03T00:00:01Z"}\n'
    )
    prepared = prepare_input(load_resolved(str(markets), str(signals), 7))
    assert (prepared.signals_used, prepared.signals_late) == (1, 1)
    assert prepared.signals.count(b"\n") == 1


@pytest.mark.parametrize(
    ("markets", "message"),
    [
        ("gamma:snapshot.json", "snapshot.json: no such file"),
        ("polymarket", "needs resolved markets"),
        ("missing.jsonl", "missing.jsonl: no such file"),
    ],
)
def test_sources_replay_cannot_use_are_usage_errors(tmp_path: Path, markets: str, message: str):
    """A missing snapshot, a live source or a missing file exit 2, named."""
    result = run_alone(tmp_path, "replay", "--markets", markets, "--as-of-days-before", "7",
                       env=IN_PROCESS)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_replay_plot_writes_a_calibration_curve_and_pnl_by_category(tmp_path: Path):
    """--plot draws two PNG files with real content next to the JSON report."""
    plots = tmp_path / "plots"
    report = _json(run_alone(tmp_path, *REPLAY, "--json", "--plot", str(plots), env=IN_PROCESS))
    assert report["markets"] == 5
    assert sorted(p.name for p in plots.iterdir()) == ["calibration.png", "pnl_by_category.png"]
    for path in plots.iterdir():
        assert_png(path)


def test_a_close_too_early_to_go_back_d_days_is_rejected_by_field(tmp_path: Path):
    """A closes_at in the first days of the calendar cannot be gone back from: rejected, named."""
    markets = tmp_path / "m.jsonl"
    markets.write_text(
        '{"id": "a", "question": "?", "price": 1, "price_7d": 5, "liquidity": 5000, '
        '"closes_at": "0001-01-03T00:00:00Z", "outcome": "NO"}\n'
    )
    resolved = load_resolved(str(markets), "", 7)
    assert resolved.markets == () and resolved.records == 0
    assert [(r.line, r.field) for r in resolved.rejected] == [(1, "closes_at")]
    assert "too early to go back 7 days" in resolved.rejected[0].message


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_abandons_a_replay_with_128_plus_its_number(tmp_path: Path, signum: int):
    """SIGTERM or SIGINT while the pool's workers evaluate (a plugin that never returns):
    replay exits with 128 + the signal's number, says it abandoned the replay, prints no report,
    and neither a worker nor the fork server outlives it."""
    started = tmp_path / "started"
    env = {"BATCH_EVALUATOR": "blocking_evaluator:evaluate", "BATCH_WORKERS": "2",
           "BATCH_TIMEOUT_MS": "600000", "PYTHONPATH": str(TESTS),
           "POMABOTD_TEST_STARTED": str(started)}
    process = start_alone(tmp_path, *REPLAY, "--json", env=env)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no evaluation started"
            time.sleep(0.02)
        os.kill(process.pid, signum)
    finally:
        result = finish_alone(process)
    name = signal.Signals(signum).name
    assert result.returncode == 128 + signum, result.stderr
    assert f"stopped by {name}: the replay was abandoned" in result.stderr
    assert "Traceback" not in result.stderr and "Aborted" not in result.stderr
    assert result.stdout == ""
