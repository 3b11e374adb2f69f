"""The living synthetic world: a function of the seed and the time, whose markets list, move,
close and resolve with outcomes drawn from their hidden chances."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import numpy as np
import pytest
from strategies import AS_OF

from pomabotd.sources.encode import micros
from pomabotd.sources.synthetic import world_jsonl
from pomabotd.sources.world import (
    NEWS_WINDOW_H,
    World,
    chance,
    cohort,
    listing,
    market_id,
    parse_id,
    resolved_between,
    yes_price,
)
from pomabotd.wire import decode_markets, decode_signals

WORLD = World(seed=7, markets=1000, news_quality=0.6)
HOUR = timedelta(hours=1)


def _decoded(world: World, when, held=()):
    markets, signals = world_jsonl(world, when, held)
    decoded, refused = decode_markets(markets, "synthetic")
    news, refused_news = decode_signals(signals, "synthetic signals")
    assert refused == [] and refused_news == []
    return decoded, news


def test_the_world_at_a_time_depends_on_the_seed_and_that_time_alone():
    """The same seed and time give the same bytes whatever was asked before; another seed or
    time gives another world."""
    first = world_jsonl(WORLD, AS_OF)
    world_jsonl(WORLD, AS_OF + 5 * HOUR)  # asking about another time changes nothing
    assert world_jsonl(WORLD, AS_OF) == first
    assert world_jsonl(World(seed=8, markets=1000, news_quality=0.6), AS_OF) != first
    assert world_jsonl(WORLD, AS_OF + HOUR)[0] != first[0]


def test_the_population_stays_at_synthetic_markets_and_every_market_is_valid():
    """Every slot lists one market at any time, open or waiting for its result; the records
    decode without a refusal and cover every category."""
    for hours in (0, 7, 30, 24 * 40):
        markets, _ = _decoded(WORLD, AS_OF + hours * HOUR)
        assert len(markets) == 1000 == len({m.id for m in markets})
        assert all(m.outcome is None for m in markets)
    markets, _ = _decoded(WORLD, AS_OF)
    assert len(Counter(m.category for m in markets)) == 9
    closed = [m for m in markets if m.closes_at is not None and m.closes_at <= AS_OF]
    assert 0 < len(closed) < 150


def test_growing_the_world_keeps_its_markets():
    """Slots depend on (seed, slot) alone: a bigger world lists the smaller one's markets too."""
    small, _ = _decoded(World(seed=7, markets=100, news_quality=0.6), AS_OF)
    big, _ = _decoded(World(seed=7, markets=300, news_quality=0.6), AS_OF)
    assert big[:100] == small


def test_prices_move_within_an_hour_and_markets_resolve_every_hour():
    """At the default size, most open markets' prices change within an hour, by points, and
    markets resolve every hour of a day."""
    slots = np.arange(1000)
    markets = listing(7, slots, micros(AS_OF))
    open_ = markets.take(markets.closes_us > micros(AS_OF + HOUR))
    now, later = yes_price(open_, micros(AS_OF)), yes_price(open_, micros(AS_OF + HOUR))
    moved = np.abs(later - now)
    assert (moved >= 0.1).mean() > 0.7 and moved.mean() > 1.0
    for hour in range(24):
        resolved, _ = resolved_between(7, 1000, micros(AS_OF + hour * HOUR),
                                       micros(AS_OF + (hour + 1) * HOUR))
        assert len(resolved) >= 3


def test_outcomes_are_drawn_from_the_hidden_chances():
    """Over a hundred thousand resolved markets, the share that resolved YES matches the mean
    hidden chance overall and within each tenth of chance."""
    slots, generations = resolved_between(7, 20_000, micros(AS_OF - 30 * 24 * HOUR), micros(AS_OF))
    markets = cohort(7, slots, generations)
    assert len(markets) > 100_000
    chances = chance(markets)
    assert abs(markets.outcome.mean() - chances.mean()) < 0.01
    tenth = np.minimum((chances * 10).astype(int), 9)
    for bucket in range(10):
        inside = tenth == bucket
        assert abs(markets.outcome[inside].mean() - chances[inside].mean()) < 0.03


def test_a_price_path_is_the_same_whichever_times_are_asked_together():
    """A market's price at a time does not depend on the other times or markets asked with it,
    and it is frozen between the close and the result, then the settlement."""
    markets = listing(7, np.arange(50), micros(AS_OF))
    times = [micros(AS_OF + k * 7 * timedelta(minutes=1)) for k in range(5)]
    together = np.stack([yes_price(markets, t) for t in times])
    one = markets.take(np.array([3]))
    for row, at in zip(together, times, strict=True):
        assert yes_price(one, at)[0] == row[3]
    closes, resolves = markets.closes_us, markets.resolves_us
    assert (yes_price(markets, closes) == yes_price(markets, (closes + resolves) // 2)).all()
    assert (yes_price(markets, resolves) == markets.outcome * 100.0).all()
    unresolved = np.array(times)[:, None] < resolves[None, :]
    assert ((together[unresolved] >= 0.1) & (together[unresolved] <= 99.9)).all()


def test_news_is_dated_within_the_window_before_the_time_asked():
    """Every signal shown at a time is stamped in the news window before it; a market that
    closed has its result reported, towards its outcome."""
    markets, news = _decoded(WORLD, AS_OF)
    assert 2.5 < len(news) / len(markets) < 4.0
    assert all(AS_OF - timedelta(hours=NEWS_WINDOW_H) < s.timestamp <= AS_OF for s in news)
    closes = {m.id: m.closes_at for m in markets}
    outcomes = dict(zip((m.id for m in markets),
                        listing(7, np.arange(1000), micros(AS_OF)).outcome.tolist(), strict=True))
    reported = [s for s in news if s.timestamp >= closes[s.market_id]]
    assert len({s.market_id for s in reported}) > 10
    for signal in reported:
        assert (signal.type, signal.strength) == ("authoritative", 5)
        assert signal.direction == ("up" if outcomes[signal.market_id] else "down")


@pytest.mark.parametrize(("quality", "share"), [(1.0, 1.0), (0.0, 1 / 3)])
def test_news_quality_is_the_share_of_news_pointing_where_the_market_leans(quality, share):
    """With quality 1 every news item of an open market points to the side its latent leans to
    at the close; with 0, about a third do (noise: up, down or neutral)."""
    world = World(seed=7, markets=3000, news_quality=quality)
    markets, news = _decoded(world, AS_OF)
    listed = listing(7, np.arange(3000), micros(AS_OF))
    leaning = {m.id: lean for m, lean in zip(markets, listed.leaning.tolist(), strict=True)}
    open_ = {m.id for m in markets if m.closes_at is not None and m.closes_at > AS_OF}
    pointing = [s.direction == ("up" if leaning[s.market_id] else "down")
                for s in news if s.market_id in open_]
    assert len(pointing) > 3000
    assert abs(np.mean(pointing) - share) < 0.03


def test_a_held_market_that_resolved_is_delivered_with_its_outcome():
    """A held market the listing no longer shows is delivered by id: resolved, with the outcome
    its hidden chance drew and the settlement price."""
    first, _ = _decoded(WORLD, AS_OF)
    market = next(m for m in first if m.category == "crypto")
    _, slot, generation = parse_id(market.id) or (0, 0, 0)
    drawn = cohort(7, np.array([slot]), np.array([generation]))
    later = AS_OF + 12 * HOUR  # a crypto market lives an hour or two and waits hours at most
    listed, _ = _decoded(WORLD, later)
    assert market.id not in {m.id for m in listed}
    delivered, _ = _decoded(WORLD, later, held={market.id})
    assert len(delivered) == 1001
    settled = delivered[-1]
    assert settled.id == market.id
    assert settled.outcome == ("YES" if drawn.outcome[0] else "NO")
    assert settled.price == (100.0 if drawn.outcome[0] else 0.0)


def test_held_ids_of_another_world_or_of_no_market_are_left_out():
    """Held ids of another seed, of a market not listed yet, or of no world at all are not
    delivered (the cycle counts them missing); a held id the listing shows is not repeated."""
    listed, _ = _decoded(WORLD, AS_OF)
    _, slot, generation = parse_id(listed[0].id) or (0, 0, 0)
    held = {
        market_id(8, slot, generation), market_id(7, slot, generation + 5), "syn-0000001",
        "syn-s7-x-g1", listed[0].id,
    }
    delivered, _ = _decoded(WORLD, AS_OF, held=held)
    assert [m.id for m in delivered] == [m.id for m in listed]


def test_ids_carry_their_world():
    """A market id names its seed, slot and generation, and reads back to them."""
    assert market_id(7, 123, 4711) == "syn-s7-000123-g4711"
    assert parse_id("syn-s7-000123-g4711") == (7, 123, 4711)
    assert parse_id("syn-s-3-000001-g-2") == (-3, 1, -2)
    assert parse_id("syn-0000123") is None
