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
from pomabotd.engine.inputs import given, reader, release_readers
from pomabotd.engine.kernels import BatchEvaluator, batch_form
from pomabotd.engine.kernels.columnar import PASSED, evaluations
from pomabotd.engine.kernels.columns import (
    MarketColumns,
    SignalColumns,
    join_columns,
    market_columns,
    market_rows,
    signal_columns,
)
from pomabotd.engine.kernels.native import NativeMarkets
from pomabotd.engine.kernels.native import decode_markets as decode_native_markets
from pomabotd.engine.kernels.native import decode_signals as decode_native_signals
from pomabotd.engine.kernels.scalar import evaluate_scalar
from pomabotd.engine.pieces import (
    LoadedPiece,
    Misrouted,
    PastPart,
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
        with given(job.parts):
            for task in tasks:
                if task.stray:
                    loaded.append(None)
                    outs.append(_stray(task, job))
                    continue
                read = _read(task, job)
                if isinstance(read, ChunkOut):
                    loaded.append(None)
                    outs.append(read)
                else:
                    loaded.append(read)
                    outs.append(None)
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


def _read(task: Task, job: Job) -> _Lines | ChunkOut:
    """A task's lines; for a search task whose input is not in market order, or whose run
    goes past the part of the input carried here, the result that says so."""
    markets = reader(job.markets)
    signals = reader(job.signals)
    if task.search:
        try:
            piece = load_piece(task, markets, signals, job.decoder)
        except Misrouted:
            return ChunkOut(index=task.index, misrouted=True)
        except PastPart:
            return ChunkOut(index=task.index, short=True)
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


class _Share:
    """One task's place in a kernel pass: its markets are rows `first` to `first + count` of
    the pass, `held` the rows of its held markets; `native` when the native decoder decoded
    its lines."""

    __slots__ = ("count", "first", "held", "lines", "native", "position", "signals")

    def __init__(self, position: int, lines: _Lines, first: int, count: int, signals: int,
                 held: list[int], native: bool) -> None:
        self.position = position
        self.lines = lines
        self.first = first
        self.count = count
        self.signals = signals
        self.held = held
        self.native = native


class _Native:
    """A task's lines as the native decoder gave them: columns whose signal rows count from
    the task's first market."""

    __slots__ = ("markets", "signals")

    def __init__(self, markets: NativeMarkets, signals: SignalColumns) -> None:
        self.markets = markets
        self.signals = signals


def _native(lines: _Lines, job: Job) -> _Native | None:
    """The task's lines decoded by the native decoder, or None (not chosen, or it declined
    them): the msgspec path then takes the task, as without it."""
    if job.decoder != "native":
        return None
    piece = lines.piece
    if piece is None:
        markets = decode_native_markets(lines.markets)
        if markets is None:
            return None
        signals = decode_native_signals(lines.signals, markets)
        return None if signals is None else _Native(markets, signals.columns)
    markets = piece.native_markets
    if markets is None:
        return None
    if piece.native_signals is not None:
        return _Native(markets, piece.native_signals.columns)
    if not piece.signals:
        empty = decode_native_signals(b"", markets)
        return None if empty is None else _Native(markets, empty.columns)
    if piece.decoded_signals is not None:  # the decoder declined the run; msgspec took it
        rows = {key.decode(): row for row, key in enumerate(markets.ids())}
        found = piece.decoded_signals
        return _Native(markets, signal_columns(found, market_rows(found, rows)))
    return None  # a refused signal line: the scalar path names it


def _columnar(
    loaded: list[_Lines | None],
    outs: list[ChunkOut | None],
    job: Job,
    batch: BatchEvaluator,
    state: WorkerState,
) -> None:
    """Fill `outs` for the tasks one kernel pass can take; the others stay None.

    Tasks the native decoder took bring their columns; the others are decoded with msgspec
    and their records turned into columns together, in the pass."""
    shares: list[_Share] = []
    natives: list[_Native] = []
    markets: list[Market] = []
    signals: list[Signal] = []
    rows: list[int] = []
    plain: list[_Share] = []
    for position, lines in enumerate(loaded):
        if lines is None or lines.task.only >= 0:
            continue
        native = _native(lines, job)
        if native is not None:
            count = native.markets.count
            shares.append(_Share(position, lines, 0, count, len(native.signals.market),
                                 native.markets.rows_of(lines.task.keep), True))
            natives.append(native)
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
        held = [index[market_id] for market_id in lines.task.keep if market_id in index]
        plain.append(_Share(position, lines, len(markets), len(own_markets), len(own_signals),
                            held, False))
        markets += own_markets
        signals += own_signals
        rows += market_rows(own_signals, index)
    if not plain and not natives:
        return
    if len({m.id for m in markets}) != len(markets) or not _distinct(natives, markets):
        return  # tasks of one submission never share a market; be sure of it
    slots, slot = state.slots, state.slot
    total = len(markets) + sum(native.markets.count for native in natives)
    try:
        started = _perf_ns()
        # The pass is timed like one market per `_PASS_MARKETS` markets it evaluates: its
        # slot shows a start moved later by the extra time it is given.
        extra_passes = (total - 1) // _PASS_MARKETS
        slots[slot] = started + extra_passes * job.timeout_ms * 1_000_000
        parts: list[tuple[MarketColumns, SignalColumns]] = []
        if plain:
            parts.append((market_columns(markets), signal_columns(signals, rows)))
        parts += [(native.markets.columns, native.signals) for native in natives]
        market_part, signal_part = join_columns(parts)
        verdicts = batch(market_part, signal_part, job.as_of, job.prior)
        per_market_us = (_perf_ns() - started) / 1000.0 / total
        first = len(markets)
        for share in shares:  # the native tasks' rows follow the msgspec ones
            share.first = first
            share.held = [row + first for row in share.held]
            first += share.count
        built = [_columnar_out(share, job, market_part, verdicts, per_market_us)
                 for share in (*plain, *shares)]
        slots[slot] = 0
    except BaseException as exc:  # the scalar path is the reference: it evaluates what this cannot
        slots[slot] = 0
        reason = ("ran past its time" if isinstance(exc, MarketTimeout)
                  else f"{type(exc).__name__}: {exc}")
        for share in (*plain, *shares):
            share.lines.kernel_error = reason
        return
    for share, out in zip((*plain, *shares), built, strict=True):
        outs[share.position] = _finish(out, share.lines.piece)


def _distinct(natives: list[_Native], markets: list[Market]) -> bool:
    """True unless two tasks of a pass share a market id (compared by hash; the natively
    decoded tasks have no repeat within themselves)."""
    if not natives or (len(natives) == 1 and not markets):
        return True
    hashes = [native.markets.hashes for native in natives]
    if markets:
        hashes.append(np.frombuffer(id_hashes([m.id.encode() for m in markets]), np.uint64))
    joined = np.concatenate(hashes)
    return len(np.unique(joined)) == len(joined)


def _columnar_out(
    share: _Share,
    job: Job,
    columns: Any,
    verdicts: Any,
    per_market_us: float,
) -> ChunkOut:
    """One task's share of a kernel pass, as the scalar path would report it."""
    first, count = share.first, share.count
    keep = share.lines.task.keep
    if job.want_lines:
        wanted = np.arange(first, first + count)
    else:
        wanted = np.flatnonzero(verdicts.failed[first : first + count] == PASSED) + first
        if share.held:
            wanted = np.union1d(wanted, np.asarray(share.held, np.int64))
    built = evaluations(columns, verdicts, job.as_of, wanted.tolist(), per_market_us)
    records = columns.records
    candidates: list[Evaluation] = []
    chosen: list[Market] = []
    kept: list[Evaluation] = []
    for row, evaluation in zip(wanted.tolist(), built, strict=True):
        # Only the markets reported in full are read from their records (natively decoded
        # lines are decoded again for them alone).
        if evaluation.failed_check is None:
            candidates.append(evaluation)
            chosen.append(records[row])
        if keep and evaluation.market_id in keep:
            kept.append(evaluation)
            if evaluation.failed_check is not None:
                chosen.append(records[row])
    return ChunkOut(
        index=share.lines.task.index,
        lines=_LINES.encode_lines(built) if job.want_lines else b"",
        candidates=candidates,
        markets=chosen,
        kept=kept,
        evaluated=count,
        signals=share.signals,
        eval_us=per_market_us * count,
        columnar=count,
        native=count if share.native else 0,
    )


def _scalar(lines: _Lines, job: Job, state: WorkerState) -> ChunkOut:
    out = evaluate_scalar(lines.task, lines.markets, lines.signals, job, state)
    out.kernel_error = lines.kernel_error
    return _finish(out, lines.piece)
