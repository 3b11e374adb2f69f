"""`pomabotd replay --markets gamma:PATH`: a saved Polymarket snapshot, read through the sources'
Gamma mapping, with figures worked out by hand here.

The snapshot is built from the real objects of `data/gamma/markets_sample_50.json`: five open
markets are marked closed and resolved (`outcomePrices` 1/0 or 0/1) and keep the price they were
recorded at as `price_7d`, in Gamma's 0-1 like `outcomePrices` (shown here in points). Each
gets two neutral authoritative signals an hour before its evaluation time, so every belief stays
at the fixed prior 45-55 (midpoint 50) with confidence 69.98:

| id | category | price_7d | decision | outcome |
|---|---|---|---|---|
| 947275 | other | 0.5 | YES, edge 44.5 | NO |
| 1345775 | crypto | 93.85 | NO, edge 38.85 | YES |
| 1341702 | sports | 66.5 | NO, edge 11.5 (sports needs 10; selection 15) | YES |
| 1346576 | crypto | 50 | inside the range: not tradeable | NO |
| 1087528 | other | 0.4 | YES, edge 44.6 | NO |

Every tradeable decision bets against the crowd and loses. Selected (edge >= 15): 1087528,
947275, 1345775, $500 each (Kelly capped at 5%), settled at 0: -$1,500.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from research_helpers import TESTS, run_alone

SAMPLE = TESTS / "data" / "gamma" / "markets_sample_50.json"
IN_PROCESS = {"BATCH_WORKERS": "0"}


def _resolved(by_id: dict[str, dict[str, Any]], market_id: str, outcome: str,
              price_7d: Any = "recorded") -> dict[str, Any]:
    record = dict(by_id[market_id])
    recorded = json.loads(record["outcomePrices"])[0]  # Gamma's own string, 0-1
    record["closed"] = True
    record["outcomePrices"] = json.dumps(["1", "0"] if outcome == "YES" else ["0", "1"])
    if price_7d is not None:
        record["price_7d"] = recorded if price_7d == "recorded" else price_7d
    return record


def _signals(record: dict[str, Any]) -> str:
    closes = datetime.fromisoformat(record["endDate"].replace("Z", "+00:00"))
    when = (closes - timedelta(days=7, hours=1)).isoformat().replace("+00:00", "Z")
    return "".join(
        json.dumps({"market_id": str(record["id"]), "type": "authoritative",
                    "direction": "neutral", "strength": strength, "timestamp": when}) + "\n"
        for strength in (3, 2)
    )


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The snapshot and its signals file, written once for the module."""
    directory = tmp_path_factory.mktemp("gamma")
    by_id = {str(record["id"]): record for record in json.loads(SAMPLE.read_text())}
    traded = [_resolved(by_id, "947275", "NO"), _resolved(by_id, "1345775", "YES"),
              _resolved(by_id, "1341702", "YES"), _resolved(by_id, "1346576", "NO", 0.5),
              _resolved(by_id, "1087528", "NO")]
    refused = dict(by_id["941132"], outcomePrices='["NaN", "1"]')
    records = [
        *traded,
        _resolved(by_id, "1303407", "NO", price_7d=None),  # resolved, no price before it
        by_id["951217"],  # still open: unresolved
        by_id["613101"],  # closed for real at 0/1, no price_7d
        _resolved(by_id, "1340516", "NO", price_7d=62),  # in points, not Gamma's 0-1
        refused,  # the mapping refuses it
    ]
    path = directory / "resolved.json"
    path.write_text(json.dumps(records))
    signals = directory / "signals.jsonl"
    signals.write_text("".join(_signals(record) for record in traded))
    return path, signals


def test_a_gamma_snapshot_replays_through_the_sources_mapping(snapshot, tmp_path: Path):
    """Outcomes from 1/0 prices, decisions at `price_7d`, never at the settlement; resolved
    records without a price before resolution are skipped and counted; refusals are listed with
    their position, id and field."""
    path, signals = snapshot
    result = run_alone(tmp_path, "replay", "--markets", f"gamma:{path}", "--signals",
                       str(signals), "--as-of-days-before", "7", "--json", env=IN_PROCESS)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    assert report["markets"] == 5 and report["records"] == 8
    assert report["skipped_unresolved"] == 1 and report["skipped_no_horizon_price"] == 2
    assert report["skipped_no_closes_at"] == 0 and report["rejected_markets"] == 2
    assert (f"{path} record 9 (id 1340516): price_7d: price 62 is outside 0-1: a Gamma "
            "object's prices are 0-1, as in its outcomePrices (62 points is 0.62)") \
        in result.stderr
    assert f"{path} record 10 (id 941132): outcomePrices: price 'NaN' is not a finite number" \
        in result.stderr
    assert report["signals"] == 10 and report["signals_after_evaluation"] == 0

    assert report["brier"] == 0.25  # every midpoint is 50
    assert report["coverage"] == 1.0 and report["expected_coverage"] == 1.0
    assert report["tradeable"] == 4 and report["hit_rate"] == 0.0
    assert report["mean_edge"] == pytest.approx((44.5 + 38.85 + 11.5 + 44.6) / 4)
    assert report["pnl_per_unit"] == -1.0
    assert [(p["market_id"], p["side"], p["entry_price"], p["size_usd"], p["pnl_usd"])
            for p in report["positions"]] == [
        ("1087528", "YES", 0.4, 500.0, -500.0),
        ("947275", "YES", 0.5, 500.0, -500.0),
        ("1345775", "NO", 6.15, 500.0, -500.0),
    ]
    assert report["realized_pnl_usd"] == -1500.0
    assert report["worst_position"]["market_id"] == "1087528"

    by_category = report["by_category"]
    # The questions decide where Gamma gives no category: an election is politics.
    assert list(by_category) == ["politics", "crypto", "sports", "other"]
    assert (by_category["crypto"]["markets"], by_category["crypto"]["tradeable"],
            by_category["crypto"]["selected"]) == (2, 1, 1)
    assert by_category["sports"]["tradeable"] == 1 and by_category["sports"]["selected"] == 0
    assert by_category["politics"]["realized_pnl_usd"] == -500.0
    assert by_category["other"]["realized_pnl_usd"] == -500.0


def test_the_summary_names_the_records_without_a_price_at_the_horizon(snapshot,
                                                                      tmp_path: Path):
    """The human summary counts the resolved records that had no `price_7d`."""
    path, signals = snapshot
    result = run_alone(tmp_path, "replay", "--markets", f"gamma:{path}", "--signals",
                       str(signals), "--as-of-days-before", "7", env=IN_PROCESS)
    assert result.returncode == 0, result.stderr
    assert "1 unresolved, 2 without price_7d, 0 failed; 2 rejected" in result.stdout


def test_a_snapshot_that_is_not_a_json_array_is_a_usage_error(tmp_path: Path):
    """A file that is not a Gamma array is refused as a whole (exit 2), naming the file."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": 1}')
    result = run_alone(tmp_path, "replay", "--markets", f"gamma:{bad}", "--as-of-days-before",
                       "7", env=IN_PROCESS)
    assert result.returncode == 2
    assert f"{bad}: not a JSON array of Gamma market objects" in result.stderr


def test_the_committed_fixture_is_the_real_sample_resolved_by_its_rule():
    """`data/gamma/resolved_sample_25.json` and its signals are exactly what the documented
    rule makes of the 25 open markets of the real sample."""
    from gamma_fixture import FIXTURE, SIGNALS, build

    fixture, signals = build()
    assert FIXTURE.read_text() == fixture and SIGNALS.read_text() == signals
    assert len(json.loads(fixture)) == 25


@pytest.mark.slow
@pytest.mark.parametrize(("prior", "expected"), [
    ("fixed", {"brier": 0.25, "tradeable": 18, "selected": 4, "realized_pnl_usd": -2000.0}),
    ("market", {"brier": "by hand", "tradeable": 0, "selected": 0, "realized_pnl_usd": 0.0}),
])
def test_the_docs_comparison_of_the_two_priors_holds(tmp_path: Path, prior: str,
                                                     expected: dict[str, Any]):
    """The figures of docs/research.md for the Gamma fixture: the fixed prior bets against the
    crowd on 18 markets and loses the 4 it selects; the market prior, shown no news that moves it,
    trades nothing and scores a better Brier: its midpoints are the prices (pulled up near 0,
    where the range is clipped), and neutral news leaves them there."""
    from gamma_fixture import FIXTURE, SIGNALS

    if expected["brier"] == "by hand":
        misses = []
        for record in json.loads(FIXTURE.read_text()):
            price = float(record["price_7d"]) * 100  # Gamma's 0-1, in points
            midpoint = (max(0.0, price - 5) + min(100.0, price + 5)) / 200
            outcome = 1.0 if json.loads(record["outcomePrices"])[0] == "1" else 0.0
            misses.append((midpoint - outcome) ** 2)
        expected = {**expected, "brier": pytest.approx(sum(misses) / len(misses), abs=1e-6)}

    config = tmp_path / "prior.toml"
    config.write_text(f'[strategy]\nprior = "{prior}"\n')
    result = run_alone(tmp_path, "replay", "--markets", f"gamma:{FIXTURE}", "--signals",
                       str(SIGNALS), "--as-of-days-before", "7", "--json", "--config",
                       str(config), env=IN_PROCESS)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {key: report[key] for key in expected} == expected
    assert report["settings"]["prior"] == prior


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [number for item in value for number in _floats(item)]
    return []


def test_every_number_of_the_json_is_rounded_to_six_decimals(tmp_path: Path):
    """On the Gamma fixture, whose confidence buckets and positions (tuples in the report)
    carry float noise before rounding, every float `--json` prints has at most six decimals."""
    from gamma_fixture import FIXTURE, SIGNALS

    result = run_alone(tmp_path, "replay", "--markets", f"gamma:{FIXTURE}", "--signals",
                       str(SIGNALS), "--as-of-days-before", "7", "--json", env=IN_PROCESS)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    floats = _floats(report)
    assert len(floats) > 100
    assert [f for f in floats if round(f, 6) != f] == []
    assert report["confidence_buckets"][2]["hit_rate"] == 0.166667  # 3 won of 18
