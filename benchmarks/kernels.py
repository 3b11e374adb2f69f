"""Per-market cost, on one core, of decoding and evaluating a piece: scalar against columnar,
and the columnar kernel's lines decoded by msgspec against the native decoder.

Run from a checkout with pomabotd installed (with cargo on the PATH for the native decoder):

    python benchmarks/kernels.py                     # 1e3 and 1e5 markets
    python benchmarks/kernels.py --sizes 100000 --workers 2

The synthetic workload (about 3.3 signals per market, as `stress` generates it) is cut into
pieces exactly as a cycle on a pool of `--workers` cuts it (`plan_pieces`: up to 4 MiB of market
lines, tens of thousands of lines, each worker finding its own signal run). Every figure is the
CPU time of this process (one core), the best of `--repeats` rounds in which every measurement
takes its turn: on a shared machine CPU time varies less than wall time, and taking turns spreads
a busy spell over all of them. The load average is printed beside the figures.

- `worker, scalar` / `worker, columnar, msgspec` / `worker, columnar, native`: the worker's
  whole loop over its pieces (`evaluate_tasks`: read, find the signal run, decode, evaluate,
  keep candidates, encode the result) with `batch.kernel` scalar, or columnar with
  `batch.decoder` msgspec or native.
- The stages of each path: msgspec decoding of the lines to Structs (scalar and columnar),
  grouping and the per-market screen (scalar), Structs to numpy columns (columnar, msgspec),
  the native decoder's lines to columns in one pass, the kernel, and the Evaluations built
  for candidates (columnar). The ratios printed compare the two ways to columns, and the
  columnar worker's two decoders, measured in the same rounds.
- The columnar JSON readers considered for decoding: `pyarrow.json.read_json` and
  `polars.read_ndjson`, each with an explicit schema, straight to columns (timestamps as
  microseconds), when they are installed; neither validates as the scalar readers do.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np

from pomabotd.domain.evaluate import evaluate_market, evaluate_tradeable
from pomabotd.domain.models import Market, Signal
from pomabotd.engine.chunk import evaluate_tasks
from pomabotd.engine.executor.shared import HERE
from pomabotd.engine.inputs import Inputs, reader
from pomabotd.engine.kernels import native
from pomabotd.engine.kernels.columnar import PASSED, evaluate_columns, evaluations
from pomabotd.engine.kernels.columns import market_columns, market_rows, signal_columns
from pomabotd.engine.plan import plan_pieces
from pomabotd.engine.protocol import Job
from pomabotd.engine.watchdog import inline_state
from pomabotd.sources.workload import generate_jsonl

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)
_MARKET = msgspec.json.Decoder(Market)
_SIGNAL = msgspec.json.Decoder(Signal)


def _best(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """The least CPU time of each run over `repeats` rounds, the runs taking turns in each
    round so that a busy spell of a shared machine falls on all of them alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            gc.collect()
            gc.disable()
            started = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - started)
            gc.enable()
    return best


class _Pieces:
    """A workload cut into pieces as a cycle cuts it, and each piece's lines."""

    def __init__(self, size: int, workers: int) -> None:
        markets, signals = generate_jsonl(size, 7, AS_OF)
        self.inputs = Inputs(markets, "m", signals, "s", sharing=HERE)
        self.tasks = plan_pieces(reader(self.inputs.markets), reader(self.inputs.signals),
                                 workers=workers, batch_size=100)
        chunk_job = self.job("columnar")
        with inline_state(evaluate_market) as state:
            evaluate_tasks(self.tasks, chunk_job, state)  # warm up
        from pomabotd.engine.pieces import load_piece

        loaded = [load_piece(task, reader(self.inputs.markets), reader(self.inputs.signals))
                  for task in self.tasks]
        self.lines = [(piece.markets, piece.signals) for piece in loaded]

    def job(self, kernel: str, decoder: str = "msgspec") -> Job:
        return Job(as_of=AS_OF, markets=self.inputs.markets, signals=self.inputs.signals,
                   want_lines=False, timeout_ms=5000, retry_attempts=0,
                   kernel=kernel, decoder=decoder)  # type: ignore[arg-type]


def _decoded(pieces: _Pieces) -> list[tuple[list[Market], list[Signal]]]:
    return [(_MARKET.decode_lines(m), _SIGNAL.decode_lines(s)) for m, s in pieces.lines]


def _worker(pieces: _Pieces, kernel: str, decoder: str = "msgspec") -> Callable[[], None]:
    job = pieces.job(kernel, decoder)

    def run() -> None:
        with inline_state(evaluate_market) as state:
            for task in pieces.tasks:
                evaluate_tasks([task], job, state)

    return run


def _scalar_evaluate(decoded: list[tuple[list[Market], list[Signal]]]) -> None:
    get_id = attrgetter("market_id")
    for markets, signals in decoded:
        grouped = {key: list(run) for key, run in groupby(signals, get_id)}
        for market in markets:
            evaluate_tradeable(market, grouped.get(market.id, ()), AS_OF)


def _columns(decoded: list[tuple[list[Market], list[Signal]]]) -> list[Any]:
    built = []
    for markets, signals in decoded:
        rows = market_rows(signals, {market.id: row for row, market in enumerate(markets)})
        columns = market_columns(markets)
        built.append((columns, signal_columns(signals, rows)))
    return built


def _native_columns(pieces: _Pieces) -> list[Any]:
    """The native decoder's columns of each piece (markets, then signals matched to them)."""
    built = []
    for market_lines, signal_lines in pieces.lines:
        markets = native.decode_markets(market_lines)
        assert markets is not None, "the native decoder declined a synthetic piece"
        signals = native.decode_signals(signal_lines, markets)
        assert signals is not None, "the native decoder declined a synthetic piece"
        built.append((markets.columns, signals.columns))
    return built


def _kernel(built: list[Any]) -> list[Any]:
    return [(columns, evaluate_columns(columns, signals, AS_OF)) for columns, signals in built]


def _candidates(verdicts: list[Any]) -> None:
    for columns, verdict in verdicts:
        evaluations(columns, verdict, AS_OF, np.flatnonzero(verdict.failed == PASSED).tolist())


def _readers(pieces: _Pieces) -> dict[str, Callable[[], None]]:
    found: dict[str, Callable[[], None]] = {}
    try:
        import pyarrow as pa
        import pyarrow.json as pj
    except ImportError:
        pa = None
    if pa is not None:
        string, double, boolean = pa.string(), pa.float64(), pa.bool_()
        stamp = pa.timestamp("us", tz="UTC")
        market_schema = pa.schema([
            ("id", string), ("question", string), ("category", string), ("price", double),
            ("liquidity", double), ("volume_24h", double), ("closes_at", stamp),
            ("resolution_criteria", string), ("authority_is_clear", boolean),
            ("outcome_is_objective", boolean), ("unknowns", pa.int64()), ("outcome", string),
        ])
        signal_schema = pa.schema([
            ("market_id", string), ("type", string), ("direction", string),
            ("strength", pa.int64()), ("timestamp", stamp),
            ("conflicts_with_existing", boolean), ("source", string), ("description", string),
        ])
        read = pj.ReadOptions(use_threads=False, block_size=1 << 24)
        by_market = pj.ParseOptions(explicit_schema=market_schema,
                                    unexpected_field_behavior="ignore")
        by_signal = pj.ParseOptions(explicit_schema=signal_schema,
                                    unexpected_field_behavior="ignore")

        def arrow() -> None:
            for market_lines, signal_lines in pieces.lines:
                markets = pj.read_json(io.BytesIO(market_lines), read_options=read,
                                       parse_options=by_market)
                signals = pj.read_json(io.BytesIO(signal_lines), read_options=read,
                                       parse_options=by_signal)
                markets.column("price").to_numpy()
                signals.column("timestamp").cast(pa.int64()).to_numpy()

        found["pyarrow.json to columns"] = arrow
    try:
        import polars as pl
    except ImportError:
        pl = None
    if pl is not None:
        market_types = {
            "id": pl.String, "question": pl.String, "category": pl.String, "price": pl.Float64,
            "liquidity": pl.Float64, "volume_24h": pl.Float64, "closes_at": pl.String,
            "resolution_criteria": pl.String, "authority_is_clear": pl.Boolean,
            "outcome_is_objective": pl.Boolean, "unknowns": pl.Int64, "outcome": pl.String,
        }
        signal_types = {
            "market_id": pl.String, "type": pl.String, "direction": pl.String,
            "strength": pl.Int64, "timestamp": pl.String, "conflicts_with_existing": pl.Boolean,
            "source": pl.String, "description": pl.String,
        }

        def polars() -> None:
            for market_lines, signal_lines in pieces.lines:
                markets = pl.read_ndjson(io.BytesIO(market_lines), schema=market_types)
                signals = pl.read_ndjson(io.BytesIO(signal_lines), schema=signal_types)
                markets["price"].to_numpy()
                signals["timestamp"].str.to_datetime(time_zone="UTC").dt.epoch(
                    "us").to_numpy()

        found["polars.read_ndjson to columns"] = polars
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**5])
    parser.add_argument("--workers", type=int, default=2, help="the pool the pieces are for")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; pieces for "
          f"{args.workers} workers; best of {args.repeats}; microseconds per market")
    if not native.available():
        print(f"native decoder: {native.problem()} ({native.BUILD_HINT}); msgspec only")
    for size in args.sizes:
        _report(size, args.workers, args.repeats)
    print(f"load average {os.getloadavg()[0]:.2f}")


def _report(size: int, workers: int, repeats: int) -> None:
    pieces = _Pieces(size, workers)
    decoded = _decoded(pieces)
    built = _columns(decoded)
    verdicts = _kernel(built)
    with_native = native.available()
    runs: dict[str, Callable[[], Any]] = {
        "worker, scalar (whole piece)": _worker(pieces, "scalar"),
        "worker, columnar, msgspec (whole piece)": _worker(pieces, "columnar"),
    }
    if with_native:
        runs["worker, columnar, native (whole piece)"] = _worker(pieces, "columnar", "native")
    runs.update({
        "  msgspec lines to Structs": lambda: _decoded(pieces),
        "  scalar: group + screen": lambda: _scalar_evaluate(decoded),
        "  columnar: Structs to columns": lambda: _columns(decoded),
    })
    if with_native:
        runs["  columnar: native lines to columns"] = lambda: _native_columns(pieces)
    runs.update({
        "  columnar: kernel": lambda: _kernel(built),
        "  columnar: candidates' Evaluations": lambda: _candidates(verdicts),
    })
    runs.update((f"  reader: {name}", run) for name, run in _readers(pieces).items())
    best = _best(runs, repeats)
    lines = sum(m.count(b"\n") + s.count(b"\n") for m, s in pieces.lines)
    print(f"\n{size:,} markets in {len(pieces.tasks)} pieces of about "
          f"{lines // max(1, len(pieces.tasks)):,} lines")
    for name, seconds in best.items():
        print(f"{name:44s} {seconds / size * 1e6:7.2f}")
    scalar = best["worker, scalar (whole piece)"]
    plain = best["worker, columnar, msgspec (whole piece)"]
    print(f"{'columnar (msgspec) / scalar speed':44s} {scalar / plain:7.2f}x")
    if with_native:
        fast = best["worker, columnar, native (whole piece)"]
        to_columns = best["  msgspec lines to Structs"] + best["  columnar: Structs to columns"]
        print(f"{'columnar (native) / scalar speed':44s} {scalar / fast:7.2f}x")
        print(f"{'worker, native / msgspec speed':44s} {plain / fast:7.2f}x")
        print(f"{'lines to columns, native / msgspec speed':44s} "
              f"{to_columns / best['  columnar: native lines to columns']:7.2f}x")


if __name__ == "__main__":
    main()
