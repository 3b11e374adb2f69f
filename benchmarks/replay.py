"""Measure `pomabotd replay` on 10,000 resolved markets end to end, against a plain cycle.

Run from a checkout with pomabotd installed:

    python benchmarks/replay.py                  # 10,000 markets, best of 5
    python benchmarks/replay.py --markets 50000  # another size
    python benchmarks/replay.py --write DIR      # only write the workload, to replay it yourself

The resolved workload is the seeded synthetic one (about 3 signals a market) turned into
resolved markets: each closes on its own day within a year, its signals are moved to precede its
evaluation time (`closes_at - 7 days`), about one in ten markets also gets a signal stamped after
it (which replay must drop), its 7-day price is the synthetic price, and its outcome is drawn
with that price as the YES probability. It is written to a temporary JSON-lines file.

Three figures are measured, alternately so that a slow spell of a shared machine hits all alike,
and the best of `--repeats` runs of each is printed:

- `replay`: reading the files, preparing, evaluating through a started runtime, selecting,
  settling and scoring (what `pomabotd replay` does once its pool is up);
- `cycle`: the baseline, one `run-once` cycle (evaluate, select, write) on the same markets as
  the engine sees them, with the same runtime;
- `command`: the whole `pomabotd replay --json` in a fresh process: interpreter start, imports,
  pool start, replay, output.

The load average is printed before and after, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from pomabotd.cycle import Portfolio, PreparedInput, run_cycle
from pomabotd.domain.models import RiskLimits, Signal
from pomabotd.engine.runtime import BatchSettings, Runtime
from pomabotd.output import Ledger
from pomabotd.replay.run import ReplayResult, replay
from pomabotd.replay.source import load_resolved
from pomabotd.replay.timeline import prepare_input
from pomabotd.sources import CycleInput
from pomabotd.sources.workload import generate

GENERATED_AT = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 7


def _now() -> datetime:
    return datetime.now(UTC)


def _resolved_workload(count: int, seed: int, directory: Path) -> tuple[Path, Path]:
    """Write `count` resolved markets and their signals as JSON lines; return the two paths."""
    rng = random.Random(seed)
    data = generate(count, seed, GENERATED_AT)
    by_market: dict[str, list[Signal]] = {}
    for signal in data.signals:
        by_market.setdefault(signal.market_id, []).append(signal)
    encoder = msgspec.json.Encoder()
    markets = bytearray()
    signals = bytearray()
    for market in data.markets:
        closes_at = GENERATED_AT + timedelta(days=rng.randint(8, 365), hours=rng.randint(0, 23))
        offset = closes_at - timedelta(days=DAYS) - GENERATED_AT
        yes = rng.random() * 100.0 < market.price
        record = msgspec.to_builtins(
            msgspec.structs.replace(market, closes_at=closes_at, outcome="YES" if yes else "NO",
                                    price=99.0 if yes else 1.0)
        )
        record["price_7d"] = market.price
        markets += encoder.encode(record) + b"\n"
        own = [msgspec.structs.replace(s, timestamp=s.timestamp + offset)
               for s in by_market.get(market.id, [])]
        if rng.random() < 0.1:
            own.append(Signal(market_id=market.id, type="authoritative", direction="up",
                              strength=5, timestamp=closes_at - timedelta(days=1)))
        for signal in own:
            signals += encoder.encode(signal) + b"\n"
    markets_path, signals_path = directory / "resolved.jsonl", directory / "signals.jsonl"
    markets_path.write_bytes(markets)
    signals_path.write_bytes(signals)
    return markets_path, signals_path


def _replay(runtime: Runtime, markets: Path, signals: Path) -> tuple[float, ReplayResult]:
    started = time.perf_counter()
    resolved = load_resolved(str(markets), str(signals), DAYS)
    result = asyncio.run(replay(runtime, resolved, DAYS, RiskLimits()))
    return time.perf_counter() - started, result


def _cycle(runtime: Runtime, workload: CycleInput, as_of: datetime) -> float:
    with tempfile.TemporaryDirectory() as out, Ledger(Path(out)) as ledger:
        started = time.perf_counter()
        asyncio.run(run_cycle(runtime, PreparedInput(workload), Portfolio.recover(ledger), ledger,
                              RiskLimits(), as_of=as_of, clock=_now))
        return time.perf_counter() - started


def _command(markets: Path, signals: Path, workers: int) -> float:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    environ["BATCH_WORKERS"] = str(workers)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pomabotd", "replay", "--markets", str(markets), "--signals",
         str(signals), "--as-of-days-before", str(DAYS), "--json"],
        env=environ, check=True, capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write", type=Path, metavar="DIR",
                        help="write resolved.jsonl and signals.jsonl to DIR and measure nothing")
    args = parser.parse_args()
    if args.write is not None:
        args.write.mkdir(parents=True, exist_ok=True)
        for path in _resolved_workload(args.markets, args.seed, args.write):
            print(f"wrote {path}")
        return

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        markets, signals = _resolved_workload(args.markets, args.seed, Path(scratch))
        print(f"{args.markets:,} resolved markets generated in "
              f"{time.perf_counter() - started:.2f} s ({markets.stat().st_size / 1e6:.1f} MB, "
              f"signals {signals.stat().st_size / 1e6:.1f} MB)")
        prepared = prepare_input(load_resolved(str(markets), str(signals), DAYS))
        baseline_input = CycleInput(markets=prepared.markets, markets_source="replay",
                                    signals=prepared.signals, signals_source="replay signals")
        settings = BatchSettings(workers=args.workers, batch_size=100, max_concurrency=50,
                                 timeout_ms=5000, retry_attempts=2)
        best = {"replay": float("inf"), "cycle": float("inf"), "command": float("inf")}
        result = None
        with Runtime(settings) as runtime:
            _replay(runtime, markets, signals)  # warm the pool
            for _ in range(args.repeats):
                wall, result = _replay(runtime, markets, signals)
                best["replay"] = min(best["replay"], wall)
                best["cycle"] = min(best["cycle"], _cycle(runtime, baseline_input, prepared.as_of))
                best["command"] = min(best["command"], _command(markets, signals, args.workers))
    assert result is not None
    report = result.report
    print(f"replayed {report.markets:,} markets ({report.failed} failed), "
          f"{report.signals:,} signals used, {report.signals_after_evaluation:,} dropped as late; "
          f"Brier {report.brier:.4f}, {report.tradeable:,} tradeable, {report.selected} selected")
    print(f"{args.workers} workers, best of {args.repeats}:")
    print(f"  replay   {best['replay']:.3f} s  {report.markets / best['replay']:>9,.0f} markets/s"
          f"  ({best['replay'] / best['cycle']:.2f}x the cycle)")
    print(f"  cycle    {best['cycle']:.3f} s  {report.markets / best['cycle']:>9,.0f} markets/s"
          "  (baseline)")
    print(f"  command  {best['command']:.3f} s  (whole `pomabotd replay --json` process; "
          f"target under 2 s)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
