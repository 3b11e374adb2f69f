"""The columnar kernel: the built-in evaluator over numpy columns, a whole chunk at once.

It computes exactly what `pomabotd.evaluate_market` computes, bit for bit, for every field of
every evaluation (a Hypothesis differential test holds it to that). Exactness comes from doing
the same float operations in the same order as the scalar code, one ufunc per Python operation:

- The belief fold sorts signals by market, then timestamp (ties keep input order), and takes
  one vectorised step per signal depth over all markets that have a signal at that depth, so
  each market's signals are still applied one after another.
- Timestamps are whole microseconds since the epoch (int64, read from msgspec's msgpack
  encoding of the datetimes), so comparisons and differences are exact; a difference becomes
  seconds with one correctly rounded division, as `timedelta.total_seconds` does.
- `min`, `max` and clamping are written as the scalar comparisons (`np.where(limit < shift,
  ...)`), never `np.minimum`, whose tie and sign-of-zero rules differ.
- Rounding to 9 digits reproduces Python's correctly rounded `round(x, 9)` (`round_points`);
  `np.round` scales, rounds and divides, which differs in the last bit.
- The gate is `gate.GATE`: each check's vectorised test, first failure wins.

Inputs outside the range where these arguments hold (time differences of 2**53 microseconds
and more, about 285 years) raise `KernelInputError`, and the caller evaluates them on the
scalar path instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

import msgspec
import numpy as np

from pomabotd.domain.belief import (
    MARKET_PRIOR_HALF_WIDTH,
    PRIOR_CONFIDENCE,
    PRIOR_HIGH,
    PRIOR_LOW,
    Prior,
)
from pomabotd.domain.gate import CHECK_NAMES, GATE, POINT_DIGITS, Row, explain, side_of
from pomabotd.domain.models import IMPACT_CAP, SIGNAL_TYPES, Evaluation, Market, Signal
from pomabotd.engine.kernels.columns import (
    F8,
    I8,
    Briefs,
    MarketColumns,
    SignalColumns,
    market_columns,
    market_rows,
    micros,
    signal_columns,
)
from pomabotd.errors import KernelInputError

__all__ = [
    "PASSED",
    "Verdicts",
    "belief_ranges",
    "evaluate_batch",
    "evaluate_columns",
    "evaluations",
    "round_points",
]

#: `Verdicts.failed` of a market that passed every check; any other value indexes `GATE`.
PASSED: Final = len(GATE)
_MARKET_OPEN: Final = CHECK_NAMES.index("market_open")
#: Differences of at least this many microseconds no longer convert to float exactly.
_EXACT_MICROS: Final = 2**53
_SCALE: Final = 10.0**POINT_DIGITS
#: Half-way cases closer than this (in units of 1e-9 points) are rounded by Python itself, and
#: so are values this large or larger, where scaling by 1e9 could err by as much.
_HALF_DOUBT: Final = 2.0**-10
_EXACT_POINTS: Final = 1000.0
_DAY_SECONDS: Final = 86400.0
_CAP: Final = np.array([IMPACT_CAP[kind] for kind in SIGNAL_TYPES])
_AUTHORITATIVE: Final = SIGNAL_TYPES.index("authoritative")
_PROCEDURAL: Final = SIGNAL_TYPES.index("procedural")
_SPECULATIVE: Final = SIGNAL_TYPES.index("speculative")


class Verdicts(msgspec.Struct, frozen=True, kw_only=True):
    """The batch evaluator's output columns: belief, counts, edges and the gate's verdict
    (`failed` indexes `GATE`, `PASSED` when every check passed)."""

    low: Any
    high: Any
    confidence: Any
    applied: Any
    rejected: Any
    edge: Any
    expected: Any
    failed: Any


class _GateColumns:
    """The `gate.Columns` the vectorised checks read."""

    __slots__ = (
        "as_of",
        "authority_is_clear",
        "closes_at",
        "confidence",
        "edge",
        "high",
        "liquidity",
        "low",
        "min_edge",
        "outcome_is_objective",
        "price",
        "resolved",
        "width",
    )

    def __init__(self, markets: MarketColumns, low: F8, high: F8, confidence: F8, edge: F8,
                 as_of: int) -> None:
        self.resolved = markets.resolved
        self.closes_at = markets.closes_at
        self.as_of = as_of
        self.authority_is_clear = markets.authority_is_clear
        self.outcome_is_objective = markets.outcome_is_objective
        self.liquidity = markets.liquidity
        self.price = markets.price
        self.low = low
        self.high = high
        self.width = round_points(high - low)
        self.confidence = confidence
        self.edge = edge
        self.min_edge = markets.min_edge


def round_points(values: F8) -> F8:
    """`round(x, 9)` for each element, to the last bit.

    Python rounds the exact binary value to 9 decimals and reads the decimal back; scaling by
    1e9 first costs one rounding error, far below a half-unit except when the scaled value sits
    within noise of a half-way point, and those rare elements are rounded by Python itself.
    Dividing the integer by 1e9 then gives the double nearest that same decimal.
    """
    large = ~(np.abs(values) < _EXACT_POINTS)
    scaled = np.where(large, 0.0, values) * _SCALE
    whole = np.rint(scaled)
    doubt = large | (np.abs(np.abs(scaled - whole) - 0.5) < _HALF_DOUBT)
    result = whole / _SCALE
    if doubt.any():
        rows = np.flatnonzero(doubt)
        result[rows] = [round(value, POINT_DIGITS) for value in values[rows].tolist()]
    return result


def evaluate_columns(
    markets: MarketColumns, signals: SignalColumns, as_of: datetime, prior: Prior = "fixed"
) -> Verdicts:
    """The batch evaluator: columns in, columns out (see the module's docstring)."""
    now = int(micros([as_of])[0])
    low, high = _prior(markets.price, prior)
    fold = _Fold(len(markets.records), signals, now)
    fold.run(low, high)
    confidence = fold.confidence(markets.unknowns)
    edge, expected = _edges(markets.price, low, high)
    columns = _GateColumns(markets, low, high, confidence, edge, now)
    failed = np.full(len(markets.records), PASSED, np.int8)
    for code in range(len(GATE) - 1, -1, -1):
        failed[~np.asarray(GATE[code].passes_all(columns), np.bool_)] = code
    return Verdicts(
        low=low,
        high=high,
        confidence=confidence,
        applied=fold.applied,
        rejected=fold.rejected,
        edge=edge,
        expected=expected,
        failed=failed,
    )


def belief_ranges(
    price: F8, signals: SignalColumns, as_of: datetime, prior: Prior = "fixed"
) -> tuple[F8, F8]:
    """Each market's belief range after its signals (the fold alone, without the gate)."""
    low, high = _prior(price, prior)
    _Fold(len(price), signals, int(micros([as_of])[0])).run(low, high)
    return low, high


def evaluations(
    markets: MarketColumns, verdicts: Verdicts, as_of: datetime, rows: Any = None,
    elapsed_us: float = 0.0,
) -> list[Evaluation]:
    """The `Evaluation` of each market in `rows` (all of them by default), reason included,
    built from the verdicts exactly as the scalar evaluator builds it."""
    chosen: list[int] = list(range(len(markets.records))) if rows is None else list(rows)
    if not chosen:
        return []
    picked = np.asarray(chosen, np.int64)
    lows = verdicts.low[picked].tolist()
    highs = verdicts.high[picked].tolist()
    confidences = verdicts.confidence[picked].tolist()
    edges = verdicts.edge[picked].tolist()
    expecteds = verdicts.expected[picked].tolist()
    applieds = verdicts.applied[picked].tolist()
    rejecteds = verdicts.rejected[picked].tolist()
    faileds = verdicts.failed[picked].tolist()
    records = markets.records
    # A market failing `market_open` is described by its close and outcome, which only its
    # full record holds; every other sentence reads what a brief holds.
    brief = records.brief if isinstance(records, Briefs) else records.__getitem__
    built: list[Evaluation] = []
    append = built.append
    for at, row in enumerate(chosen):
        code = faileds[at]
        market = records[row] if code == _MARKET_OPEN else brief(row)
        failed = None if code == PASSED else CHECK_NAMES[code]
        state = Row(market, as_of, lows[at], highs[at], confidences[at], edges[at])
        side: Literal["YES", "NO", "NONE"] = (
            "NONE" if failed is not None else side_of(market.price, lows[at])
        )
        append(
            Evaluation(
                market_id=market.id,
                category=market.category,
                price=market.price,
                belief_low=lows[at],
                belief_high=highs[at],
                confidence=confidences[at],
                side=side,
                edge=edges[at],
                expected_edge=expecteds[at],
                failed_check=failed,
                reason=explain(state, failed),
                signals_applied=applieds[at],
                signals_rejected=rejecteds[at],
                elapsed_us=elapsed_us,
            )
        )
    return built


def evaluate_batch(
    markets: Sequence[Market],
    signals: Sequence[Signal],
    as_of: datetime,
    *,
    prior: Prior = "fixed",
) -> list[Evaluation]:
    """`evaluate_market` for every market of `markets` (distinct ids) with `signals`, in one
    columnar pass; signals about other markets are ignored."""
    rows = {market.id: row for row, market in enumerate(markets)}
    if len(rows) != len(markets):
        raise KernelInputError("market ids repeat; the kernel evaluates distinct markets")
    columns = market_columns(markets)
    signal_rows = market_rows(signals, rows)
    verdicts = evaluate_columns(columns, signal_columns(signals, signal_rows), as_of, prior)
    return evaluations(columns, verdicts, as_of)


def _prior(price: F8, prior: Prior) -> tuple[F8, F8]:
    if prior == "fixed":
        return np.full(len(price), PRIOR_LOW), np.full(len(price), PRIOR_HIGH)
    low = price - MARKET_PRIOR_HALF_WIDTH
    high = price + MARKET_PRIOR_HALF_WIDTH
    return np.where(low > 0.0, low, 0.0), np.where(high < 100.0, high, 100.0)


#: How a signal moves each end of the range, by `direction * 2 + conflicts` (directions coded
#: as in `columns.DIRECTIONS`): the end gains
#: `a * shift + b * widen`, which is exactly the scalar code's amount (x - y is x + (-y), a
#: product by 0 or 1 is exact, and adding +0.0 leaves a nonzero or +0.0 end unchanged).
_LOW_SHIFT: Final = np.array([1.0, 0.0, -1.0, -1.0, 0.0, 0.0])
_LOW_WIDEN: Final = np.array([0.0, -1.0, 0.0, -1.0, 0.0, -1.0])
_HIGH_SHIFT: Final = np.array([1.0, 1.0, -1.0, 0.0, 0.0, 0.0])
_HIGH_WIDEN: Final = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])


def _by_market_then_time(market: I8, stamp: I8) -> I8:
    """The order of signals by market, then timestamp, ties in input order (a stable sort).

    One stable sort of a combined key when the timestamps span few enough microseconds to
    share an int64 with the market, else a two-key lexsort (several times slower).
    """
    if not len(market):
        return np.zeros(0, np.int64)
    earliest = int(stamp.min())
    span = int(stamp.max()) - earliest
    rows = int(market.max()) + 1
    if span < (1 << 62) // rows:
        return np.argsort(market * (span + 1) + (stamp - earliest), kind="stable")
    return np.lexsort((stamp, market))


class _Fold:
    """The belief fold of every market at once, one step per signal depth.

    Markets are ordered by how many signals they have, most first, so the markets having a
    k-th signal are a prefix of those having a (k-1)-th: every step works on prefix slices of
    the state, in place, and the signals are laid out depth after depth so each step reads
    contiguous slices too. Results are put back in market order at the end.
    """

    def __init__(self, count: int, signals: SignalColumns, now: int) -> None:
        self.count = count
        self.now = now
        own = np.flatnonzero(signals.market >= 0)
        order = own[_by_market_then_time(signals.market[own], signals.timestamp[own])]
        per_market = np.bincount(signals.market[order], minlength=count)
        self.by_count = np.argsort(-per_market, kind="stable")
        first = np.concatenate(([0], np.cumsum(per_market)[:-1]))
        # How many markets have a signal at each depth: those with more signals than it.
        having = np.bincount(per_market)[::-1].cumsum()[::-1]
        self.widths = having[1:].tolist()
        deepest = len(self.widths)
        layout = np.concatenate(
            [order[first[self.by_count[:width]] + depth]
             for depth, width in enumerate(self.widths)]
        ) if deepest else np.zeros(0, np.int64)
        kind = signals.kind[layout]
        how = signals.direction[layout] * 2 + signals.conflicts[layout]
        self.stamp = signals.timestamp[layout]
        self.future = self.stamp > now
        self.speculative = kind == _SPECULATIVE
        self.impact = _CAP[kind] * signals.strength[layout] / 5.0
        self.low_shift = _LOW_SHIFT[how]
        self.low_widen = _LOW_WIDEN[how]
        self.high_shift = _HIGH_SHIFT[how]
        self.high_widen = _HIGH_WIDEN[how]
        self.authoritative_signal = kind == _AUTHORITATIVE
        self.procedural_signal = kind == _PROCEDURAL
        self.conflicts = signals.conflicts[layout]
        self.applied = np.zeros(count, np.int64)
        self.rejected = np.zeros(count, np.int64)
        self._authoritative = np.zeros(count, np.int64)
        self._procedural = np.zeros(count, np.int64)
        self._conflict = np.zeros(count, np.bool_)
        self._last = np.zeros(count, np.int64)
        self._previous = np.zeros(count, np.int64)

    def run(self, low: F8, high: F8) -> None:
        """Apply every signal to `low` and `high` (in market order, updated in place)."""
        if not self.widths:
            return
        by_count = self.by_count
        lows = low[by_count]
        highs = high[by_count]
        applied = np.zeros(self.count, np.int64)
        rejected = np.zeros(self.count, np.int64)
        authoritative = np.zeros(self.count, np.int64)
        procedural = np.zeros(self.count, np.int64)
        conflict = np.zeros(self.count, np.bool_)
        last = np.zeros(self.count, np.int64)
        previous = np.zeros(self.count, np.int64)
        at = 0
        for width in self.widths:
            here = slice(at, at + width)
            at += width
            lo = lows[:width]
            hi = highs[:width]
            done = applied[:width]
            taken = ~(self.future[here] | ((done == 0) & self.speculative[here]))
            span = hi - lo
            shift = self.impact[here]
            limit = 0.6 * span
            shift = np.where(limit < shift, limit, shift)
            widen = 0.25 * span
            new_lo = lo + (self.low_shift[here] * shift + self.low_widen[here] * widen)
            new_hi = hi + (self.high_shift[here] * shift + self.high_widen[here] * widen)
            new_lo = np.where(new_lo < 0.0, 0.0, np.where(new_lo > 100.0, 100.0, new_lo))
            new_hi = np.where(new_hi < 0.0, 0.0, np.where(new_hi > 100.0, 100.0, new_hi))
            lows[:width] = np.where(taken, new_lo, lo)
            highs[:width] = np.where(taken, new_hi, hi)
            rejected[:width] += ~taken
            done += taken
            authoritative[:width] += taken & self.authoritative_signal[here]
            procedural[:width] += taken & self.procedural_signal[here]
            conflict[:width] |= taken & self.conflicts[here]
            previous[:width] = np.where(taken, last[:width], previous[:width])
            last[:width] = np.where(taken, self.stamp[here], last[:width])
        low[by_count] = lows
        high[by_count] = highs
        for mine, theirs in (
            (self.applied, applied),
            (self.rejected, rejected),
            (self._authoritative, authoritative),
            (self._procedural, procedural),
            (self._conflict, conflict),
            (self._last, last),
            (self._previous, previous),
        ):
            mine[by_count] = theirs

    def confidence(self, unknowns: F8) -> F8:
        """`recompute_confidence` after the last applied signal, then `decay_confidence` to
        `as_of`; the prior's confidence where no signal applied."""
        applied = self.applied
        some = applied > 0
        gap = np.where(applied > 1, self._last - self._previous, 0)
        age = np.where(some, self.now - self._last, 0)
        if (np.abs(gap) >= _EXACT_MICROS).any() or (age >= _EXACT_MICROS).any():
            raise KernelInputError(
                "signals 285 years or more apart: their gaps in days are not exact here"
            )
        days = np.where(applied > 1, np.abs(gap.astype(np.float64) / 1e6) / _DAY_SECONDS, 0.0)
        raw = PRIOR_CONFIDENCE + 10.0 * self._authoritative
        raw = raw + 5.0 * self._procedural
        raw = raw - 7.0 * unknowns
        raw = raw - np.where(self._conflict, 10.0, 0.0)
        raw = raw - 0.5 * days
        confidence = _clamp_confidence(raw)
        decayed = _clamp_confidence(
            confidence - 0.5 * (age.astype(np.float64) / 1e6 / _DAY_SECONDS)
        )
        return np.where(some, decayed, PRIOR_CONFIDENCE)


def _clamp_confidence(values: F8) -> F8:
    return np.where(values < 30.0, 30.0, np.where(values > 95.0, 95.0, values))


def _edges(price: F8, low: F8, high: F8) -> tuple[F8, F8]:
    """`gate.edges` over columns."""
    middle = (low + high) / 2.0
    yes = price < low
    no = ~yes & (price > high)
    edge = np.where(yes, low - price, np.where(no, price - high, 0.0))
    expected = np.where(yes, middle - price, np.where(no, price - middle, 0.0))
    return round_points(edge), round_points(expected)
