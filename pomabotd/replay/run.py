"""One replay: evaluate resolved markets through the engine, select, settle, score.

Evaluation goes through the same `Runtime` as a cycle (pool, timeouts, retries, strategy
plugins). Selection is a cycle's (docs/decisions.md#selection), over the whole replay as one
portfolio starting at `risk.portfolio_value` with nothing open, as if every market had been
evaluated in one cycle; each selected position is then settled at 100 or 0 by its market's
outcome (exit `resolved`). The figures come from `pomabotd.domain.research`.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from pomabotd.config import is_builtin_evaluator
from pomabotd.domain.models import CloseEvent, Position, RiskLimits
from pomabotd.domain.portfolio import close_position, close_reason, open_position
from pomabotd.domain.research import (
    ClosedPosition,
    Graded,
    Scorecard,
    closed_positions,
    is_tradeable,
    scorecard,
)
from pomabotd.domain.selection import select
from pomabotd.engine.runtime import Runtime
from pomabotd.errors import CycleError
from pomabotd.replay.source import ResolvedInput
from pomabotd.replay.timeline import ReplayInput, prepare_input
from pomabotd.wire import Rejected
from pomabotd.words import plural

__all__ = [
    "ReplayReport",
    "ReplayResult",
    "ReplaySettings",
    "nothing_scored",
    "replay",
    "report_json",
    "require_scorable",
]

#: The replay is one cycle of one portfolio.
_CYCLE: Final = 1
#: Decimal places kept on the figures `--json` prints.
_DIGITS: Final = 6


class ReplaySettings(msgspec.Struct, frozen=True, kw_only=True):
    """What made a replay's decisions, so that its figures say what produced them.

    `evaluator` is `batch.evaluator`; `kernel` and `prior` (`batch.kernel`, `strategy.prior`)
    apply to the built-in evaluator only and are None for a strategy plugin, which receives
    `evaluate_market`'s arguments and decides its own prior. `risk` holds the `risk.*` limits
    selection ran under.
    """

    evaluator: str
    builtin: bool
    kernel: str | None
    prior: str | None
    risk: RiskLimits


class ReplayReport(Scorecard, frozen=True, kw_only=True):
    """Everything a replay measured; `--json` prints exactly this.

    Beyond the scorecard: the horizon; the settings that made the decisions; the market
    records read (`records`) and why some were
    not replayed (`skipped_no_closes_at`, `skipped_unresolved`, `skipped_no_horizon_price`
    for resolved records without a price at the horizon, `rejected_markets` invalid records,
    `failed` evaluations), and `price_fallbacks`, those evaluated at their `price` instead
    (`--price-fallback`); the signal records read (`signal_records`), refused
    (`rejected_signals`), used (`signals`) and dropped as stamped after their market's
    evaluation time (`signals_after_evaluation`); and the settled positions.
    """

    as_of_days_before: int
    settings: ReplaySettings
    records: int
    skipped_no_closes_at: int
    skipped_unresolved: int
    skipped_no_horizon_price: int
    price_fallbacks: int
    rejected_markets: int
    failed: int
    signal_records: int
    rejected_signals: int
    signals: int
    signals_after_evaluation: int
    positions: tuple[ClosedPosition, ...]


class ReplayResult(msgspec.Struct, frozen=True, kw_only=True):
    """The report, with the records refused and the evaluations that failed, to list."""

    report: ReplayReport
    rejected: tuple[Rejected, ...]
    failures: tuple[tuple[str, str], ...]


async def replay(
    runtime: Runtime, resolved: ResolvedInput, days: int, limits: RiskLimits
) -> ReplayResult:
    """Evaluate `resolved` as of `days` days before each close, select, settle and score."""
    prepared = prepare_input(resolved)
    result = await runtime.evaluate(
        prepared.markets,
        resolved.markets_source,
        prepared.signals,
        resolved.signals_source,
        prepared.as_of,
        keep=prepared.cases.keys(),
    )
    graded = [
        Graded(evaluation=evaluation, outcome=case.outcome)
        for market_id, case in prepared.cases.items()
        if (evaluation := result.kept.get(market_id)) is not None and evaluation.error is None
    ]
    closed = _settle(graded, prepared, limits)
    card = scorecard(graded, closed, limits.portfolio_value)
    # The engine sees only records the replay encoded itself, so it should refuse none; any
    # it does refuse still counts, by the source it came from.
    engine_markets = [r for r in result.rejected if r.source == resolved.markets_source]
    engine_signals = [r for r in result.rejected if r.source != resolved.markets_source]
    rejected = (*resolved.markets_rejected, *engine_markets,
                *resolved.signals_rejected, *engine_signals)
    batch = runtime.settings
    builtin = is_builtin_evaluator(batch.evaluator)
    report = ReplayReport(
        **msgspec.structs.asdict(card),
        as_of_days_before=days,
        settings=ReplaySettings(
            evaluator=batch.evaluator,
            builtin=builtin,
            kernel=batch.kernel if builtin else None,
            prior=batch.prior if builtin else None,
            risk=limits,
        ),
        records=resolved.records,
        skipped_no_closes_at=resolved.no_closes_at,
        skipped_unresolved=resolved.unresolved,
        skipped_no_horizon_price=resolved.no_horizon_price,
        price_fallbacks=resolved.price_fallbacks,
        rejected_markets=len(resolved.markets_rejected) + len(engine_markets),
        failed=result.markets_failed,
        signal_records=resolved.signal_records,
        rejected_signals=len(resolved.signals_rejected) + len(engine_signals),
        signals=prepared.signals_used,
        signals_after_evaluation=prepared.signals_late,
        positions=closed,
    )
    return ReplayResult(report=report, rejected=rejected, failures=tuple(result.failures))


def require_scorable(resolved: ResolvedInput) -> None:
    """CycleError, saying why, when `resolved` leaves a replay nothing to score (no record, every
    record refused or skipped) or when its signals file holds no usable line: such an input is
    surely wrong, and a report of nothing would hide it (`run-once` refuses the same)."""
    source = resolved.markets_source
    refused = resolved.markets_rejected
    if not resolved.markets:
        if not resolved.records and not refused:
            raise CycleError(f"no market to replay: {source} holds no record")
        if not resolved.records:
            raise CycleError(
                f"no usable market: every record of {source} was refused "
                f"({plural(len(refused), 'record')}; first: {refused[0]})"
            )
        reasons = [
            f"{count} {why}" for count, why in (
                (resolved.no_closes_at, "without closes_at"),
                (resolved.unresolved, "unresolved (no outcome)"),
                (resolved.no_horizon_price, "without a price at the horizon"),
                (len(refused), "refused"),
            ) if count
        ]
        raise CycleError(
            f"nothing to score: none of the {plural(resolved.records, 'market record')} of "
            f"{source} can be replayed ({', '.join(reasons)})"
        )
    bad_signals = resolved.signals_rejected
    if bad_signals and not resolved.signal_records:
        raise CycleError(
            f"no usable signal: every record of {resolved.signals_source} was refused "
            f"({plural(len(bad_signals), 'record')}; first: {bad_signals[0]})"
        )


def nothing_scored(result: ReplayResult) -> str | None:
    """Why a finished replay scored no market (every evaluation failed), or None."""
    report = result.report
    if report.markets or not report.failed:
        return None
    first = f"; first: {': '.join(result.failures[0])}" if result.failures else ""
    return f"nothing scored: every evaluation failed ({plural(report.failed, 'market')}{first})"


def report_json(report: ReplayReport) -> bytes:
    """The report as one JSON object, its figures rounded to six decimals."""
    return msgspec.json.encode(_rounded(msgspec.to_builtins(report)))


def _settle(
    graded: list[Graded], prepared: ReplayInput, limits: RiskLimits
) -> tuple[ClosedPosition, ...]:
    """Select over every tradeable evaluation at once, then settle each pick by its outcome."""
    candidates = [g.evaluation for g in graded if is_tradeable(g.evaluation)]
    selection = select(candidates, limits.portfolio_value, (), limits)
    events: list[Position | CloseEvent] = []
    for pick in selection.picks:
        case = prepared.cases[pick.evaluation.market_id]
        position = open_position(pick, case.question, _CYCLE, case.evaluated_at, limits)
        exit_ = close_reason(position, pick.evaluation.price, case.outcome, None, None)
        if exit_ is None:  # an outcome always closes a position
            raise AssertionError(f"{position.market_id} did not settle")
        reason, price = exit_
        events += [position, close_position(position, reason, price, _CYCLE, case.closes_at)]
    return closed_positions(events)


def _rounded(value: Any) -> Any:
    """Every float in `value` (builtins: dicts, lists, and the tuples `to_builtins` keeps)
    rounded to `_DIGITS` places, so that each figure prints one way."""
    if isinstance(value, float):
        return round(value, _DIGITS)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value
