"""Measure news-to-market matching: the inverted index against a naive scan, on one core.

Run from a checkout with pomabotd installed:

    python benchmarks/matching.py                          # 50,000 markets x 2,000 items
    python benchmarks/matching.py --markets 5000 --items 500

Market questions are generated from a seeded vocabulary of 30,000 names with a Zipf-like skew
(a few, like a coin, a league or a country, are in thousands of questions; most are rare), shaped
like Polymarket questions. News items name one to four of those entities in headline-shaped
titles and three-sentence bodies; their other words come from a separate everyday vocabulary.
The index (`MarketIndex`) is timed building, then turning the items into signals
(`signals_from_news`: matching, classification and the `Signal` records), which is what a
cycle does; matching alone (`match_items`) is timed too. The naive scan scores every item
against every market with the plain `relevance` definition, on a sample of the items (it is
far slower), and is scaled to the same item count. Both must find the same (item, market)
pairs with the same relevance, to the bit, on the sample; the ratio printed is naive / index
matching, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from datetime import UTC, datetime

from pomabotd.sources.news_signals import (
    MIN_RELEVANCE,
    MarketIndex,
    NewsItem,
    keywords,
    match_items,
    relevance,
    signals_from_news,
    words,
)

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)

_TEMPLATES = (
    "Will {a} win the {b} {c} election in {y}?",
    "Will the price of {a} be above ${n} on {m} {d}?",
    "Will {a} beat {b} in the {c} final?",
    "Will {a} announce {b} {c} before {m} {y}?",
    "{a} vs. {b}: who wins the {c} match?",
    "Will the {a} {b} rate exceed {n}% in {m}?",
    "Will {a} and {b} sign a {c} agreement by {m} {d}?",
)
_HEADLINES = (
    "{a} {v} {b} after {c} talks",
    "{a} {v} as {b} {c} data surprises",
    "Court {v} {a} appeal over {b} {c}",
    "Analysts expect {a} to {v} {b} in {c}",
    "Poll shows {a} {v} {n}% ahead of {b}",
    "{a} officials confirm {b} {c} plan",
)
_VERBS = ("wins", "falls", "rises", "rejects", "approves", "delays", "backs", "loses", "leads")
_MONTHS = ("January", "February", "March", "April", "June", "July", "September", "October")


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab: set[str] = set()
    while len(vocab) < size:
        vocab.add("".join(rng.choice(letters) for _ in range(rng.randint(4, 10))))
    return sorted(vocab)


def _zipf_picker(rng: random.Random, vocab: list[str]):
    weights = [1.0 / (rank + 1) ** 1.05 for rank in range(len(vocab))]
    cumulative: list[float] = []
    total = 0.0
    for weight in weights:
        total += weight
        cumulative.append(total)

    def pick() -> str:
        return rng.choices(vocab, cum_weights=cumulative)[0]

    return pick


def workload(
    markets: int, items: int, seed: int = 11
) -> tuple[list[tuple[str, str]], list[NewsItem]]:
    """Seeded market (id, question) pairs and news items sharing one skewed vocabulary."""
    rng = random.Random(seed)
    pick = _zipf_picker(rng, _vocabulary(rng, 30_000))
    general = _zipf_picker(rng, [w + "s" for w in _vocabulary(rng, 5_000)])

    def fill(template: str, other: object = pick) -> str:
        word = other if callable(other) else pick
        return template.format(
            a=pick().title(), b=word(), c=word(), v=rng.choice(_VERBS), m=rng.choice(_MONTHS),
            d=rng.randint(1, 28), y=rng.choice((2026, 2027)), n=rng.randint(2, 150_000),
        )

    questions = [(f"m-{i:06d}", fill(rng.choice(_TEMPLATES))) for i in range(markets)]
    # A headline names one or two of the markets' entities; the rest is everyday news wording.
    news = [
        NewsItem(
            key=f"item-{i}",
            title=fill(rng.choice(_HEADLINES), pick if rng.random() < 0.5 else general),
            body=" ".join(fill(rng.choice(_HEADLINES), general) for _ in range(3)),
            timestamp=AS_OF,
            feed="bench",
        )
        for i in range(items)
    ]
    return questions, news


def naive(
    questions: list[tuple[str, str]], news: list[NewsItem], common: frozenset[str]
) -> list[tuple[str, str, float]]:
    """Score every item against every market: the baseline the index must beat."""
    prepared = [(market_id, keywords(question)) for market_id, question in questions]
    found: list[tuple[str, str, float]] = []
    for item in news:
        title, body = set(words(item.title)), set(words(item.body))
        for market_id, market_keywords in prepared:
            score = relevance(market_keywords, title, body, common)
            if score >= MIN_RELEVANCE:
                found.append((item.key, market_id, score))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markets", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--naive-items", type=int, default=40,
                        help="items the naive scan scores (scaled up to --items)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as promised
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, one core")
    questions, news = workload(args.markets, args.items)

    best_build = best_signals = best_match = best_cpu = float("inf")
    pairs: list = []
    signals: list = []
    for _ in range(args.repeats):
        cpu = time.process_time()
        started = time.perf_counter()
        index = MarketIndex(questions)
        built = time.perf_counter()
        signals = signals_from_news(index, news, AS_OF)
        done = time.perf_counter()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        pairs = match_items(index, news)
        matched = time.perf_counter()
        best_build = min(best_build, built - started)
        best_signals = min(best_signals, done - built)
        best_match = min(best_match, matched - done)

    best_warm = float("inf")
    for _ in range(args.repeats):
        started = time.perf_counter()
        MarketIndex(questions, index.keywords_of)  # a daemon's next cycle: same questions
        best_warm = min(best_warm, time.perf_counter() - started)

    sample = news[: args.naive_items]
    started = time.perf_counter()
    baseline = naive(questions, sample, index.common)
    naive_s = (time.perf_counter() - started) * len(news) / max(1, len(sample))
    indexed = [(item.key, found.market_id, found.relevance)
               for item, found in match_items(index, sample)]
    # The same pairs with the same relevance, to the bit: the index is the plain definition.
    assert sorted(indexed) == sorted(baseline), "index and naive scan disagree"
    assert len(signals) == len(pairs)

    total = best_build + best_signals
    print(f"{args.markets:,} markets x {args.items:,} items, {len(pairs):,} matches "
          f"({len(index.postings):,} keywords)")
    print(f"index build             {best_build:8.3f} s (best of {args.repeats})")
    print(f"match + signals         {best_signals:8.3f} s (signals_from_news: {len(signals):,} "
          "signals, classification included)")
    print(f"build + match + signals {total:8.3f} s wall, {best_cpu:.3f} s of CPU")
    print(f"index build, next cycle {best_warm:8.3f} s (questions tokenised last cycle "
          "reused)")
    print(f"match alone             {best_match:8.3f} s (match_items)")
    print(f"naive scan (scaled)     {naive_s:8.3f} s (from {len(sample)} items, same pairs and "
          "relevance)")
    print(f"naive / index           {naive_s / best_match:8.0f}x")


if __name__ == "__main__":
    main()
