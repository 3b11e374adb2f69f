"""News items -> typed signals: every rule and word list in one module.

The rules as users read them: docs/sources.md#news-to-signals.

The steps, each a small function below:

1. **Keywords of a market** (`keywords`): the question lower-cased, punctuation removed, words
   longer than 3 letters that are not stop words, first occurrence first, at most 10.
2. **Relevance of an item to a market** (`relevance`): each market keyword found in the item's
   title scores 2, found only in its body scores 1; relevance is the score over twice the number
   of keywords (0-1). A market is matched when relevance >= `MIN_RELEVANCE`, at least
   `MIN_MATCHES` keywords were found (every keyword, for a market with fewer), and at least one
   of them is *distinctive*: shared by at most `max(DISTINCTIVE_FLOOR, DISTINCTIVE_SHARE x
   markets)` markets of the cycle. A word that many markets share (a coin, a league, `election`)
   still adds to the relevance of a market found through a rarer word, but cannot select
   markets on its own: a headline about it says nothing about which of them it concerns.
3. **Type** (`classify`), first rule that applies: an official source or a ruling word ->
   authoritative; a procedural word -> procedural; a quantitative word or a percentage ->
   quantitative; an interpretive word -> interpretive; otherwise speculative.
4. **Direction** (`direction`): more positive than negative words -> up, more negative -> down,
   else neutral.
5. **Strength** (`strength`): 1, +1 at relevance >= 0.5, +1 at relevance >= 0.8, +2 from an
   official source; at most 5. A source is official when its host ends in one of
   `OFFICIAL_SUFFIXES` (government, military, EU and international bodies: `sec.gov`,
   `federalreserve.gov`, `europa.eu`), by the feed's URL or the site link it declares.

The item's time is the signal's `timestamp`, its feed the `source`, its title the `description`.
Matching goes through an inverted index from keyword to markets (`MarketIndex`), so an item only
ever touches the markets that share a word with it; an item's candidates are counted and scored
with numpy. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from itertools import chain
from operator import itemgetter
from typing import Final

import msgspec
import numpy as np
from msgspec.structs import replace

from pomabotd.domain.models import Direction, Signal, SignalType

__all__ = [
    "AUTHORITATIVE_WORDS",
    "DISTINCTIVE_FLOOR",
    "DISTINCTIVE_SHARE",
    "INTERPRETIVE_WORDS",
    "MAX_KEYWORDS",
    "MIN_MATCHES",
    "MIN_RELEVANCE",
    "NEGATIVE_WORDS",
    "OFFICIAL_SUFFIXES",
    "POSITIVE_WORDS",
    "PROCEDURAL_WORDS",
    "QUANTITATIVE_WORDS",
    "STOP_WORDS",
    "MarketIndex",
    "Match",
    "NewsItem",
    "classify",
    "direction",
    "is_official",
    "keywords",
    "match_items",
    "relevance",
    "signals_from_news",
    "strength",
    "words",
]

def _word_set(text: str) -> frozenset[str]:
    """A word list written as text, one or more words per line."""
    return frozenset(text.split())


MAX_KEYWORDS: Final = 10
MIN_RELEVANCE: Final = 0.3
MIN_MATCHES: Final = 2
DISTINCTIVE_FLOOR: Final = 100
DISTINCTIVE_SHARE: Final = 0.01
TITLE_WEIGHT: Final = 2
BODY_WEIGHT: Final = 1

#: Words longer than 3 letters that say nothing about what a market is about.
STOP_WORDS: Final = _word_set(
    """
    about above after again against also along among another any anyone around away back
    been before being below between both came come could does doing done down during each
    either else even ever every first from further have having here into itself just last
    least less like made make many more most much must near need next only other ought over
    same shall should since some such than that their them then there these they this those
    though through under until upon very want were what when where whether which while will
    with within without would your yours ends ending price reach reaches hit hits
    close closes closing market markets resolve resolves happen happens happened
    """
)

#: Official acts and rulings: an item with any of these is authoritative.
AUTHORITATIVE_WORDS: Final = _word_set(
    """
    ruling ruled rules verdict official officially certified certifies certify confirmed
    confirms enacted signs signed approves approved adopts adopted orders ordered decision
    decides decided announces announced sentenced convicted acquitted
    """
)
#: Steps of a process that has not finished: hearings, filings, deadlines.
PROCEDURAL_WORDS: Final = _word_set(
    """
    hearing hearings filing filings filed files lawsuit lawsuits court appeal appeals motion
    petition deadline deadlines scheduled schedule subpoena indictment indicted charges
    charged trial testimony proposal proposes proposed comment consultation meeting vote
    votes voting nomination nominated inquiry investigation probe
    """
)
#: Measurements: polls, data, figures (a percentage such as `45%` counts too).
QUANTITATIVE_WORDS: Final = _word_set(
    """
    poll polls polling survey surveys data statistics percent percentage figures index
    rate rates inflation unemployment jobs payrolls tally count counts estimate estimates
    """
)
#: Someone's reading of events: analysis, expectations, forecasts.
INTERPRETIVE_WORDS: Final = _word_set(
    """
    analysis analyst analysts expect expects expected expectation expectations outlook
    forecast forecasts predict predicts prediction likely unlikely opinion commentary
    explainer view views suggests signals sees
    """
)
#: Words that make the YES outcome more likely.
POSITIVE_WORDS: Final = _word_set(
    """
    approve approves approved pass passes passed win wins won winning rise rises rising rose
    surge surges soar soars gain gains jump jumps increase increases beat beats agree agrees
    agreement deal success successful support supports backs lead leads ahead confirmed
    confirms higher record boost boosts growth advance advances secures secured victory
    """
)
#: Words that make the YES outcome less likely.
NEGATIVE_WORDS: Final = _word_set(
    """
    reject rejects rejected fail fails failed failure lose loses lost losing fall falls fell
    drop drops dropped decline declines plunge plunges slump slumps decrease decreases miss
    misses missed delay delays delayed block blocks blocked halt halts halted collapse
    collapses lower oppose opposes opposed ban bans banned cancel cancels cancelled canceled
    suspend suspends suspended withdraw withdraws withdrew defeat defeated denies denied
    """
)

#: Host name endings of official sources: their news is authoritative and stronger.
OFFICIAL_SUFFIXES: Final = (".gov", ".mil", ".gov.uk", ".europa.eu", ".int", ".gc.ca", ".gov.au")

_WORD: Final = re.compile(r"[^\W\d_]+")
#: The words `keywords` may keep: runs of letters longer than 3 (a run of 3 letters or fewer
#: never matches, and a longer one matches whole, so these are exactly `words`' long ones).
_LONG_WORD: Final = re.compile(r"[^\W\d_]{4,}")
_PERCENT: Final = re.compile(r"\d\s?%")
_TAG: Final = re.compile(r"<[^>]*>")


class NewsItem(msgspec.Struct, frozen=True, kw_only=True):
    """One feed entry, reduced to what classification needs; `official` is the feed's authority."""

    key: str
    title: str
    body: str
    timestamp: datetime
    feed: str
    link: str = ""
    official: bool = False


class Match(msgspec.Struct, frozen=True):
    """An item found relevant to a market, with the relevance that sets the signal's strength."""

    market_id: str
    relevance: float


def _untagged(text: str) -> str:
    return _TAG.sub(" ", text) if "<" in text else text


def words(text: str) -> list[str]:
    """Lower-cased words of letters of `text` (HTML tags, digits, punctuation removed), in order."""
    return _WORD.findall(_untagged(text).lower())


def keywords(question: str) -> tuple[str, ...]:
    """A market's keywords: words longer than 3 letters, no stop words, first 10 distinct."""
    found = dict.fromkeys(_LONG_WORD.findall(_untagged(question).lower()))
    chosen = [word for word in found if word not in STOP_WORDS]
    return tuple(chosen[:MAX_KEYWORDS])


def _needed(keyword_count: int) -> int:
    return min(MIN_MATCHES, keyword_count)


def relevance(
    market_keywords: Sequence[str],
    title: set[str],
    body: set[str],
    common: frozenset[str] = frozenset(),
) -> float:
    """Score of one item for one market (0-1): title hits weigh 2, body-only hits 1.

    This is the plain definition, scanning one market; `MarketIndex.match` computes the same
    through the index. `common` holds the cycle's non-distinctive keywords. Returns 0 when the
    item does not match (too few keywords found, or none of them distinctive).
    """
    if not market_keywords:
        return 0.0
    in_title = [k for k in market_keywords if k in title]
    in_body = [k for k in market_keywords if k not in title and k in body]
    if len(in_title) + len(in_body) < _needed(len(market_keywords)):
        return 0.0
    if all(k in common for k in chain(in_title, in_body)):
        return 0.0
    score = TITLE_WEIGHT * len(in_title) + BODY_WEIGHT * len(in_body)
    return score / (TITLE_WEIGHT * len(market_keywords))


class MarketIndex:
    """Keyword -> positions of the markets whose question has it; built once per cycle.

    Only distinctive keywords' lists are walked to find candidates, so an item costs at most
    `distinctive_max` markets per word it shares; common keywords are then looked up for those
    candidates only. Lists are numpy arrays, so that an item's candidates are counted and
    scored in a handful of vectorised steps rather than one Python step per candidate.
    """

    def __init__(
        self,
        markets: Iterable[tuple[str, str]],
        known: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        """`known` maps questions to their keywords from an earlier index (`keywords_of`),
        so that a daemon's markets, mostly the same from cycle to cycle, are not tokenised
        again; the new index's `keywords_of` holds this cycle's questions only."""
        self.ids: list[str] = []
        counts: list[int] = []
        flat: list[str] = []
        ids_append = self.ids.append
        counts_append = counts.append
        earlier = known or {}
        self.keywords_of: dict[str, tuple[str, ...]] = {}
        for market_id, question in markets:
            found = earlier.get(question)
            if found is None:
                found = keywords(question)
            self.keywords_of[question] = found
            ids_append(market_id)
            counts_append(len(found))
            flat += found
        self.keyword_counts: list[int] = counts
        total = len(self.ids)
        self._counts = np.array(counts, dtype=np.int64)
        #: Keywords a market must find in an item: `MIN_MATCHES`, or all it has.
        self._needed = np.minimum(self._counts, MIN_MATCHES)
        self.distinctive_max: int = max(DISTINCTIVE_FLOOR, int(DISTINCTIVE_SHARE * total))
        # Posting lists in one array, grouped by keyword (markets in order within each).
        vocabulary: dict[str, int] = {}
        numbers = np.array([vocabulary.setdefault(k, len(vocabulary)) for k in flat],
                           dtype=np.int64)
        positions = np.repeat(np.arange(total, dtype=np.int64), self._counts)
        grouped = positions[np.argsort(numbers, kind="stable")]
        sizes = np.bincount(numbers, minlength=len(vocabulary)).tolist()
        ends = np.cumsum(sizes).tolist()
        self.postings: dict[str, np.ndarray] = {}
        self.common_postings: dict[str, np.ndarray] = {}
        for keyword, number in vocabulary.items():
            size, end = sizes[number], ends[number]
            if size <= self.distinctive_max:
                self.postings[keyword] = grouped[end - size : end]
            else:
                members = np.zeros(total, dtype=np.int64)
                members[grouped[end - size : end]] = 1
                self.common_postings[keyword] = members
        self.common: frozenset[str] = frozenset(self.common_postings)

    def __len__(self) -> int:
        return len(self.ids)

    def match(self, title: set[str], body: set[str]) -> list[Match]:
        """Markets this item is relevant to, in index order; touches only shared keywords."""
        ids = self.ids
        return [Match(ids[position], score) for position, score in self.scores(title, body)]

    def scores(self, title: set[str], body: set[str]) -> list[tuple[int, float]]:
        """(position, relevance) of the markets this item is relevant to, in index order.

        The same integers as `relevance`, then one division each (exact integers divide to
        the same float in numpy as in Python), so the figures are identical to the plain
        definition's; the naive scan of `benchmarks/matching.py` checks it.
        """
        get = self.postings.get
        body_only = body - title
        title_lists = [p for p in map(get, title) if p is not None]
        body_lists = [p for p in map(get, body_only) if p is not None]
        if not title_lists and not body_lists:
            return []
        candidates, hits = np.unique(np.concatenate(title_lists + body_lists),
                                     return_counts=True)
        titles = np.zeros(len(candidates), dtype=np.int64)
        if title_lists:
            in_title, title_hits = np.unique(np.concatenate(title_lists), return_counts=True)
            titles[np.searchsorted(candidates, in_title)] = title_hits
        common = self.common_postings
        for keyword in title:
            members = common.get(keyword)
            if members is not None:
                found = members[candidates]
                hits += found
                titles += found
        for keyword in body_only:
            members = common.get(keyword)
            if members is not None:
                hits += members[candidates]
        score = (TITLE_WEIGHT * titles + BODY_WEIGHT * (hits - titles)) / (
            TITLE_WEIGHT * self._counts[candidates]
        )
        keep = (hits >= self._needed[candidates]) & (score >= MIN_RELEVANCE)
        return list(zip(candidates[keep].tolist(), score[keep].tolist(), strict=True))


def is_official(host: str) -> bool:
    """Whether a host name belongs to an official body (`OFFICIAL_SUFFIXES`)."""
    name = host.lower().rstrip(".")
    return any(name.endswith(suffix) or name == suffix[1:] for suffix in OFFICIAL_SUFFIXES)


def classify(item: NewsItem, item_words: set[str]) -> SignalType:
    """The signal type of an item, by the first rule that applies (module docstring, step 3)."""
    if item.official or not item_words.isdisjoint(AUTHORITATIVE_WORDS):
        return "authoritative"
    if not item_words.isdisjoint(PROCEDURAL_WORDS):
        return "procedural"
    if not item_words.isdisjoint(QUANTITATIVE_WORDS) or _PERCENT.search(
        item.title + " " + item.body
    ):
        return "quantitative"
    if not item_words.isdisjoint(INTERPRETIVE_WORDS):
        return "interpretive"
    return "speculative"


def direction(item_words: Iterable[str]) -> Direction:
    """`up` when positive words outnumber negative ones, `down` for the reverse, else neutral."""
    seen = list(item_words)
    positive = sum(1 for word in seen if word in POSITIVE_WORDS)
    negative = sum(1 for word in seen if word in NEGATIVE_WORDS)
    if positive > negative:
        return "up"
    if negative > positive:
        return "down"
    return "neutral"


def strength(score: float, official: bool) -> int:
    """1-5 from relevance and the source's authority (module docstring, step 5)."""
    value = 1 + (score >= 0.5) + (score >= 0.8) + (2 if official else 0)
    return min(5, value)


def match_items(index: MarketIndex, items: Iterable[NewsItem]) -> list[tuple[NewsItem, Match]]:
    """Every (item, market) pair above the relevance threshold, items in input order."""
    pairs: list[tuple[NewsItem, Match]] = []
    for item in items:
        title = set(words(item.title))
        body = set(words(item.body))
        pairs.extend((item, found) for found in index.match(title, body))
    return pairs


def signals_from_news(
    index: MarketIndex, items: Iterable[NewsItem], as_of: datetime
) -> list[Signal]:
    """The signals a cycle's news items give its markets; items after `as_of` are not known yet.

    They come in the markets' order (the index's), each market's in the items' order: a
    market-ordered input is what the engine splits between its workers without reading it.
    """
    found_for: list[tuple[int, Signal]] = []
    ids = index.ids
    for item in items:
        if item.timestamp > as_of:
            continue
        title_words = words(item.title)
        body_words = words(item.body)
        found = index.scores(set(title_words), set(body_words))
        if not found:
            continue
        every_word = title_words + body_words
        kind = classify(item, set(every_word))
        way = direction(every_word)
        # One Signal per match; the few strengths an item can give are made once.
        by_strength: dict[int, Signal] = {}
        for position, score in found:
            level = strength(score, item.official)
            model = by_strength.get(level)
            if model is None:
                model = by_strength[level] = Signal(
                    market_id="", type=kind, direction=way, strength=level,
                    timestamp=item.timestamp, source=item.feed, description=item.title,
                )
            found_for.append((position, replace(model, market_id=ids[position])))
    found_for.sort(key=itemgetter(0))  # stable: each market's signals keep their order
    return [signal for _, signal in found_for]
