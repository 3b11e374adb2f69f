"""The living synthetic world: markets that list, move, close and resolve, as pure functions of
the seed and the time.

Slots. The world has `markets` slots; a slot is a series of markets one after another (this
hour's bitcoin question, then the next hour's). Each of its markets lives `life` from its
listing to its close, waits `lag` for its result, resolves, and the slot's next market is
listed at that moment. Life, lag and phase are drawn once per slot from `(seed, slot)` (on a
ten-minute grid; lives by category, `_KINDS`: crypto markets last an hour or two, sports and
weather ones hours, politics and world ones weeks), so the market a slot holds at any time `T`
is one division away: `generation = (T - EPOCH - phase) // (life + lag)`. The population is
always exactly `markets`, each slot listing its current market, open or closed and waiting for
its result. A market that resolved has left the listing but can still be asked for by id.

Markets. Each draws its own parameters from `(seed, slot, generation)` with a counter-based
hash (splitmix64), never from a generator that carries state, so a market's state at any time
costs the same whatever else is asked for, and whatever was asked before:

- a hidden chance `p` of YES. Behind it is a latent `c + W(1) + E`: `W` a Brownian motion over
  the market's life (`s` from 0 at the listing to 1 at the close), `E` the surprise only the
  result reveals (normal, of its category's variance `v`). The market resolves YES when the
  latent is above zero, which happens with chance `p = Phi(c / sqrt(1 + v))` exactly; `c` is
  drawn so that most chances lie between 10 and 90;
- its YES price at `s`: what the crowd can know then, the chance
  `Phi((c + W(s)) / sqrt(1 - s + v))`, tilted towards even (`_TILT`: long shots a little too
  dear, favourites a little too cheap, as real crowds price them) and moved by the crowd's own
  noise, a smooth wander with knots every half hour; to the tenth of a point, 0.1 to 99.9. It
  wanders around the chance and drifts towards the result as the close nears (little, where
  the surprise is large). `W(s)` comes from descending a Brownian bridge (Levy's construction)
  over `2**LEVELS` steps: `LEVELS` draws, no simulation from the listing. After the close the
  price stays where it closed; once resolved it is the settlement, 100 or 0;
- news, as dated signals: an event every 2 to 8 hours (at most a quarter of the market's life)
  from the listing to the close, each of 1 to 3 items a few minutes apart that point the same
  way. An event is informative with chance `news_quality` (`sources.synthetic_news_quality`),
  pointing where the crowd's knowledge is heading, towards the side the latent leans to at the
  close (`c + W(1)`); otherwise it is noise, up, down or neutral alike. Types, strengths and
  conflicts are drawn per item, like the news of a real feed. Once the market has closed, its
  result is reported every five minutes (authoritative, strength 5) until it resolves;
- liquidity, volume, and the flags the gate checks (unclear authority, a subjective outcome,
  open questions), drawn like the stress workload's.

A source shows the news of the last `NEWS_WINDOW_H` hours before the time asked for, as a feed
shows its recent items. Informative news knows where the price is going, which the crowd only
learns as time passes: with `news_quality` above 0 a strategy that starts from the price and
follows the news (`strategy.prior = "market"`) has an edge, one that ignores the price
(`"fixed"`) buys the crowd's long shots and has none.

Market ids carry the seed, `syn-s7-000123-g4711`, so a market of one world is never taken for
a market of another: positions held in the world of `sources.seed = 7` are missing, not
marked, in the world of seed 8.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import numpy as np

from pomabotd.domain.models import CATEGORIES
from pomabotd.sources.encode import (
    CATEGORY_TEXT,
    CRITERIA,
    QUESTIONS,
    TENTHS,
    extras,
    micros,
    signal_middle,
    times,
)

__all__ = [
    "EPOCH",
    "LEVELS",
    "NEWS_WINDOW_H",
    "Cohort",
    "World",
    "chance",
    "cohort",
    "current",
    "listing",
    "market_id",
    "market_ids",
    "market_lines",
    "parse_id",
    "resolved_between",
    "signal_lines",
    "yes_price",
]

#: The time every slot's phase counts from.
EPOCH: Final = datetime(2020, 1, 1, tzinfo=UTC)
#: A market's life is cut into 2**LEVELS steps of its price path.
LEVELS: Final = 12
#: Spread of the hidden chances on the normal scale: 1 draws them uniformly from 0-1, less
#: keeps more of them near even.
_CHANCE_SPREAD: Final = 0.6
#: News older than this (before the time asked for, or the close) is no longer shown.
NEWS_WINDOW_H: Final = 4.0

_STEPS: Final = 1 << LEVELS
_MINUTE_US: Final = 60_000_000
_GRID_US: Final = 10 * _MINUTE_US
_HOUR_US: Final = 60 * _MINUTE_US
_EPOCH_US: Final = micros(EPOCH)
_WINDOW_US: Final = int(NEWS_WINDOW_H * _HOUR_US)
#: The crowd's noise: knots of a smooth random wander, and its size on the normal scale.
_NOISE_KNOT_US: Final = 30 * _MINUTE_US
_NOISE: Final = 0.04
#: The crowd's favourite-longshot bias: prices show the chance's normal score times this.
_TILT: Final = 0.8
#: Per category: the median life of its markets in hours (lognormal, sigma `_LIFE_SIGMA`), and
#: the variance of the surprise its results hold (the path's over a life is 1): an hourly
#: crypto market is close to a coin flip until its end, an election drifts towards its result.
_KINDS: Final = {
    "politics": (504.0, 1.0), "crypto": (1.5, 0.1), "sports": (6.0, 0.2),
    "economics": (240.0, 1.0), "entertainment": (168.0, 1.0), "weather": (12.0, 0.3),
    "technology": (336.0, 1.0), "world": (672.0, 1.0), "other": (240.0, 1.0),
}
_MEDIAN_LIFE_US: Final = np.array([_KINDS[c][0] * _HOUR_US for c in CATEGORIES])
_SURPRISE: Final = np.array([_KINDS[c][1] for c in CATEGORIES])
_LIFE_SIGMA: Final = 0.5
_LIFE_RANGE_US: Final = (_HOUR_US, 120 * 24 * _HOUR_US)
#: How long a closed market waits for its result: log-uniform, on the ten-minute grid.
_LAG_RANGE_US: Final = (10 * _MINUTE_US, 4 * _HOUR_US)
#: Time between two news events about a market: log-uniform, whole minutes, at most a quarter
#: of its life. An event is 1 to `_BURST` items, `_ITEM_GAP_US` apart, all one way.
_NEWS_RANGE_US: Final = (2 * _HOUR_US, 8 * _HOUR_US)
_BURST: Final = 3
_ITEM_GAP_US: Final = 3 * _MINUTE_US
_BURST_US: Final = (_BURST - 1) * _ITEM_GAP_US
#: Once a market has closed, its result is reported this often until it resolves.
_RESULT_EVERY_US: Final = 5 * _MINUTE_US
#: Relative frequency of each signal type, in `SIGNAL_TYPES` order.
_TYPE_CUMULATIVE: Final = np.cumsum([0.38, 0.22, 0.14, 0.13, 0.13])
_CONFLICTING: Final = 0.12
_UNKNOWN_CUMULATIVE: Final = np.cumsum([0.7, 0.18, 0.08, 0.04])
_ILLIQUID: Final = 0.15
#: Liquidity and volume take one of this many values (a market's twelve bits of each).
_LEVELS: Final = 4096
_UNCLEAR: Final = 0.05
_SUBJECTIVE: Final = 0.05
#: The lowest and highest price shown before resolution, in points.
_PRICE_RANGE: Final = (0.1, 99.9)
_ID: Final = re.compile(r"syn-s(-?\d+)-(\d+)-g(-?\d+)")
_MASK64: Final = (1 << 64) - 1

# Streams of the counter-based hash: each kind of draw has its own.
_SLOT, _MARKET, _LATENT, _PATH_END, _PATH, _NOISE_KNOTS, _NEWS, _NEWS_ITEMS, _TRAITS = (
    range(1, 10))

_U = np.uint64


class World(msgspec.Struct, frozen=True, kw_only=True):
    """What a world is made of: `sources.seed`, `sources.synthetic_markets` and
    `sources.synthetic_news_quality`."""

    seed: int
    markets: int
    news_quality: float


class Cohort(msgspec.Struct, frozen=True, kw_only=True):
    """Some markets of one world, as columns (numpy arrays, one entry per market): the slot and
    generation that name each, its times in microseconds since 1970, and what it drew.

    `latent` is `c`, `path_end` `W(1)`, `surprise` the result's own noise; `outcome` is 1 for
    YES. Nothing here depends on the time the cohort is looked at.
    """

    seed: int
    slot: Any
    generation: Any
    key: Any
    category: Any
    template: Any
    listed_us: Any
    closes_us: Any
    resolves_us: Any
    news_every_us: Any
    news_phase_us: Any
    latent: Any
    path_end: Any
    outcome: Any
    leaning: Any
    liquidity: Any
    volume: Any
    liquidity_level: Any
    volume_level: Any
    unclear: Any
    subjective: Any
    unknowns: Any

    def __len__(self) -> int:
        return len(self.slot)

    def take(self, which: Any) -> Cohort:
        """The markets `which` selects (a mask or indexes), in that order."""
        columns = {
            name: getattr(self, name)[which] for name in self.__struct_fields__ if name != "seed"
        }
        return Cohort(seed=self.seed, **columns)


# --- the hash ----------------------------------------------------------------------------------


def _mix(z: Any) -> Any:
    """splitmix64's finaliser, on an array of uint64 (wrapping arithmetic)."""
    z = z ^ (z >> _U(30))
    z = z * _U(0xBF58476D1CE4E5B9)
    z = z ^ (z >> _U(27))
    z = z * _U(0x94D049BB133111EB)
    return z ^ (z >> _U(31))


def _hash(key: Any, stream: int, index: Any = None) -> Any:
    """64 random bits per entry of `key`, for draw `index` (an array, or one per key) of
    `stream`."""
    base = _mix(key ^ _U((stream * 0x9E3779B97F4A7C15) & _MASK64))
    if index is None:
        return base
    return _mix(base + np.asarray(index).astype(np.uint64) * _U(0xD1B54A32D192ED03))


def _uniform(bits: Any) -> Any:
    """Uniform on [0, 1) from 64 random bits."""
    return (bits >> _U(11)).astype(np.float64) * (1.0 / (1 << 53))


def _field(bits: Any, which: int) -> Any:
    """Uniform on [0, 1) from the `which`-th 12 bits of 64 (five fields: 0-4)."""
    return ((bits >> _U(12 * which)) & _U(0xFFF)).astype(np.float64) * (1.0 / 4096)


def _normal(bits: Any) -> Any:
    """Standard normal from 64 random bits: the quantile of their top 16 bits, to a 65,536th
    of probability (a table lookup: logarithms and cosines for every draw would cost as much
    as the rest of the world together)."""
    return _normal_table()[bits >> _U(48)]


@functools.cache
def _normal_table() -> Any:
    """The standard normal quantiles at `(i + 0.5) / 65536`."""
    return _quantile((np.arange(1 << 16) + 0.5) / (1 << 16))


def _quantile(p: Any) -> Any:
    """The standard normal quantile function (Acklam's rational approximation, relative error
    below 1.2e-9), for 0 < p < 1."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
         1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
         6.680131188771972e01, -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
         -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
         3.754408661907416e00)
    tail = np.sqrt(-2.0 * np.log(np.minimum(p, 1.0 - p)))
    outer = (((((c[0] * tail + c[1]) * tail + c[2]) * tail + c[3]) * tail + c[4]) * tail
             + c[5]) / ((((d[0] * tail + d[1]) * tail + d[2]) * tail + d[3]) * tail + 1.0)
    q = p - 0.5
    r = q * q
    inner = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
        ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
    central = (p >= 0.02425) & (p <= 1.0 - 0.02425)
    return np.where(central, inner, np.where(p < 0.5, outer, -outer))


@functools.cache
def _amounts() -> tuple[Any, Any, Any, Any]:
    """Liquidity and 24-hour volume, in USD, at each of `_LEVELS` levels (quantiles of their
    distributions: `_ILLIQUID` of markets below the gate's 1,000, the rest lognormal above it),
    and their text in a market line, each written once."""
    level = (np.arange(_LEVELS) + 0.5) / _LEVELS
    liquid = np.maximum(level - _ILLIQUID, 0.5 / _LEVELS) / (1.0 - _ILLIQUID)
    liquidity = np.round(np.where(
        level < _ILLIQUID, 50.0 + level / _ILLIQUID * 949.0,
        np.exp(9.5 + 1.2 * _quantile(liquid)) + 1000.0,
    ), 2)
    volume = np.round(np.exp(7.0 + 1.5 * _quantile(level)), 2)
    return (
        liquidity, volume,
        np.array([f',"liquidity":{v:.2f}' for v in liquidity.tolist()], object),
        np.array([f',"volume_24h":{v:.2f}' for v in volume.tolist()], object),
    )


@functools.cache
def _line_ends() -> Any:
    """The end of a market line, by `((unclear * 2 + subjective) * 4 + unknowns) * 3 +
    state`, state 0 before the result, 1 resolved NO, 2 resolved YES."""
    flags = np.array([(u, s, k, state) for u in (0, 1) for s in (0, 1) for k in range(4)
                      for state in range(3)])
    return extras(flags[:, 0] == 1, flags[:, 1] == 1, flags[:, 2], flags[:, 3] > 0,
                  flags[:, 3] - 1)


@functools.cache
def _questions() -> Any:
    """`QUESTIONS` after the key that precedes them, in ASCII (JSON escapes): joining and
    encoding ASCII text is much cheaper."""
    return np.array(
        ['","question":' + json.dumps(q)[:-1] for q in QUESTIONS.tolist()],
        object,
    )


def _phi(x: Any) -> Any:
    """The standard normal distribution function (Abramowitz and Stegun 7.1.26, error below
    1e-7 on the probability)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                           + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.where(x >= 0, erf, -erf))


def _log_uniform(unit: Any, bounds: tuple[int, int]) -> Any:
    low, high = bounds
    return low * np.exp(unit * np.log(high / low))


def _on_grid(micros_: Any, grid: int) -> Any:
    return np.maximum(np.rint(micros_ / grid), 1).astype(np.int64) * grid


def _seed_key(seed: int) -> Any:
    return np.array([seed & _MASK64], np.uint64)


# --- which markets -----------------------------------------------------------------------------


def _slots(seed: int, slot: Any) -> dict[str, Any]:
    """The parameters of slots `slot`, drawn from `(seed, slot)` alone."""
    key = _mix(_hash(_seed_key(seed), _SLOT) + slot.astype(np.uint64))
    bits = _hash(key, _SLOT)
    category = slot % len(CATEGORIES)
    spread = np.exp(_LIFE_SIGMA * _normal(_hash(key, _SLOT, 1)))
    life = np.clip(_on_grid(_MEDIAN_LIFE_US[category] * spread, _GRID_US), *_LIFE_RANGE_US)
    lag = _on_grid(_log_uniform(_field(bits, 0), _LAG_RANGE_US), _GRID_US)
    period = life + lag
    phase = (_uniform(_hash(key, _SLOT, 2)) * (period // _GRID_US)).astype(np.int64) * _GRID_US
    news_every = np.minimum(_log_uniform(_field(bits, 1), _NEWS_RANGE_US), life / 4)
    news_every = _on_grid(news_every, _MINUTE_US)
    news_phase = (_field(bits, 2) * (news_every // _MINUTE_US)).astype(np.int64) * _MINUTE_US
    return {
        "key": key, "category": category, "template": (_field(bits, 3) < 0.5).astype(np.int64),
        "life": life, "period": period, "phase": phase, "news_every": news_every,
        "news_phase": news_phase,
    }


def current(seed: int, slot: Any, at_us: int | Any) -> Any:
    """The generation each slot of `slot` holds at `at_us` (microseconds since 1970)."""
    params = _slots(seed, slot)
    return (at_us - _EPOCH_US - params["phase"]) // params["period"]


def listing(seed: int, slot: Any, at_us: int) -> Cohort:
    """The market each slot of `slot` holds at `at_us`: open, or closed and waiting."""
    slot = np.asarray(slot, np.int64)
    params = _slots(seed, slot)
    return _cohort(seed, params, slot, (at_us - _EPOCH_US - params["phase"]) // params["period"])


def cohort(seed: int, slot: Any, generation: Any) -> Cohort:
    """The markets `(slot, generation)` of the world of `seed`, with everything they drew."""
    slot = np.asarray(slot, np.int64)
    return _cohort(seed, _slots(seed, slot), slot, np.asarray(generation, np.int64))


def _cohort(seed: int, params: dict[str, Any], slot: Any, generation: Any) -> Cohort:
    listed = _EPOCH_US + params["phase"] + generation * params["period"]
    closes = listed + params["life"]
    key = _mix(params["key"] ^ _hash(generation.astype(np.uint64), _MARKET))
    surprise_var = _SURPRISE[params["category"]]
    latent = _normal(_hash(key, _LATENT)) * _CHANCE_SPREAD * np.sqrt(1.0 + surprise_var)
    path_end = _normal(_hash(key, _PATH_END))
    surprise = _normal(_hash(key, _LATENT, 1)) * np.sqrt(surprise_var)
    traits = _hash(key, _TRAITS)
    liquidity = (traits & _U(_LEVELS - 1)).astype(np.int64)
    volume = ((traits >> _U(12)) & _U(_LEVELS - 1)).astype(np.int64)
    return Cohort(
        seed=seed,
        slot=slot,
        generation=generation,
        key=key,
        category=params["category"],
        template=params["template"],
        listed_us=listed,
        closes_us=closes,
        resolves_us=listed + params["period"],
        news_every_us=params["news_every"],
        news_phase_us=params["news_phase"],
        latent=latent,
        path_end=path_end,
        outcome=(latent + path_end + surprise > 0).astype(np.int64),
        leaning=(latent + path_end > 0).astype(np.int64),
        liquidity=_amounts()[0][liquidity],
        volume=_amounts()[1][volume],
        liquidity_level=liquidity,
        volume_level=volume,
        unclear=(_field(traits, 2) < _UNCLEAR).astype(np.int64),
        subjective=(_field(traits, 3) < _SUBJECTIVE).astype(np.int64),
        unknowns=np.searchsorted(_UNKNOWN_CUMULATIVE, _field(traits, 4), side="right"),
    )


def chance(markets: Cohort) -> Any:
    """Each market's hidden chance of YES, 0-1: the probability its outcome is drawn with."""
    return _phi(markets.latent / np.sqrt(1.0 + _SURPRISE[markets.category]))


def resolved_between(seed: int, slots: int, since_us: int, until_us: int) -> tuple[Any, Any]:
    """`(slot, generation)` of every market of the first `slots` slots that resolved after
    `since_us` and at or before `until_us`, slot by slot, oldest first."""
    slot = np.arange(slots, dtype=np.int64)
    first = current(seed, slot, since_us)  # resolves at the start of `current + 1`
    last = current(seed, slot, until_us) - 1
    count = np.maximum(last - first + 1, 0)
    owner = np.repeat(np.arange(slots), count)
    starts = np.cumsum(count) - count
    generation = first[owner] + (np.arange(len(owner)) - starts[owner])
    return slot[owner], generation


# --- what a market shows at a time -------------------------------------------------------------


def _path(markets: Cohort, step: Any) -> Any:
    """`W` at `step / 2**LEVELS` of each market's life: a Brownian bridge descended from
    `W(0) = 0` and `W(1) = path_end`, one draw per level, the same draws for every step."""
    low = np.zeros(len(step), np.int64)
    high = np.full(len(step), _STEPS, np.int64)
    w_low = np.zeros(len(step))
    w_high = markets.path_end.astype(np.float64)
    node = np.ones(len(step), np.int64)
    for level in range(LEVELS):
        middle = (low + high) >> 1
        spread = np.sqrt((_STEPS >> level) / (4.0 * _STEPS))
        w_middle = (w_low + w_high) * 0.5 + spread * _normal(_hash(markets.key, _PATH, node))
        right = step >= middle
        low = np.where(right, middle, low)
        w_low = np.where(right, w_middle, w_low)
        high = np.where(right, high, middle)
        w_high = np.where(right, w_high, w_middle)
        node = node * 2 + right
    return np.where(step == low, w_low, w_high)


def _noise(markets: Cohort, at_us: Any) -> Any:
    """The crowd's wander at `at_us`: standard normal knots every `_NOISE_KNOT_US`, joined
    smoothly."""
    knot = (at_us - _EPOCH_US) // _NOISE_KNOT_US
    fraction = ((at_us - _EPOCH_US) - knot * _NOISE_KNOT_US) / _NOISE_KNOT_US
    ease = fraction * fraction * (3.0 - 2.0 * fraction)
    before = _normal(_hash(markets.key, _NOISE_KNOTS, knot))
    after = _normal(_hash(markets.key, _NOISE_KNOTS, knot + 1))
    return before + (after - before) * ease


def yes_price(markets: Cohort, at_us: int | Any) -> Any:
    """Each market's YES price at `at_us`, in points (tenths, 1-99; 100 or 0 once resolved;
    frozen at its close in between). Before its listing a market shows its first price."""
    at = np.broadcast_to(np.asarray(at_us, np.int64), (len(markets),))
    life = markets.closes_us - markets.listed_us
    seen = np.clip(at, markets.listed_us, markets.closes_us)
    step = (seen - markets.listed_us) * _STEPS // life
    remaining = 1.0 - step / _STEPS + _SURPRISE[markets.category]
    latent = (markets.latent + _path(markets, step)) / np.sqrt(remaining)
    chance = _phi(_TILT * latent + _NOISE * _noise(markets, seen))
    price = np.clip(np.rint(chance * 1000.0) / 10.0, *_PRICE_RANGE)
    return np.where(at >= markets.resolves_us, markets.outcome * 100.0, price)


def market_id(seed: int, slot: int, generation: int) -> str:
    """The id of market `(slot, generation)` of the world of `seed`."""
    return f"syn-s{seed}-{slot:06d}-g{generation}"


def parse_id(text: str) -> tuple[int, int, int] | None:
    """`(seed, slot, generation)` of a world's market id, or None for any other id."""
    match = _ID.fullmatch(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def _result_news(markets: Cohort, at: Any) -> tuple[Any, ...] | None:
    """The result's news about the markets that closed and wait for it: an authoritative,
    strength-5 item towards the outcome every `_RESULT_EVERY_US` from the close, those of the
    window before `at` (and before the result itself): `(owner, stamp, kind, direction,
    strength, conflicts)`, or None when no market waits."""
    waiting = np.flatnonzero((at >= markets.closes_us) & (at < markets.resolves_us))
    if not len(waiting):
        return None
    since = at[waiting] - markets.closes_us[waiting]
    last = since // _RESULT_EVERY_US
    first = np.maximum((since - _WINDOW_US) // _RESULT_EVERY_US + 1, 0)
    count = last - first + 1
    owner = np.repeat(waiting, count)
    starts = np.cumsum(count) - count
    index = np.repeat(first, count) + (np.arange(len(owner)) - np.repeat(starts, count))
    stamp = markets.closes_us[owner] + index * _RESULT_EVERY_US
    ones = np.ones(len(owner), np.int64)
    return owner, stamp, ones * 0, 1 - markets.outcome[owner], ones * 5, ones * 0


def market_ids(markets: Cohort) -> Any:
    """The markets' ids, as a column of text."""
    return np.array(
        list(map(f"syn-s{markets.seed}-%06d-g%d".__mod__,
                 zip(markets.slot.tolist(), markets.generation.tolist(), strict=True))),
        object,
    )


def market_lines(
    markets: Cohort, at_us: int | Any, *, ids: Any = None, prices: Any = None
) -> bytes:
    """The markets as they stand at `at_us` (one time, or one per market), as wire lines: open
    until `closes_at`, then waiting, then resolved with their outcome. `ids` and `prices` (their
    YES prices at that time) are computed unless given."""
    if not len(markets):
        return b""
    at = np.broadcast_to(np.asarray(at_us, np.int64), (len(markets),))
    price = yes_price(markets, at) if prices is None else prices
    resolved = at >= markets.resolves_us
    number = (markets.slot * 7 + markets.generation * 13) % 1000
    _, _, liquidity, volume = _amounts()
    state = np.where(resolved, markets.outcome + 1, 0)
    parts = np.empty((len(markets), 9), object)
    parts[:, 0] = '{"id":"'
    parts[:, 1] = market_ids(markets) if ids is None else ids
    parts[:, 2] = _questions()[(markets.category * 2 + markets.template) * 1000 + number]
    parts[:, 3] = CATEGORY_TEXT[markets.category]
    parts[:, 4] = TENTHS[np.rint(price * 10).astype(np.int64)]
    parts[:, 5] = liquidity[markets.liquidity_level]
    parts[:, 6] = volume[markets.volume_level]
    parts[:, 7] = times(markets.closes_us, ',"closes_at":"', '","resolution_criteria":"'
                        + CRITERIA + '"')
    parts[:, 8] = _line_ends()[
        ((markets.unclear * 2 + markets.subjective) * 4 + markets.unknowns) * 3 + state]
    return "".join(parts.ravel().tolist()).encode()


def signal_lines(
    markets: Cohort, at_us: int | Any, news_quality: float, *, ids: Any = None
) -> bytes:
    """The news about the markets that a source shows at `at_us` (one time, or one per
    market): the items of the last `NEWS_WINDOW_H` hours before it (news until the close, then
    the result's), market by market, oldest first. `ids` are computed unless given."""
    if not len(markets):
        return b""
    at = np.broadcast_to(np.asarray(at_us, np.int64), (len(markets),))
    # Times from the market's first news event; event k is at k * every.
    since = at - _WINDOW_US - markets.listed_us - markets.news_phase_us
    until = np.minimum(at, markets.closes_us - 1) - markets.listed_us - markets.news_phase_us
    every = markets.news_every_us
    last = np.where(until >= 0, until // every, -1)
    first = np.maximum((since - _BURST_US) // every + 1, 0)
    count = np.maximum(last - first + 1, 0)
    market = np.repeat(np.arange(len(markets)), count)
    starts = np.cumsum(count) - count
    event = first[market] + (np.arange(len(market)) - starts[market])
    bits = _hash(markets.key[market], _NEWS, event)
    size = np.minimum((_field(bits, 0) * _BURST).astype(np.int64), _BURST - 1) + 1
    informative = _field(bits, 1) < news_quality
    noise = np.minimum((_field(bits, 2) * 3).astype(np.int64), 2)
    heading = np.where(informative, 1 - markets.leaning[market], noise)
    # The items of every event, then those inside the window.
    of = np.repeat(np.arange(len(market)), size)
    item = np.arange(len(of)) - (np.cumsum(size) - size)[of]
    offset = event[of] * every[market[of]] + item * _ITEM_GAP_US
    shown = (offset <= until[market[of]]) & (offset > since[market[of]])
    of, item, offset = of[shown], item[shown], offset[shown]
    owner = market[of]
    stamp = markets.listed_us[owner] + markets.news_phase_us[owner] + offset
    bits = _hash(markets.key[owner], _NEWS_ITEMS, event[of] * _BURST + item)
    kind = np.searchsorted(_TYPE_CUMULATIVE, _field(bits, 0) * _TYPE_CUMULATIVE[-1],
                           side="right")
    direction = heading[of]
    strength = np.minimum((_field(bits, 1) * 5).astype(np.int64), 4) + 1
    conflicts = (_field(bits, 2) < _CONFLICTING).astype(np.int64)
    result = _result_news(markets, at)
    if result is not None:
        owner, stamp, kind, direction, strength, conflicts = (
            np.concatenate(pair) for pair in zip(
                (owner, stamp, kind, direction, strength, conflicts), result, strict=True)
        )
        order = np.argsort(owner, kind="stable")
        owner, stamp, kind, direction, strength, conflicts = (
            column[order] for column in (owner, stamp, kind, direction, strength, conflicts))
    if not len(owner):
        return b""
    parts = np.empty((len(owner), 5), object)
    parts[:, 0] = '{"market_id":"'
    parts[:, 1] = (market_ids(markets) if ids is None else ids)[owner]
    parts[:, 2] = '","type":"'
    parts[:, 3] = signal_middle(kind, direction, strength, conflicts)
    parts[:, 4] = times(stamp, "", '","source":"synthetic"}\n')
    return "".join(parts.ravel().tolist()).encode()

