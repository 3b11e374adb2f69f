"""The scalar path: the evaluator market by market, each market timed, failures retried.

It is the reference every fast result is checked against, it runs strategy plugins, and it names
every refused record by its line and field: a task's lines are decoded with the readers' own
decoders (in one call, or line by line when one is refused), then each market is evaluated with
its own time limit (`watchdog`); a market that raises, returns garbage or runs past
`timeout_ms` is retried with a named policy, then reported with `error` set. The built-in
evaluator without per-market output is screened (`evaluate_tradeable`): sentences are written
only for the markets kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from itertools import groupby
from operator import attrgetter
from typing import Any, Final, TypeVar

import msgspec
import tenacity

from pomabotd.domain.belief import prior
from pomabotd.domain.evaluate import evaluate_market, evaluate_tradeable
from pomabotd.domain.models import Evaluation, Market, Signal
from pomabotd.engine.pieces import decode_bulk
from pomabotd.engine.protocol import ChunkOut, Job, Task
from pomabotd.engine.watchdog import Evaluator, MarketTimeout, WorkerState, own_code
from pomabotd.wire import Rejected, decode_markets, decode_signals

__all__ = ["describe_error", "evaluate_scalar", "failed_evaluation"]

_NO_SIGNALS: Final[tuple[Signal, ...]] = ()
_T = TypeVar("_T", Market, Signal)
_MARKET: Final = msgspec.json.Decoder(Market)
_SIGNAL: Final = msgspec.json.Decoder(Signal)
_MARKET_ID: Final = attrgetter("market_id")
_LINES: Final = msgspec.json.Encoder()
_PACK: Final = msgspec.msgpack.Encoder()
_CHECKED: Final = msgspec.msgpack.Decoder(Evaluation)
_perf_ns: Final = time.perf_counter_ns
_force_setattr: Final = msgspec.structs.force_setattr


class _Garbage(Exception):
    """The evaluator returned something that is not an `Evaluation`."""


class _Counts:
    __slots__ = ("retries", "timeouts")

    def __init__(self) -> None:
        self.retries = 0
        self.timeouts = 0


def evaluate_scalar(
    task: Task, market_lines: bytes, signal_lines: bytes, job: Job, state: WorkerState
) -> ChunkOut:
    """Decode a task's lines, evaluate each market once (retrying failures), keep what is
    needed."""
    markets, market_rejected = _decode(
        market_lines, job.markets.name, _MARKET, decode_markets
    )
    if signal_lines:
        signals, signal_rejected = _decode(
            signal_lines, job.signals.name, _SIGNAL, decode_signals
        )
    else:
        signals, signal_rejected = [], []
    signal_count = len(signals) + len(signal_rejected)
    grouped = _group(signals)
    if task.only >= 0:
        markets = markets[task.only : task.only + 1]
        market_rejected, signal_rejected = [], []
    by_market = grouped.get
    builtin = state.evaluator is evaluate_market
    fn = _evaluator(state, job)
    # The built-in evaluator's verdict alone decides whether a market is kept when no lines are
    # wanted; `evaluate_tradeable` reaches it without writing the sentences of dropped markets.
    screen = builtin and not job.want_lines
    prior_used = job.prior
    as_of = job.as_of
    slots = state.slots
    slot = state.slot
    keep = task.keep
    want_lines = job.want_lines
    produced: list[Evaluation] = []
    candidates: list[Evaluation] = []
    chosen: list[Market] = []
    kept: list[Evaluation] = []
    failures: list[tuple[str, str]] = []
    counts = _Counts()
    evaluated = 0
    eval_us = 0.0
    for market in markets:
        market_signals = by_market(market.id, _NO_SIGNALS)
        started = _perf_ns()
        slots[slot] = started
        try:
            if screen and not (keep and market.id in keep):
                screened = evaluate_tradeable(market, market_signals, as_of, prior=prior_used)
                if screened is None:
                    eval_us += (_perf_ns() - started) / 1000.0
                    evaluated += 1
                    continue
                evaluation = screened
            else:
                evaluation = fn(market, market_signals, as_of)
        except BaseException as exc:  # a plugin's SystemExit fails its market only
            slots[slot] = 0
            evaluation = _recover(state, fn, market, market_signals, as_of, exc, job, counts)
        else:
            finished = _perf_ns()
            slots[slot] = 0
            try:
                evaluation = _accepted(evaluation, market, builtin, finished - started)
            except _Garbage as garbage:
                evaluation = _recover(
                    state, fn, market, market_signals, as_of, garbage, job, counts
                )
        if evaluation.error is None:
            evaluated += 1
            eval_us += evaluation.elapsed_us
            if evaluation.failed_check is None:
                candidates.append(evaluation)
                chosen.append(market)
        else:
            failures.append((market.id, evaluation.error))
        if want_lines:
            produced.append(evaluation)
        if keep and market.id in keep:
            kept.append(evaluation)
            if evaluation.error is not None or evaluation.failed_check is not None:
                chosen.append(market)
    slots[slot] = 0
    return ChunkOut(
        index=task.index,
        lines=_LINES.encode_lines(produced) if want_lines else b"",
        candidates=candidates,
        markets=chosen,
        kept=kept,
        market_rejected=market_rejected,
        signal_rejected=signal_rejected,
        failures=failures,
        evaluated=evaluated,
        failed=len(failures),
        signals=signal_count,
        retries=counts.retries,
        timeouts=counts.timeouts,
        eval_us=eval_us,
    )


def _evaluator(state: WorkerState, job: Job) -> Evaluator:
    """The evaluator to call per market: a plugin as it is, the built-in with `job.prior`."""
    if state.evaluator is evaluate_market and job.prior != "fixed":
        return partial(evaluate_market, prior=job.prior)
    return state.evaluator


def _decode(
    data: bytes,
    source: str,
    bulk: msgspec.json.Decoder[_T],
    by_line: Callable[[bytes, str], tuple[list[_T], list[Rejected]]],
) -> tuple[list[_T], list[Rejected]]:
    """Decode a task's lines in one call, or, if that fails, line by line with the readers'
    own function so each refusal names its line. Markets leave a repeated id to the readers,
    who refuse it."""
    records = decode_bulk(data, bulk) if data else []
    if records is None or (bulk is _MARKET and not _unique_ids(records)):
        return by_line(data, source)
    return records, []


def _unique_ids(records: list[Any]) -> bool:
    return len({record.id for record in records}) == len(records)


def _group(signals: list[Signal]) -> dict[str, list[Signal]]:
    """Signals by market, input order kept; one step per run of a market's adjacent signals."""
    grouped: dict[str, list[Signal]] = {}
    for market_id, run in groupby(signals, _MARKET_ID):
        bucket = grouped.get(market_id)
        if bucket is None:
            grouped[market_id] = list(run)
        else:
            bucket.extend(run)
    return grouped


def failed_evaluation(market: Market, error: str) -> Evaluation:
    """The evaluation of a market that failed after its retries: prior belief, no side."""
    belief = prior(market.unknowns)
    return Evaluation(
        market_id=market.id,
        category=market.category,
        price=market.price,
        belief_low=belief.low,
        belief_high=belief.high,
        confidence=belief.confidence,
        side="NONE",
        edge=0.0,
        expected_edge=0.0,
        failed_check=None,
        reason=f"evaluation failed: {error}",
        signals_applied=0,
        signals_rejected=0,
        error=error,
    )


def describe_error(exc: BaseException) -> str:
    """`timeout`, or the exception as `Type: message`."""
    if isinstance(exc, MarketTimeout):
        return "timeout"
    if isinstance(exc, _Garbage):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _recover(
    state: WorkerState,
    fn: Evaluator,
    market: Market,
    signals: Sequence[Signal],
    as_of: datetime,
    first: BaseException,
    job: Job,
    counts: _Counts,
) -> Evaluation:
    """The rare path: retry a failed market with the named policy, then give up with an error."""
    if isinstance(first, MarketTimeout):
        counts.timeouts += 1
    error = describe_error(first)
    if job.retry_attempts > 0:
        policy = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(job.retry_attempts),
            wait=tenacity.wait_none(),
            retry=tenacity.retry_if_exception_type(BaseException),
            reraise=True,
        )
        try:
            for attempt in policy:
                with attempt:
                    counts.retries += 1
                    return _attempt(state, fn, market, signals, as_of, counts)
        except BaseException as exc:  # whatever the plugin raised fails its market
            error = describe_error(exc)
    return failed_evaluation(market, error)


def _attempt(
    state: WorkerState,
    fn: Evaluator,
    market: Market,
    signals: Sequence[Signal],
    as_of: datetime,
    counts: _Counts,
) -> Evaluation:
    """One guarded evaluator call; the slot is cleared before any other code can run."""
    slots = state.slots
    slot = state.slot
    started = _perf_ns()
    slots[slot] = started
    try:
        evaluation = fn(market, signals, as_of)
    except MarketTimeout:
        slots[slot] = 0
        counts.timeouts += 1
        raise
    except BaseException:
        slots[slot] = 0
        raise
    finished = _perf_ns()
    slots[slot] = 0
    return _accepted(evaluation, market, state.evaluator is evaluate_market, finished - started)


def _accepted(evaluation: object, market: Market, builtin: bool, elapsed_ns: int) -> Evaluation:
    """The evaluator's result once it is known to be a valid evaluation of `market`.

    The built-in evaluator is trusted; a plugin's result is checked field by field (a Struct
    is not validated when it is built), so one bad result fails its market, not the cycle.
    """
    if not isinstance(evaluation, Evaluation):
        raise _Garbage(f"evaluator returned {type(evaluation).__name__}, expected Evaluation")
    if not builtin:
        try:
            evaluation = _CHECKED.decode(_PACK.encode(evaluation))
        except msgspec.ValidationError as exc:
            raise _Garbage(f"evaluator returned an invalid Evaluation: {exc}") from None
        if evaluation.market_id != market.id:
            raise _Garbage(
                f"evaluator returned an evaluation of market {evaluation.market_id!r}"
            )
    # The evaluator's fresh Struct; setting the one field the domain cannot know in place
    # avoids a copy per market.
    _force_setattr(evaluation, "elapsed_us", elapsed_ns / 1000.0)
    return evaluation


own_code(evaluate_scalar, _attempt)
