"""The stress workload: reproducible, realistic, and tradeable in the right proportion."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from strategies import AS_OF

from pomabotd import evaluate_market
from pomabotd.domain.models import CATEGORIES, SIGNAL_TYPES, RiskLimits
from pomabotd.domain.selection import select
from pomabotd.sources.workload import generate, generate_jsonl
from pomabotd.wire import decode_markets, decode_signals, group_signals


@pytest.fixture(scope="module")
def workload():
    """Two thousand synthetic markets, evaluated once for the whole module."""
    data = generate(2000, 7, AS_OF)
    grouped = group_signals(data.signals)
    evaluations = [evaluate_market(m, grouped.get(m.id, []), AS_OF) for m in data.markets]
    return data, grouped, evaluations


def test_same_seed_and_time_give_the_same_bytes():
    """The generator is a pure function of (count, seed, as_of)."""
    assert generate_jsonl(300, 7, AS_OF) == generate_jsonl(300, 7, AS_OF)
    assert generate_jsonl(300, 7, AS_OF) != generate_jsonl(300, 8, AS_OF)
    assert generate_jsonl(300, 7, AS_OF) != generate_jsonl(300, 7, AS_OF + timedelta(days=1))


def test_encoded_lines_decode_without_rejections():
    """The JSON lines are exactly what the readers accept, and match the in-memory records."""
    market_lines, signal_lines = generate_jsonl(500, 3, AS_OF)
    markets, bad_markets = decode_markets(market_lines, "synthetic")
    signals, bad_signals = decode_signals(signal_lines, "synthetic signals")
    assert bad_markets == [] and bad_signals == []
    data = generate(500, 3, AS_OF)
    assert markets == data.markets and signals == data.signals


def test_the_mix_covers_every_category_type_and_hazard(workload):
    """All categories and signal types appear, with illiquid, closed and conflicting cases."""
    data, grouped, _ = workload
    assert {m.category for m in data.markets} == set(CATEGORIES)
    assert {s.type for s in data.signals} == set(SIGNAL_TYPES)
    assert {s.direction for s in data.signals} == {"up", "down", "neutral"}
    counts = Counter(len(grouped.get(m.id, [])) for m in data.markets)
    assert set(counts) == set(range(7))
    assert any(s.conflicts_with_existing for s in data.signals)
    assert any(m.liquidity < 1000 for m in data.markets)
    assert any(m.outcome is not None for m in data.markets)
    assert any(m.closes_at is not None and m.closes_at <= AS_OF for m in data.markets)
    prices = [m.price for m in data.markets]
    assert min(prices) >= 1 and max(prices) <= 99 and max(prices) - min(prices) > 90


def test_a_realistic_minority_passes_every_check_and_selection_has_work(workload):
    """Roughly 5-20% of markets are tradeable, every check fails somewhere, and trades happen."""
    _, _, evaluations = workload
    outcomes = Counter(e.failed_check for e in evaluations)
    assert 0.05 <= outcomes[None] / len(evaluations) <= 0.20
    assert {"market_open", "resolution_authority", "objective_outcome", "liquidity",
            "belief_width", "confidence", "price_outside_range", "edge"} <= set(outcomes)
    assert {e.side for e in evaluations} == {"YES", "NO", "NONE"}
    selection = select(evaluations, 10_000.0, (), RiskLimits())
    assert selection.picks and selection.skipped
