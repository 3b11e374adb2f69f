"""The news -> signal rules, each one as documented, and the index against the plain scan."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomabotd.sources.news_signals import (
    DISTINCTIVE_FLOOR,
    MAX_KEYWORDS,
    MIN_RELEVANCE,
    MarketIndex,
    NewsItem,
    classify,
    direction,
    is_official,
    keywords,
    relevance,
    signals_from_news,
    strength,
    words,
)

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _item(title: str, body: str = "", *, official: bool = False, hours: int = 1) -> NewsItem:
    return NewsItem(key=title, title=title, body=body, timestamp=AS_OF - timedelta(hours=hours),
                    feed="Test Feed", official=official)


def test_keywords_are_lowercase_long_words_without_stop_words_at_most_ten():
    """Lower case, punctuation and digits dropped, > 3 letters, stop words out, first 10 kept."""
    assert keywords("Will the Fed cut rates in September 2026?") == ("rates", "september")
    assert keywords("Will Bitcoin's price be ABOVE $110,000?") == ("bitcoin",)
    long = " ".join(f"word{'x' * n}" for n in range(15)).replace("word", "alpha")
    assert len(keywords(long)) == MAX_KEYWORDS
    assert keywords("Trump, Trump and TRUMP!") == ("trump",)


def test_words_strip_html_and_punctuation():
    """Tags and punctuation never become words."""
    assert words("<p>Fed <b>cuts</b> rates&nbsp;by 0.25%</p>") == ["fed", "cuts", "rates", "nbsp",
                                                                     "by"]


def test_relevance_weighs_title_over_body_and_needs_two_keywords():
    """Title hits score 2, body hits 1, over twice the keyword count; one keyword is not enough."""
    market = ("federal", "reserve", "rates", "september")
    assert relevance(market, {"federal", "reserve"}, set()) == pytest.approx(0.5)
    assert relevance(market, set(), {"federal", "reserve"}) == pytest.approx(0.25)
    assert relevance(market, {"federal"}, {"reserve", "rates"}) == pytest.approx(0.5)
    assert relevance(market, {"federal"}, set()) == 0.0
    assert relevance(("bitcoin",), set(), {"bitcoin"}) == pytest.approx(0.5)


def test_below_the_threshold_an_item_is_ignored():
    """Two body hits out of four keywords (0.25) is below MIN_RELEVANCE: no signal."""
    index = MarketIndex([("m", "Will the Federal Reserve raise rates in September?")])
    assert MIN_RELEVANCE == 0.3
    assert signals_from_news(index, [_item("Weather today", "federal reserve")], AS_OF) == []
    found = signals_from_news(index, [_item("Federal Reserve meets", "")], AS_OF)
    assert [s.market_id for s in found] == ["m"]


@pytest.mark.parametrize(
    ("title", "official", "expected"),
    [
        ("Court ruling blocks the merger", False, "authoritative"),
        ("Agency statement on the merger", True, "authoritative"),
        ("Hearing on the merger scheduled for May", False, "procedural"),
        ("Company files lawsuit before the deadline", False, "procedural"),
        ("New poll puts the merger at 45%", False, "quantitative"),
        ("Merger backed by 45% of shareholders", False, "quantitative"),
        ("Analysts expect the merger to close", False, "interpretive"),
        ("Rumours swirl around the merger", False, "speculative"),
    ],
)
def test_classification_takes_the_first_rule_that_applies(title, official, expected):
    """Official/ruling > procedural > quantitative > interpretive > speculative."""
    item = _item(title, official=official)
    assert classify(item, set(words(title))) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Senate approves the bill as support grows", "up"),
        ("Talks collapse and the deal is delayed", "down"),
        ("Bill wins support but vote delayed", "up"),
        ("Vote delayed as bill fails", "down"),
        ("Committee meets on Tuesday", "neutral"),
        ("Bill wins but talks collapse", "neutral"),
    ],
)
def test_direction_counts_positive_against_negative_words(text, expected):
    """More positive words -> up, more negative -> down, a tie or none -> neutral."""
    assert direction(words(text)) == expected


def test_strength_grows_with_relevance_and_authority():
    """1, +1 at relevance 0.5, +1 at 0.8, +2 for an official source, at most 5."""
    assert [strength(r, False) for r in (0.3, 0.5, 0.79, 0.8, 1.0)] == [1, 2, 2, 3, 3]
    assert [strength(r, True) for r in (0.3, 0.5, 0.8)] == [3, 4, 5]


def test_official_hosts():
    """Government, military, EU and international hosts are official; others are not."""
    assert is_official("www.sec.gov") and is_official("federalreserve.gov")
    assert is_official("ec.europa.eu") and is_official("www.gov.uk")
    assert not is_official("www.bbc.co.uk") and not is_official("gov.example.com")


def test_signal_carries_the_items_time_feed_and_title():
    """timestamp, source and description come from the item; future items are not known yet."""
    index = MarketIndex([("m", "Will the Federal Reserve raise rates in September?")])
    item = _item("Federal Reserve approves higher rates", official=True, hours=3)
    future = NewsItem(key="f", title="Federal Reserve rates", body="", feed="Test Feed",
                      timestamp=AS_OF + timedelta(hours=1))
    [signal] = signals_from_news(index, [item, future], AS_OF)
    assert signal.timestamp == item.timestamp and signal.source == "Test Feed"
    assert signal.description == item.title
    assert (signal.type, signal.direction, signal.strength) == ("authoritative", "up", 4)


def test_a_keyword_shared_by_many_markets_cannot_select_them_alone():
    """A word in more than DISTINCTIVE_FLOOR markets counts only beside a rarer shared word."""
    markets = [(f"c{i}", f"Will bitcoin close above strike{chr(97 + i % 26)}{i}?")
               for i in range(DISTINCTIVE_FLOOR + 1)]
    markets.append(("target", "Will bitcoin reach halving milestone?"))
    index = MarketIndex(markets)
    assert "bitcoin" in index.common
    assert index.match({"bitcoin", "close"}, set()) == []
    found = index.match({"bitcoin", "halving"}, set())
    assert [m.market_id for m in found] == ["target"]
    assert found[0].relevance == pytest.approx(4 / 6)


_VOCAB = [f"{a}{b}{c}ward" for a in "abcdef" for b in "ghij" for c in "klm"]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_index_finds_exactly_what_a_scan_of_every_market_finds(seed: int):
    """Differential: MarketIndex.match equals scoring every market with `relevance`.

    300-400 markets, half of them sharing one word (common: in over DISTINCTIVE_FLOOR markets).
    """
    rng = random.Random(seed)
    markets = [
        (f"m{i}", " ".join(["commonward"] * (i % 2) + rng.choices(_VOCAB[:5], k=rng.randint(0, 4))
                           + rng.choices(_VOCAB[5:60], k=rng.randint(1, 4))))
        for i in range(rng.randint(300, 400))
    ]
    index = MarketIndex(markets)
    assert "commonward" in index.common  # in half the markets: over DISTINCTIVE_FLOOR
    prepared = [(market_id, keywords(q)) for market_id, q in markets]
    for _ in range(10):
        title = set(rng.choices([*_VOCAB[:70], "commonward"], k=rng.randint(0, 6)))
        body = set(rng.choices(_VOCAB[:70], k=rng.randint(0, 10)))
        expected = [
            (market_id, score)
            for market_id, found in prepared
            if (score := relevance(found, title, body, index.common)) >= MIN_RELEVANCE
        ]
        got = index.match(title, body)
        assert [m.market_id for m in got] == [market_id for market_id, _ in expected]
        assert [m.relevance for m in got] == pytest.approx([score for _, score in expected])


def test_the_docs_list_the_word_lists_the_module_uses():
    """Docs match code: each word list of the sources page is exactly the module's constant."""
    from pathlib import Path

    from pomabotd.sources import news_signals

    page = (Path(__file__).parents[2] / "docs" / "sources.md").read_text(encoding="utf-8")
    for name in ("STOP_WORDS", "AUTHORITATIVE_WORDS", "PROCEDURAL_WORDS", "QUANTITATIVE_WORDS",
                 "INTERPRETIVE_WORDS", "POSITIVE_WORDS", "NEGATIVE_WORDS"):
        line = next(line for line in page.splitlines() if line.startswith(f"- `{name}` ("))
        listed = line.split("): ", 1)[1].split()
        assert frozenset(listed) == getattr(news_signals, name), name


def test_an_index_reusing_the_last_cycles_keywords_matches_the_same():
    """Built with the keywords an earlier index found (a daemon's next cycle), an index gives
    the same matches, and keeps the keywords of its own questions only."""
    markets = [("a", "Will the Senate pass the infrastructure bill?"),
               ("b", "Will Bitcoin close above $100k?")]
    first = MarketIndex(markets)
    later = MarketIndex([markets[0], ("c", "Will the infrastructure bill be signed?")],
                        first.keywords_of)
    title, body = set(words("Senate passes infrastructure bill")), set()
    assert later.match(title, body) == MarketIndex(
        [markets[0], ("c", "Will the infrastructure bill be signed?")]).match(title, body)
    assert set(later.keywords_of) == {markets[0][1], "Will the infrastructure bill be signed?"}


def test_signals_come_in_the_markets_order_each_markets_in_the_items_order():
    """Signals follow the order of the markets (so the engine can split a market-ordered
    input between its workers unread), and one market's keep the order of their items."""
    index = MarketIndex([
        ("fed", "Will the Federal Reserve raise rates in September?"),
        ("btc", "Will Bitcoin close above 100k dollars this month?"),
        ("oil", "Will crude oil prices exceed 120 dollars per barrel?"),
    ])
    items = [
        _item("Crude oil prices surge past 120 dollars per barrel", hours=1),
        _item("Bitcoin dollars rally: close above 100k this month likely", hours=2),
        _item("Federal Reserve signals rates raise in September", hours=3),
        _item("Crude oil barrel prices fall", hours=4),
        _item("Federal Reserve holds rates; September raise doubted", hours=5),
    ]
    signals = signals_from_news(index, items, AS_OF)
    assert [s.market_id for s in signals] == ["fed", "fed", "btc", "oil", "oil"]
    assert [s.description for s in signals if s.market_id == "oil"] == [
        items[0].title, items[3].title]
    assert [s.description for s in signals if s.market_id == "fed"] == [
        items[2].title, items[4].title]
