"""The deterministic belief update (the rules: docs/decisions.md#belief).

A market starts from a prior range (`strategy.prior`: the fixed 45-55, or 10 points centred on
its price) and each eligible signal, in timestamp order, moves or widens that range;
confidence is recomputed from scratch after every applied signal so that the
result depends only on which signals were applied, never on floating-point drift from
incremental bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter
from typing import Final, Literal

from msgspec import Struct

from pomabotd.domain.models import IMPACT_CAP, Belief, Market, Signal

__all__ = [
    "PRIORS",
    "BeliefUpdate",
    "Prior",
    "check_invariant",
    "decay_confidence",
    "prior",
    "prior_range",
    "recompute_confidence",
    "shift_range",
    "update_belief",
]

PRIOR_LOW: Final = 45.0
PRIOR_HIGH: Final = 55.0
PRIOR_CONFIDENCE: Final = 50.0
#: Half the width of the `market` prior, in points.
MARKET_PRIOR_HALF_WIDTH: Final = 5.0
_MIN_CONFIDENCE: Final = 30.0
_MAX_CONFIDENCE: Final = 95.0
_DAY_SECONDS: Final = 86400.0
_DIRECTION: Final[dict[str, float]] = {"up": 1.0, "down": -1.0, "neutral": 0.0}
_by_timestamp: Final = attrgetter("timestamp")

Prior = Literal["fixed", "market"]
"""`strategy.prior`: where every market's belief starts (45-55, or its price +- 5)."""
PRIORS: Final[tuple[Prior, ...]] = ("fixed", "market")


class BeliefUpdate(Struct, frozen=True):
    """A market's belief at `as_of`, with how many of its signals were applied or rejected."""

    belief: Belief
    applied: int
    rejected: int
    last_applied_at: datetime | None


def prior(unknowns: int) -> Belief:
    """The fixed prior belief, 45-55 at confidence 50: the default every market starts from."""
    return Belief(PRIOR_LOW, PRIOR_HIGH, PRIOR_CONFIDENCE, unknowns)


def prior_range(price: float, prior: Prior = "fixed") -> tuple[float, float]:
    """The range a market priced at `price` starts from: 45-55 (`fixed`), or `market`'s
    `max(0, price - 5)` to `min(100, price + 5)`, which starts from the crowd's view."""
    if prior == "fixed":
        return PRIOR_LOW, PRIOR_HIGH
    low = price - MARKET_PRIOR_HALF_WIDTH
    high = price + MARKET_PRIOR_HALF_WIDTH
    return (low if low > 0.0 else 0.0), (high if high < 100.0 else 100.0)


def shift_range(low: float, high: float, signal: Signal) -> tuple[float, float]:
    """Move (or, for a conflicting signal, widen) the range by the signal's capped impact.

    The shift is capped at 60% of the current width so that one signal can never jump the whole
    range past where it was; a conflicting signal widens the range because it says the current
    belief may be wrong, not merely that it should move.
    """
    width = high - low
    shift = min(IMPACT_CAP[signal.type] * signal.strength / 5.0, 0.6 * width)
    direction = signal.direction
    if signal.conflicts_with_existing:
        widen = 0.25 * width
        if direction == "down":
            low -= shift + widen
            high += widen
        elif direction == "up":
            low -= widen
            high += shift + widen
        else:
            low -= widen
            high += widen
    else:
        delta = _DIRECTION[direction] * shift
        low += delta
        high += delta
    return _clamp(low, 0.0, 100.0), _clamp(high, 0.0, 100.0)


def recompute_confidence(
    authoritative: int, procedural: int, unknowns: int, any_conflict: bool, days: float
) -> float:
    """Confidence from scratch: authority raises it; unknowns, conflict and staleness lower it."""
    raw = (
        PRIOR_CONFIDENCE
        + 10.0 * authoritative
        + 5.0 * procedural
        - 7.0 * unknowns
        - (10.0 if any_conflict else 0.0)
        - 0.5 * days
    )
    return _clamp(raw, _MIN_CONFIDENCE, _MAX_CONFIDENCE)


def decay_confidence(confidence: float, days: float) -> float:
    """Confidence lost while no news arrived: 0.5 per day, kept within [30, 95]."""
    return _clamp(confidence - 0.5 * days, _MIN_CONFIDENCE, _MAX_CONFIDENCE)


def update_belief(
    market: Market, signals: Sequence[Signal], as_of: datetime, *, prior: Prior = "fixed"
) -> BeliefUpdate:
    """Apply a market's signals to the `prior`, in timestamp order, and decay to `as_of`.

    Signals about other markets are ignored and not counted. A signal stamped after `as_of` is
    rejected: news from the future cannot be known at `as_of`, and skipping it keeps replays at a
    past `as_of` identical to what the daemon saw then. A speculative signal is rejected while no
    other signal has been applied to the market yet.
    """
    low, high, confidence, applied, rejected, last = _fold(market, signals, as_of, prior)
    return BeliefUpdate(Belief(low, high, confidence, market.unknowns), applied, rejected, last)


def check_invariant(before: Belief, after: Belief) -> bool:
    """True unless `after` has more unknowns than `before` and yet a higher confidence."""
    return not (after.unknowns > before.unknowns and after.confidence > before.confidence)


def _fold(
    market: Market, signals: Sequence[Signal], as_of: datetime, prior: Prior = "fixed"
) -> tuple[float, float, float, int, int, datetime | None]:
    """The update as plain values, for the signals of `market` among `signals`."""
    market_id = market.id
    return _fold_own(
        market, [s for s in signals if s.market_id == market_id], as_of, prior
    )


def _fold_own(
    market: Market, mine: Sequence[Signal], as_of: datetime, prior: Prior = "fixed"
) -> tuple[float, float, float, int, int, datetime | None]:
    """The update of one market from its own signals, inlined for the hot evaluator.

    It builds no intermediate Structs and makes no call per signal. Confidence is recomputed
    from scratch after every applied signal, so only the last recomputation survives: it is
    made once, at the end, from the final counts and the gap between the last two applied
    signals. Every float operation is the one `shift_range` and `recompute_confidence` perform,
    in the same order, so the results are bit-identical to folding with them step by step.
    """
    low, high = (PRIOR_LOW, PRIOR_HIGH) if prior == "fixed" else prior_range(market.price, prior)
    if not mine:
        return low, high, PRIOR_CONFIDENCE, 0, 0, None
    if len(mine) > 1:
        mine = sorted(mine, key=_by_timestamp)
    cap = IMPACT_CAP
    applied = rejected = authoritative = procedural = 0
    any_conflict = False
    last: datetime | None = None
    previous: datetime | None = None
    for signal in mine:
        stamp = signal.timestamp
        kind = signal.type
        if stamp > as_of or (not applied and kind == "speculative"):
            rejected += 1
            continue
        width = high - low
        shift = cap[kind] * signal.strength / 5.0
        limit = 0.6 * width
        if limit < shift:  # min(shift, limit), which keeps `shift` on a tie
            shift = limit
        direction = signal.direction
        if signal.conflicts_with_existing:
            any_conflict = True
            widen = 0.25 * width
            if direction == "down":
                low -= shift + widen
                high += widen
            elif direction == "up":
                low -= widen
                high += shift + widen
            else:
                low -= widen
                high += widen
        elif direction == "up":
            low += shift
            high += shift
        elif direction == "down":
            low += -shift
            high += -shift
        if low < 0.0:
            low = 0.0
        elif low > 100.0:
            low = 100.0
        if high < 0.0:
            high = 0.0
        elif high > 100.0:
            high = 100.0
        if kind == "authoritative":
            authoritative += 1
        elif kind == "procedural":
            procedural += 1
        applied += 1
        previous = last
        last = stamp
    if last is None:
        return low, high, PRIOR_CONFIDENCE, 0, rejected, None
    days = 0.0 if previous is None else abs((last - previous).total_seconds()) / _DAY_SECONDS
    confidence = recompute_confidence(
        authoritative, procedural, market.unknowns, any_conflict, days
    )
    confidence = decay_confidence(confidence, (as_of - last).total_seconds() / _DAY_SECONDS)
    return low, high, confidence, applied, rejected, last


def _clamp(value: float, lowest: float, highest: float) -> float:
    return lowest if value < lowest else highest if value > highest else value
