"""The worker's loop over its tasks: read, decode, evaluate, keep what is needed, encode.

The same functions run inside pool workers and, with `workers = 0` or a small cycle, in pomabotd
itself. Each task's lines are read from the cycle's inputs by byte range (`inputs.reader`).

- The built-in evaluator with `batch.kernel = "columnar"` takes every task of a submission whose
  lines all decode (with the very decoders of the scalar readers, so they passed the same
  validation) in one kernel pass; `Evaluation`s are built only for candidates, held markets and,
  when lines are wanted, every market. The pass is timed like one market per 1,000 it
  evaluates: if it raises or runs past that many times `timeout_ms`, its tasks are evaluated
  market by market instead, and their results say why (`kernel_error`).
- A stray task (signal lines no piece claimed) only counts its lines and takes their market ids.
- Every other task (a refused line, a plugin, `batch.kernel = "scalar"`) runs market by
  market (`kernels/scalar.py`): each market is timed (`watchdog`), a failure is retried with a
  named policy, then
  reported with `error` set; refusals name their line and field.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Final

import msgspec
import numpy as np

from pomabotd.domain.models import Evaluation, Market, Signal
from pomabotd.engine.inputs import reader, release_readers
from pomabotd.engine.kernels import BatchEvaluator, batch_form
from pomabotd.engine.kernels.columnar import PASSED, evaluations
from pomabotd.engine.kernels.columns import market_columns, market_rows, signal_columns
from pomabotd.engine.kernels.scalar import evaluate_scalar
from pomabotd.engine.pieces import (
    LoadedPiece,
    Misrouted,
    decode_bulk,
    id_hashes,
    line_count,
    load_piece,
)
from pomabotd.engine.protocol import ChunkOut, Job, Task
from pomabotd.engine.watchdog import MarketTimeout, WorkerState
from pomabotd.engine.workload import unrouted_signals

__all__ = ["evaluate_tasks"]

_MARKET: Final = msgspec.json.Decoder(Market)
_SIGNAL: Final = msgspec.json.Decoder(Signal)
_LINES: Final = msgspec.json.Encoder()
_PACK: Final = msgspec.msgpack.Encoder()
_perf_ns: Final = time.perf_counter_ns
#: A columnar pass may take `batch.timeout_ms` per this many markets it evaluates.
_PASS_MARKETS: Final = 1000


class _Lines:
    """One task's lines, read; `piece` is set for a search task. `kernel_error` says why the
    columnar pass that took it failed."""

    __slots__ = ("kernel_error", "markets", "piece", "signals", "task")

    def __init__(
        self, task: Task, markets: bytes, signals: bytes, piece: LoadedPiece | None
    ) -> None:
        self.task = task
        self.markets = markets
        self.signals = signals
        self.piece = piece
        self.kernel_error = ""


def evaluate_tasks(tasks: list[Task], job: Job, state: WorkerState) -> bytes:
    """Evaluate tasks with the collector paused (they allocate much, and leave no cycles);
    their `ChunkOut`s, msgpack-encoded."""
    state.configure(job.timeout_ms)
    enabled = gc.isenabled()
    gc.disable()
    state.begin()
    try:
        outs: list[ChunkOut | None] = []
        loaded: list[_Lines | None] = []
        for task in tasks:
            if task.stray:
                loaded.append(None)
                outs.append(_stray(task, job))
                continue
            lines = _read(task, job)
            loaded.append(lines)
            outs.append(ChunkOut(index=task.index, misrouted=True) if lines is None else None)
            state.step()
        batch = batch_form(state.evaluator) if job.kernel == "columnar" else None
        if batch is not None:
            _columnar(loaded, outs, job, batch, state)
            state.step()
        done = []
        for lines, out in zip(loaded, outs, strict=True):
            done.append(out if out is not None else _scalar(lines, job, state))  # type: ignore[arg-type]
            state.step()
        return _PACK.encode(done)
    finally:
        release_readers()
        state.end()
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


def _stray(task: Task, job: Job) -> ChunkOut:
    """Signal lines no piece claimed: counted, refused when they name no market, and the
    hashes of the market ids they name, for pomabotd to check that none is in the input."""
    (start, end), = task.signals
    data = reader(job.signals).read(start, end)
    count, keys, rejected = unrouted_signals(data, job.signals.name)
    return ChunkOut(index=task.index, signal_rejected=rejected, signals=count,
                    signal_lines=line_count(data), run=(start, end), keys=id_hashes(keys))


def _finish(out: ChunkOut, piece: LoadedPiece | None) -> ChunkOut:
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
        # The pass is timed like one market per `_PASS_MARKETS` markets it evaluates: its
        # slot shows a start moved later by the extra time it is given.
        extra_passes = (len(markets) - 1) // _PASS_MARKETS
        slots[slot] = started + extra_passes * job.timeout_ms * 1_000_000
        columns = market_columns(markets)
        verdicts = batch(columns, signal_columns(signals, rows), job.as_of, job.prior)
        per_market_us = (_perf_ns() - started) / 1000.0 / len(markets)
        built = [
            _columnar_out(lines, job, own, count, index, columns, verdicts, per_market_us)
            for _, lines, own, count, index in taken
        ]
        slots[slot] = 0
    except BaseException as exc:  # the scalar path is the reference: it evaluates what this cannot
        slots[slot] = 0
        reason = ("ran past its time" if isinstance(exc, MarketTimeout)
                  else f"{type(exc).__name__}: {exc}")
        for _, lines, *_ in taken:
            lines.kernel_error = reason
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
    out = evaluate_scalar(lines.task, lines.markets, lines.signals, job, state)
    out.kernel_error = lines.kernel_error
    return _finish(out, lines.piece)
