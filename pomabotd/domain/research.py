"""Research figures over resolved markets, and the halt rules, as pure functions.

Two kinds of record feed them, both plain data so that a replay and a running daemon can share
the same code:

- `Graded`: one evaluation of a market that has since resolved, with its outcome. The outcome
  is joined here, after the evaluation, so the evaluator can never have seen it.
- `ClosedPosition`: a paper position together with how it closed, as the `open` and `close`
  lines of `positions.jsonl` describe it (`closed_positions` pairs them).

Definitions (docs/research.md, "Reading the numbers", repeats them for users):

- A belief range *covers* an outcome when it does not rule it out: YES is covered when
  `belief_high >= 50`, NO when `belief_low <= 50`. A range that contains 50 covers both.
- Its *implied coverage* is the probability of being covered if YES happens with probability
  equal to the range's midpoint: 1 for a range containing 50, `midpoint/100` for a range above
  50, `1 - midpoint/100` for a range below. Observed coverage of a calibrated belief should
  match the mean implied coverage; the coverage halt rule compares the two.
- Shares (brier, coverage, hit rate, calibration frequencies) are 0-1; edges are points; money is
  USD; `pnl_per_unit` is USD per USD staked.
- The *crowd's* figures (`crowd_brier`, `crowd_calibration`) score the market's own price at
  the evaluation time as the forecast, the baseline a belief has to beat.
- A calibration bucket's observed share comes with its 95% Wilson interval
  (`observed_low`-`observed_high`): a bucket of 9 markets says far less than one of 4,557.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Final, Literal, NamedTuple

from msgspec import Struct, structs

from pomabotd.domain.models import CATEGORIES, CloseEvent, Evaluation, Position, Side
from pomabotd.domain.portfolio import ExitReason, HistoryError, held_price

__all__ = [
    "CALIBRATION_WIDTH",
    "CONFIDENCE_BUCKETS",
    "BucketRate",
    "CalibrationBucket",
    "CategoryScorecard",
    "ClosedPosition",
    "ConfidenceBucket",
    "Figures",
    "Graded",
    "HaltFigures",
    "HaltRule",
    "HaltRules",
    "HaltVerdict",
    "Scorecard",
    "brier_score",
    "closed_positions",
    "covers",
    "describe_halt_figures",
    "halt_figures",
    "halt_verdict",
    "implied_coverage",
    "is_tradeable",
    "scorecard",
    "unit_pnl",
    "wilson_interval",
]

#: Width, in points of the belief midpoint, of each calibration bucket: 0-10, ..., 90-100.
CALIBRATION_WIDTH: Final = 10.0
#: Confidence buckets `[low, high)`, the last one closed: below the gate's 65 minimum, two of
#: them; at or above it, the two a position can fall in. A confidence under 30 (possible only
#: from a plugin) counts in the first bucket.
CONFIDENCE_BUCKETS: Final = ((30.0, 50.0), (50.0, 65.0), (65.0, 80.0), (80.0, 95.0))

_CONFIDENCE_BOUNDS: Final = tuple(high for _, high in CONFIDENCE_BUCKETS[:-1])
#: The normal quantile of a two-sided 95% interval.
_Z95: Final = 1.959963984540054
_EVEN: Final = 50.0
_OTHER_SIDE: Final[dict[str, Side]] = {"YES": "NO", "NO": "YES"}


class Graded(Struct, frozen=True, kw_only=True):
    """An evaluation of a market that has since resolved, joined with its outcome afterwards."""

    evaluation: Evaluation
    outcome: Side


class ClosedPosition(Struct, frozen=True, kw_only=True):
    """A paper position with how it closed; `outcome` is known only for a `resolved` exit.

    Prices are the held side's, in points, as in `positions.jsonl`.
    """

    position_id: str
    market_id: str
    category: str
    side: Side
    entry_price: float
    size_usd: float
    edge: float
    belief_low: float
    belief_high: float
    confidence: float
    exit_price: float
    exit_reason: ExitReason
    pnl_usd: float
    outcome: Side | None


class Figures(Struct, frozen=True, kw_only=True):
    """The figures of one set of markets (all of them, or one category).

    Over every graded evaluation: `markets`, `brier`, `coverage`, `expected_coverage`. Over the
    tradeable ones: `tradeable`, `hit_rate`, `mean_edge`, `pnl_per_unit`. Over the positions:
    `selected`, `realized_pnl_usd`, `worst_position`. A figure of an empty set is None.
    """

    markets: int
    brier: float | None
    coverage: float | None
    expected_coverage: float | None
    tradeable: int
    hit_rate: float | None
    mean_edge: float | None
    pnl_per_unit: float | None
    selected: int
    realized_pnl_usd: float
    worst_position: ClosedPosition | None


class CalibrationBucket(Struct, frozen=True, kw_only=True):
    """Markets whose forecast (a belief midpoint, or the crowd's price) lies in `[low, high)`
    points (the last bucket is closed): their mean forecast as a probability (`predicted`), the
    share that resolved YES (`observed`) and its 95% Wilson interval."""

    low: float
    high: float
    count: int
    predicted: float | None
    observed: float | None
    observed_low: float | None = None
    observed_high: float | None = None


class ConfidenceBucket(Struct, frozen=True, kw_only=True):
    """Markets whose confidence lies in `[low, high)` (the last bucket is closed)."""

    low: float
    high: float
    count: int
    brier: float | None
    coverage: float | None
    expected_coverage: float | None
    tradeable: int
    hit_rate: float | None


class CategoryScorecard(Figures, frozen=True, kw_only=True):
    """Every figure of one set of markets and the positions taken on them, breakdowns by
    calibration and confidence bucket included.

    `return_on_equity_pct` is the set's realized P&L against the whole portfolio's starting
    value, so the categories' figures add up to the portfolio's.
    """

    return_on_equity_pct: float
    calibration: tuple[CalibrationBucket, ...]
    confidence_buckets: tuple[ConfidenceBucket, ...]
    crowd_brier: float | None = None
    crowd_calibration: tuple[CalibrationBucket, ...] = ()


class Scorecard(CategoryScorecard, frozen=True, kw_only=True):
    """Every figure of a set of resolved markets and the positions taken on them, and the same
    for each category."""

    by_category: dict[str, CategoryScorecard]


def is_tradeable(evaluation: Evaluation) -> bool:
    """Passed every check without error, and so has a side."""
    return (
        evaluation.error is None
        and evaluation.failed_check is None
        and evaluation.side != "NONE"
    )


def covers(low: float, high: float, outcome: Side) -> bool:
    """Whether the belief range `[low, high]` leaves room for `outcome` (see the module doc)."""
    return high >= _EVEN if outcome == "YES" else low <= _EVEN


def implied_coverage(low: float, high: float) -> float:
    """The chance the range covers the outcome if YES happens with the midpoint's probability."""
    if low <= _EVEN <= high:
        return 1.0
    midpoint = (low + high) / 200.0
    return midpoint if low > _EVEN else 1.0 - midpoint


def unit_pnl(side: Side, yes_price: float, outcome: Side) -> float:
    """Return per unit staked on `side` at the YES price, settled at 100 or 0.

    An entry at 0 cannot be staked (the gate's exit plan refuses it): its return is 0.
    """
    entry = held_price(side, yes_price)
    if entry <= 0.0:
        return 0.0
    settled = 100.0 if outcome == side else 0.0
    return (settled - entry) / entry


def wilson_interval(successes: int, trials: int, z: float = _Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a share `successes / trials` (95% by default), or None for
    no trials. Unlike the share plus or minus its standard error, it stays within 0-1 and is
    honest for small counts and shares near 0 or 1."""
    if trials <= 0:
        return None
    share = successes / trials
    z2 = z * z
    centre = (share + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials)) / (
        1 + z2 / trials)
    # The share lies inside in exact arithmetic; keep it so when rounding says otherwise.
    return max(0.0, min(share, centre - half)), min(1.0, max(share, centre + half))


def brier_score(graded: Sequence[Graded]) -> float | None:
    """Mean of (belief midpoint/100 - outcome)^2, outcome 1 for YES and 0 for NO."""
    return _mean([_row(g).brier for g in graded])


def scorecard(
    graded: Sequence[Graded], closed: Sequence[ClosedPosition], portfolio_value: float
) -> Scorecard:
    """All figures of `graded` (evaluations without error) and `closed`, and per category.

    `portfolio_value` is the starting equity the return on equity is measured against.
    """
    rows = [_row(g) for g in graded]
    rows_of: dict[str, list[_Row]] = {}
    for row in rows:
        rows_of.setdefault(row.category, []).append(row)
    closed_of: dict[str, list[ClosedPosition]] = {}
    for close in closed:
        closed_of.setdefault(close.category, []).append(close)
    by_category = {
        category: _scores(rows_of.get(category, []), closed_of.get(category, []),
                          portfolio_value)
        for category in _category_order(set(rows_of) | set(closed_of))
    }
    overall = _scores(rows, closed, portfolio_value)
    return Scorecard(**structs.asdict(overall), by_category=by_category)


def closed_positions(events: Iterable[Position | CloseEvent]) -> tuple[ClosedPosition, ...]:
    """Pair `positions.jsonl` events into closed positions, in the order they closed.

    Positions still open are left out. Raises HistoryError for a close of a position that was
    never opened, since its category, side and belief are then unknown.
    """
    opened: dict[str, Position] = {}
    closed: list[ClosedPosition] = []
    for event in events:
        if isinstance(event, Position):
            opened[event.position_id] = event
            continue
        position = opened.pop(event.position_id, None)
        if position is None:
            raise HistoryError(f"close of position {event.position_id}, which was never opened")
        outcome: Side | None = None
        if event.exit_reason == "resolved":
            outcome = position.side if event.exit_price >= _EVEN else _OTHER_SIDE[position.side]
        closed.append(
            ClosedPosition(
                position_id=position.position_id,
                market_id=position.market_id,
                category=position.category,
                side=position.side,
                entry_price=position.entry_price,
                size_usd=position.size_usd,
                edge=position.edge,
                belief_low=position.belief_low,
                belief_high=position.belief_high,
                confidence=position.confidence,
                exit_price=event.exit_price,
                exit_reason=event.exit_reason,
                pnl_usd=event.pnl_usd,
                outcome=outcome,
            )
        )
    return tuple(closed)


HaltRule = Literal["coverage_deviation", "confidence_inversion", "invalidation_streak"]


class HaltRules(Struct, frozen=True, kw_only=True):
    """The thresholds of the three halt rules.

    - `coverage_deviation`: over at least `min_resolved` resolved positions, observed coverage
      differs from the mean implied coverage by more than `coverage_tolerance` points.
    - `confidence_inversion`: resolved positions with confidence `>= high_confidence` won a
      smaller share than those below it, each side holding at least `min_per_bucket`.
    - `invalidation_streak`: `invalidation_streak` consecutive closes were `invalidated`.
    """

    coverage_tolerance: float = 15.0
    min_resolved: int = 20
    high_confidence: float = 80.0
    min_per_bucket: int = 10
    invalidation_streak: int = 3


class BucketRate(Struct, frozen=True, kw_only=True):
    """How many resolved positions a confidence bucket holds, and the share of them that won
    (None when empty)."""

    count: int
    hit_rate: float | None


class HaltFigures(Struct, frozen=True, kw_only=True):
    """The figures the halt rules judge, as they stand now, so that they can be watched
    before a rule trips.

    Over the resolved positions (`resolved` of them): `coverage_observed` and
    `coverage_expected` (shares, 0-1) and their distance in points; the positions opened at a
    confidence of at least the rules' `high_confidence` (`high_confidence`) and below it
    (`low_confidence`). `invalidation_streak` is the run of invalidated exits at the end of
    the sequence (0 when the last close was another exit). A figure of nothing is None.
    """

    resolved: int
    coverage_observed: float | None
    coverage_expected: float | None
    coverage_deviation_points: float | None
    high_confidence: BucketRate
    low_confidence: BucketRate
    invalidation_streak: int


class HaltVerdict(Struct, frozen=True, kw_only=True):
    """Whether to stop opening positions; `reason` names the rule and its figures."""

    halted: bool
    rule: HaltRule | None = None
    reason: str | None = None


_DEFAULT_RULES: Final = HaltRules()


def halt_verdict(
    closed: Sequence[ClosedPosition], rules: HaltRules = _DEFAULT_RULES
) -> HaltVerdict:
    """Judge the closes in `closed` (in close order) by the rules, first rule first.

    Only the sequence given is judged: a caller that lets a user resume after a halt passes
    the closes since then, and one that keeps figures across restarts passes them all.
    """
    figures = halt_figures(closed, rules)
    for verdict in (
        _coverage_rule(figures, rules),
        _confidence_rule(figures, rules),
        _invalidation_rule(closed, rules),
    ):
        if verdict is not None:
            return verdict
    return HaltVerdict(halted=False)


def halt_figures(
    closed: Sequence[ClosedPosition], rules: HaltRules = _DEFAULT_RULES
) -> HaltFigures:
    """The figures `halt_verdict` judges `closed` by, with `rules` splitting the confidence
    buckets."""
    resolved = [(c, c.outcome) for c in closed if c.outcome is not None]
    observed = expected = deviation = None
    if resolved:
        observed = sum(covers(c.belief_low, c.belief_high, o) for c, o in resolved) / len(resolved)
        expected = math.fsum(implied_coverage(c.belief_low, c.belief_high) for c, _ in resolved)
        expected /= len(resolved)
        deviation = abs(observed - expected) * 100.0
    threshold = rules.high_confidence
    high = [c.outcome == c.side for c, _ in resolved if c.confidence >= threshold]
    low = [c.outcome == c.side for c, _ in resolved if c.confidence < threshold]
    streak = 0
    for close in reversed(closed):
        if close.exit_reason != "invalidated":
            break
        streak += 1
    return HaltFigures(
        resolved=len(resolved),
        coverage_observed=observed,
        coverage_expected=expected,
        coverage_deviation_points=deviation,
        high_confidence=BucketRate(count=len(high), hit_rate=_share(high)),
        low_confidence=BucketRate(count=len(low), hit_rate=_share(low)),
        invalidation_streak=streak,
    )


def describe_halt_figures(figures: HaltFigures, rules: HaltRules = _DEFAULT_RULES) -> str:
    """The figures in one line, each with the limit its rule holds it to."""
    streak = (
        f"{figures.invalidation_streak} invalidated in a row (limit {rules.invalidation_streak})"
    )
    if figures.coverage_observed is None or figures.coverage_expected is None:
        return f"no resolved position yet; {streak}"
    high, low = figures.high_confidence, figures.low_confidence
    return (
        f"{figures.resolved} resolved, coverage {figures.coverage_observed * 100:.1f}% against "
        f"{figures.coverage_expected * 100:.1f}% expected (limit {rules.coverage_tolerance:g} "
        f"points after {rules.min_resolved}); confidence >= {rules.high_confidence:g} won "
        f"{_percent(high.hit_rate)} of {high.count}, below it {_percent(low.hit_rate)} of "
        f"{low.count} (judged at {rules.min_per_bucket} each); {streak}"
    )


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.1f}%"


def _coverage_rule(figures: HaltFigures, rules: HaltRules) -> HaltVerdict | None:
    observed, expected = figures.coverage_observed, figures.coverage_expected
    deviation = figures.coverage_deviation_points
    if (observed is None or expected is None or deviation is None
            or figures.resolved < rules.min_resolved or deviation <= rules.coverage_tolerance):
        return None
    return HaltVerdict(
        halted=True,
        rule="coverage_deviation",
        reason=(
            f"coverage_deviation: observed range coverage {observed * 100:.1f}% differs from "
            f"the expected {expected * 100:.1f}% by {deviation:.1f} points over "
            f"{figures.resolved} resolved positions (limit {rules.coverage_tolerance:g} points "
            f"after {rules.min_resolved})"
        ),
    )


def _confidence_rule(figures: HaltFigures, rules: HaltRules) -> HaltVerdict | None:
    threshold = rules.high_confidence
    high, low = figures.high_confidence, figures.low_confidence
    if (high.hit_rate is None or low.hit_rate is None
            or min(high.count, low.count) < rules.min_per_bucket
            or high.hit_rate >= low.hit_rate):
        return None
    return HaltVerdict(
        halted=True,
        rule="confidence_inversion",
        reason=(
            f"confidence_inversion: resolved positions with confidence >= {threshold:g} won "
            f"{high.hit_rate * 100:.1f}% of {high.count}, less than the "
            f"{low.hit_rate * 100:.1f}% of {low.count} below {threshold:g}"
        ),
    )


def _invalidation_rule(
    closed: Sequence[ClosedPosition], rules: HaltRules
) -> HaltVerdict | None:
    """Any run of invalidated exits as long as the limit, anywhere in `closed`."""
    run: list[str] = []
    for close in closed:
        if close.exit_reason != "invalidated":
            run.clear()
            continue
        run.append(close.market_id)
        if len(run) >= max(1, rules.invalidation_streak):
            return HaltVerdict(
                halted=True,
                rule="invalidation_streak",
                reason=(
                    f"invalidation_streak: {len(run)} invalidated exits in a row "
                    f"(markets {', '.join(run)}; limit {rules.invalidation_streak})"
                ),
            )
    return None


class _Row(NamedTuple):
    """One graded market's terms, worked out once and then summed by every grouping."""

    category: str
    confidence: float
    midpoint: float
    predicted: float
    yes: bool
    brier: float
    covered: bool
    implied: float
    tradeable: bool
    won: bool
    edge: float
    unit_pnl: float
    price: float
    crowd_brier: float


def _row(graded: Graded) -> _Row:
    e = graded.evaluation
    outcome = graded.outcome
    midpoint = (e.belief_low + e.belief_high) / 2.0
    predicted = midpoint / 100.0
    tradeable = is_tradeable(e)
    side: Side = "YES" if e.side == "YES" else "NO"
    return _Row(
        category=e.category,
        confidence=e.confidence,
        midpoint=midpoint,
        predicted=predicted,
        yes=outcome == "YES",
        brier=_brier_term(predicted, outcome),
        covered=covers(e.belief_low, e.belief_high, outcome),
        implied=implied_coverage(e.belief_low, e.belief_high),
        tradeable=tradeable,
        won=tradeable and e.side == outcome,
        edge=e.edge,
        unit_pnl=unit_pnl(side, e.price, outcome) if tradeable else 0.0,
        price=e.price,
        crowd_brier=_brier_term(e.price / 100.0, outcome),
    )


def _brier_term(predicted: float, outcome: Side) -> float:
    return (predicted - (1.0 if outcome == "YES" else 0.0)) ** 2


def _scores(
    rows: Sequence[_Row], closed: Sequence[ClosedPosition], portfolio_value: float
) -> CategoryScorecard:
    tradeable = [r for r in rows if r.tradeable]
    worst = min(closed, key=lambda c: (c.pnl_usd, c.market_id), default=None)
    realized = round(math.fsum(c.pnl_usd for c in closed), 2)
    return CategoryScorecard(
        markets=len(rows),
        brier=_mean([r.brier for r in rows]),
        coverage=_share([r.covered for r in rows]),
        expected_coverage=_mean([r.implied for r in rows]),
        tradeable=len(tradeable),
        hit_rate=_share([r.won for r in tradeable]),
        mean_edge=_mean([r.edge for r in tradeable]),
        pnl_per_unit=_mean([r.unit_pnl for r in tradeable]),
        selected=len(closed),
        realized_pnl_usd=realized,
        worst_position=worst,
        return_on_equity_pct=realized / portfolio_value * 100.0 if portfolio_value > 0 else 0.0,
        calibration=_calibration([(r.midpoint, r.yes) for r in rows]),
        confidence_buckets=_confidence_buckets(rows),
        crowd_brier=_mean([r.crowd_brier for r in rows]),
        crowd_calibration=_calibration([(r.price, r.yes) for r in rows]),
    )


def _calibration(forecasts: Sequence[tuple[float, bool]]) -> tuple[CalibrationBucket, ...]:
    """Calibration buckets of `(forecast in points, resolved YES)` pairs."""
    count = round(100.0 / CALIBRATION_WIDTH)
    members: list[list[tuple[float, bool]]] = [[] for _ in range(count)]
    for forecast in forecasts:
        members[min(max(int(forecast[0] // CALIBRATION_WIDTH), 0), count - 1)].append(forecast)
    buckets = []
    for index, bucket in enumerate(members):
        yes = sum(1 for _, resolved_yes in bucket if resolved_yes)
        interval = wilson_interval(yes, len(bucket))
        buckets.append(CalibrationBucket(
            low=index * CALIBRATION_WIDTH,
            high=(index + 1) * CALIBRATION_WIDTH,
            count=len(bucket),
            predicted=_mean([points / 100.0 for points, _ in bucket]),
            observed=yes / len(bucket) if bucket else None,
            observed_low=None if interval is None else interval[0],
            observed_high=None if interval is None else interval[1],
        ))
    return tuple(buckets)


def _confidence_buckets(rows: Sequence[_Row]) -> tuple[ConfidenceBucket, ...]:
    members: list[list[_Row]] = [[] for _ in CONFIDENCE_BUCKETS]
    for row in rows:
        members[bisect_right(_CONFIDENCE_BOUNDS, row.confidence)].append(row)
    buckets = []
    for (low, high), bucket in zip(CONFIDENCE_BUCKETS, members, strict=True):
        tradeable = [r for r in bucket if r.tradeable]
        buckets.append(
            ConfidenceBucket(
                low=low,
                high=high,
                count=len(bucket),
                brier=_mean([r.brier for r in bucket]),
                coverage=_share([r.covered for r in bucket]),
                expected_coverage=_mean([r.implied for r in bucket]),
                tradeable=len(tradeable),
                hit_rate=_share([r.won for r in tradeable]),
            )
        )
    return tuple(buckets)


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _category_order(categories: set[str]) -> list[str]:
    """The order of `CATEGORIES` (politics first, other last), then any other name (a plugin
    may invent one) sorted."""
    known = [c for c in CATEGORIES if c in categories]
    return known + sorted(categories - set(CATEGORIES))
