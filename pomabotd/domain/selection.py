"""Choosing which tradeable evaluations become paper positions, and how big.

The rules (candidates, order, skips, fractional-Kelly sizing) are docs/decisions.md#selection.

Selection is a pure, deterministic function of the evaluations, the equity and the open positions:
the same inputs in any order give the same picks, so a replayed cycle reproduces its decisions.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

from msgspec import Struct
from msgspec.structs import astuple

from pomabotd.domain.models import Evaluation, Position, RiskLimits, Side

__all__ = [
    "Pick",
    "Selection",
    "Skip",
    "kelly_size",
    "portfolio_risk_pct",
    "select",
]

#: Slack, in USD, so that risk landing exactly on the cap is allowed despite float noise.
_RISK_EPSILON = 1e-6


class Pick(Struct, frozen=True):
    """A candidate chosen this cycle, with its stake; `risk_usd == size_usd` for a binary bet."""

    evaluation: Evaluation
    size_usd: float
    risk_usd: float


class Skip(Struct, frozen=True):
    """A candidate passed over; `reason` starts with a stable code (`category_cap: ...`)."""

    market_id: str
    reason: str


class Selection(Struct, frozen=True):
    """The outcome of one walk: picks in walk order, skips in walk order, candidate count."""

    picks: tuple[Pick, ...]
    skipped: tuple[Skip, ...]
    opportunities: int


def _floor_cents(amount: float) -> float:
    """Round down to cents, treating float noise such as 28.999999999999996 cents as 29."""
    return math.floor(round(amount * 100.0, 6)) / 100.0


def kelly_size(
    side: Side,
    price: float,
    belief_low: float,
    belief_high: float,
    equity: float,
    limits: RiskLimits,
) -> float:
    """Fractional-Kelly stake in USD for the held side, using the conservative end of the belief.

    A contract priced at 0 or 100 for the held side is never sized (0): Kelly is undefined at
    a cost of 1, and at a cost of 0 the return on the stake (and so P&L) is undefined.
    """
    if side == "YES":
        q = price / 100.0
        p = belief_low / 100.0
    else:
        q = (100.0 - price) / 100.0
        p = (100.0 - belief_high) / 100.0
    if not 0.0 < q < 1.0 or p <= q or equity <= 0.0:
        return 0.0
    kelly = (p - q) / (1.0 - q)
    fraction = min(limits.kelly_fraction * kelly, limits.max_position_percent / 100.0)
    if fraction <= 0.0:
        return 0.0
    return max(0.0, _floor_cents(equity * fraction))


def portfolio_risk_pct(open_positions: Sequence[Position], equity: float) -> float:
    """Open risk as a percentage of equity; with no equity left, any open risk reads as 100%."""
    total = math.fsum(position.risk_usd for position in open_positions)
    if equity <= 0.0:
        return 100.0 if total > 0.0 else 0.0
    return total / equity * 100.0


def _rank_key(evaluation: Evaluation) -> tuple[float, str]:
    """Edge descending, then market id ascending: the order candidates are walked in."""
    return (-evaluation.edge, evaluation.market_id)


def _rank_key_with_record(evaluation: Evaluation) -> tuple[float, str, tuple[object, ...]]:
    """The rank, with the whole record breaking ties between evaluations of one market, so that
    duplicate market ids (which the runtime never produces) still rank independently of order."""
    return (-evaluation.edge, evaluation.market_id, astuple(evaluation))


def select(
    evaluations: Iterable[Evaluation],
    equity: float,
    open_positions: Sequence[Position],
    limits: RiskLimits,
    excluded: Collection[str] = (),
) -> Selection:
    """Walk the ranked candidates and pick those that fit the per-category and portfolio caps.

    `excluded` holds markets closed earlier in this cycle, which must not be re-opened in it.
    Candidates are filtered in one cheap pass before sorting, since most of up to a million
    evaluations are rejections. If a market appears twice, only its best-ranked evaluation can
    be picked; the others are skipped as `duplicate`.
    """
    blocked = {position.market_id for position in open_positions}
    blocked.update(excluded)
    min_edge = limits.min_edge
    candidates = [
        e
        for e in evaluations
        if e.failed_check is None
        and e.error is None
        and e.side != "NONE"
        and e.edge >= min_edge
        and e.market_id not in blocked
    ]
    distinct = len({e.market_id for e in candidates}) == len(candidates)
    candidates.sort(key=_rank_key if distinct else _rank_key_with_record)

    per_category: dict[str, int] = {}
    for position in open_positions:
        per_category[position.category] = per_category.get(position.category, 0) + 1
    total_risk = math.fsum(position.risk_usd for position in open_positions)
    risk_cap = limits.max_portfolio_risk / 100.0 * equity
    max_per_category = limits.max_positions_per_category

    picks: list[Pick] = []
    skipped: list[Skip] = []
    picked_markets: set[str] = set()
    diversify = limits.require_diversification
    # Once every category is full, nearly every candidate is skipped for it: one sentence each.
    full = {
        category: f"category_cap: {category} already holds {max_per_category} positions"
        for category in {e.category for e in candidates}
    }
    for e in candidates:
        skip_reason = None
        if e.market_id in picked_markets:
            skip_reason = "duplicate: another evaluation of this market ranked higher"
        elif diversify and per_category.get(e.category, 0) >= max_per_category:
            skip_reason = full[e.category]
        else:
            side: Side = "YES" if e.side == "YES" else "NO"
            size = kelly_size(side, e.price, e.belief_low, e.belief_high, equity, limits)
            if size < limits.min_position_usd:
                minimum = limits.min_position_usd
                skip_reason = f"min_size: size ${size:.2f} is below the ${minimum:.2f} minimum"
            elif total_risk + size > risk_cap + _RISK_EPSILON:
                skip_reason = (
                    f"risk_cap: adding ${size:.2f} to ${total_risk:.2f} at risk would exceed "
                    f"{limits.max_portfolio_risk:g}% of equity (${risk_cap:.2f})"
                )
            else:
                picks.append(Pick(e, size, size))
                picked_markets.add(e.market_id)
                per_category[e.category] = per_category.get(e.category, 0) + 1
                total_risk += size
        if skip_reason is not None:
            skipped.append(Skip(e.market_id, skip_reason))
    return Selection(tuple(picks), tuple(skipped), len(candidates))
