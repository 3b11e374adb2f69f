"""The worker's loop over its tasks: read, decode, evaluate, keep what is needed, encode.

The same functions run inside pool workers and, with `workers = 0` or a small cycle, in pomabotd
itself. Each task's lines are read from the cycle's inputs by byte range (`inputs.reader`).

- The built-in evaluator with `batch.kernel = "columnar"` takes every task of a submission whose
  lines all decode (with the very decoders of the scalar readers, so they passed the same
  validation) in one kernel pass; `Evaluation`s are built only for candidates, held markets and,
  when lines are wanted, every market. The pass is timed like one market: if it raises or runs
  past `timeout_ms`, its tasks are evaluated market by market instead.
- Every other task (a refused line, a plugin, `batch.kernel = "scalar"`) runs market by
  market: each market is timed (`watchdog`), a failure is retried with a named policy, then
  reported with `error` set; refusals name their line and field.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from itertools import groupby
from operator import attrgetter
from typing import Any, Final, TypeVar

import msgspec
import numpy as np
import tenacity

from pomabotd.domain.belief import prior
from pomabotd.domain.evaluate import evaluate_market, evaluate_tradeable
from pomabotd.domain.models import Evaluation, Market, Signal
from pomabotd.engine.inputs import reader
from pomabotd.engine.kernels import BatchEvaluator, batch_form
from pomabotd.engine.kernels.columnar import PASSED, evaluations
from pomabotd.engine.kernels.columns import market_columns, market_rows, signal_columns
from pomabotd.engine.pieces import Misrouted, Piece, decode_bulk, load_piece
from pomabotd.engine.protocol import ChunkOut, Job, Task
from pomabotd.engine.watchdog import Evaluator, MarketTimeout, WorkerState, own_code
from pomabotd.wire import Rejected, decode_markets, decode_signals

__all__ = ["describe_error", "evaluate_tasks", "failed_evaluation"]

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


class _Lines:
    """One task's lines, read; `piece` is set for a search task."""

    __slots__ = ("markets", "piece", "signals", "task")

    def __init__(self, task: Task, markets: bytes, signals: bytes, piece: Piece | None) -> None:
        self.task = task
        self.markets = markets
        self.signals = signals
        self.piece = piece


def evaluate_tasks(tasks: list[Task], job: Job, state: WorkerState) -> bytes:
    """Evaluate tasks with the collector paused (they allocate much, and leave no cycles);
    their `ChunkOut`s, msgpack-encoded."""
    state.configure(job.timeout_ms)
    enabled = gc.isenabled()
    gc.disable()
    state.busy.set()
    try:
        outs: list[ChunkOut | None] = []
        loaded: list[_Lines | None] = []
        for task in tasks:
            lines = _read(task, job)
            loaded.append(lines)
            outs.append(ChunkOut(index=task.index, misrouted=True) if lines is None else None)
        batch = batch_form(state.evaluator) if job.kernel == "columnar" else None
        if batch is not None:
            _columnar(loaded, outs, job, batch, state)
        done = [
            out if out is not None else _scalar(lines, job, state)  # type: ignore[arg-type]
            for lines, out in zip(loaded, outs, strict=True)
        ]
        return _PACK.encode(done)
    finally:
        state.busy.clear()
        if enabled:
            gc.enable()


def _read(task: Task, job: Job) -> _Lines | None:
    """A task's lines, or None if it is a search task whose input is not in market order."""
    markets = reader(job.markets)
    signals = reader(job.signals)
    if task.search:
        try:
            piece = load_piece(task, markets, signals)
        except Misrouted:
            return None
        return _Lines(task, piece.markets, piece.signals, piece)
    return _Lines(
        task,
        markets.join(task.markets),
        signals.join(task.signals) if task.signals else b"",
        None,
    )


def _finish(out: ChunkOut, piece: Piece | None) -> ChunkOut:
    """A search task's result carries where its lines were."""
    if piece is not None:
        out.market_lines = piece.market_lines
        out.signal_lines = piece.signal_lines
        out.run = piece.run
        out.keys = piece.keys
    return out


def _columnar(
    loaded: list[_Lines | None],
    outs: list[ChunkOut | None],
    job: Job,
    batch: BatchEvaluator,
    state: WorkerState,
) -> None:
    """Fill `outs` for the tasks one kernel pass can take; the others stay None."""
    taken: list[tuple[int, _Lines, list[Market], int, dict[str, int]]] = []
    markets: list[Market] = []
    signals: list[Signal] = []
    rows: list[int] = []
    for position, lines in enumerate(loaded):
        if lines is None or lines.task.only >= 0:
            continue
        piece = lines.piece
        if piece is not None:
            own_markets = piece.decoded_markets
            own_signals = piece.decoded_signals if piece.signals else []
        else:
            own_markets = decode_bulk(lines.markets, _MARKET)
            own_signals = decode_bulk(lines.signals, _SIGNAL) if lines.signals else []
        if not own_markets or own_signals is None:
            continue
        index = {market.id: len(markets) + row for row, market in enumerate(own_markets)}
        if len(index) != len(own_markets):
            continue  # a repeated id: the scalar readers refuse the repeat by its line
        taken.append((position, lines, own_markets, len(own_signals), index))
        markets += own_markets
        signals += own_signals
        rows += market_rows(own_signals, index)
    if not taken or len({m.id for m in markets}) != len(markets):
        return  # tasks of one submission never share a market; be sure of it
    slots, slot = state.slots, state.slot
    try:
        started = _perf_ns()
        slots[slot] = started  # the pass is timed like one market
        columns = market_columns(markets)
        verdicts = batch(columns, signal_columns(signals, rows), job.as_of, job.prior)
        per_market_us = (_perf_ns() - started) / 1000.0 / len(markets)
        built = [
            _columnar_out(lines, job, own, count, index, columns, verdicts, per_market_us)
            for _, lines, own, count, index in taken
        ]
        slots[slot] = 0
    except BaseException:  # the scalar path is the reference: it evaluates what this cannot
        slots[slot] = 0
        return
    for (position, lines, *_), out in zip(taken, built, strict=True):
        outs[position] = _finish(out, lines.piece)


def _columnar_out(
    lines: _Lines,
    job: Job,
    own_markets: list[Market],
    signal_count: int,
    index: dict[str, int],
    columns: Any,
    verdicts: Any,
    per_market_us: float,
) -> ChunkOut:
    """One task's share of a kernel pass, as the scalar path would report it."""
    first = index[own_markets[0].id]
    count = len(own_markets)
    keep = lines.task.keep
    if job.want_lines:
        wanted = np.arange(first, first + count)
    else:
        wanted = np.flatnonzero(verdicts.failed[first : first + count] == PASSED) + first
        held = [index[market_id] for market_id in keep if market_id in index]
        if held:
            wanted = np.union1d(wanted, np.asarray(held, np.int64))
    built = evaluations(columns, verdicts, job.as_of, wanted.tolist(), per_market_us)
    records = columns.records
    candidates: list[Evaluation] = []
    chosen: list[Market] = []
    kept: list[Evaluation] = []
    for row, evaluation in zip(wanted.tolist(), built, strict=True):
        market = records[row]
        if evaluation.failed_check is None:
            candidates.append(evaluation)
            chosen.append(market)
        if keep and market.id in keep:
            kept.append(evaluation)
            if evaluation.failed_check is not None:
                chosen.append(market)
    return ChunkOut(
        index=lines.task.index,
        lines=_LINES.encode_lines(built) if job.want_lines else b"",
        candidates=candidates,
        markets=chosen,
        kept=kept,
        evaluated=count,
        signals=signal_count,
        eval_us=per_market_us * count,
        columnar=count,
    )


def _scalar(lines: _Lines, job: Job, state: WorkerState) -> ChunkOut:
    """Decode a task's lines, evaluate each market once (retrying failures), keep what is
    needed."""
    task = lines.task
    markets, market_rejected = _decode(
        lines.markets, job.markets.name, _MARKET, decode_markets
    )
    if lines.signals:
        signals, signal_rejected = _decode(
            lines.signals, job.signals.name, _SIGNAL, decode_signals
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
    out = ChunkOut(
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
    return _finish(out, lines.piece)


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


own_code(_scalar, _attempt)
