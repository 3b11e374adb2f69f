"""Compare the local pool with a two-worker local Dask cluster on the same data, in one run.

Run from a checkout with pomabotd and its dask extra installed:

    python benchmarks/executors.py                 # 100,000 and 1,000,000 markets, the plugin
    python benchmarks/executors.py --sizes 100000  # a quicker subset

Both executors are started first (their start-up timed apart), with the same number of
workers. For each size the synthetic workload (about 3.3 signals per market) is written once to
two JSON-lines files, as `stress` writes it; then whole cycles (read, decode, evaluate, select,
write) run on those files with the built-in evaluator, taking turns between the two executors;
the best of `--repeats` runs of each is printed (one run each at a million markets) with its
peak memory (the cycle's `rss_mb`: summed PSS of pomabotd and every process it started: the
pool's workers, or the cluster's workers and their guards' processes), the Dask / local ratio,
and the CPU time of every one of those processes over the cycle: the difference over the
pieces the cycle was cut into is what Dask adds per piece, a figure a busy machine distorts
far less than wall times. Then the same for a strategy plugin that spends 5 ms of CPU per
market (`benchmarks/cpu_plugin.py`). The load average is
printed first and last; every figure is measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from pomabotd.cycle import InputLoader, Portfolio, run_cycle
from pomabotd.domain.models import RiskLimits
from pomabotd.engine.inputs import Reader
from pomabotd.engine.plan import plan_pieces
from pomabotd.engine.runtime import BatchSettings, Runtime
from pomabotd.log import configure_logging
from pomabotd.output import Ledger
from pomabotd.sources.jsonl import JsonlMarkets, JsonlSignals
from pomabotd.sources.registry import Sources
from pomabotd.sources.workload import generate_files

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)
#: The plugin, importable by the cluster's workers too (they inherit this process's path).
PLUGIN = "cpu_plugin:evaluate_5ms"


def _now() -> datetime:
    return datetime.now(UTC)


class _Run(NamedTuple):
    wall_s: float
    cpu_s: float
    rss_mb: float


def _cycle(runtime: Runtime, loader: InputLoader, scratch: Path) -> tuple[_Run, int]:
    """One cycle: its wall time, the CPU time of every process it ran on, its peak memory."""
    with tempfile.TemporaryDirectory(dir=scratch) as out, Ledger(Path(out)) as ledger:
        portfolio = Portfolio.recover(ledger)
        started = time.perf_counter()
        report = asyncio.run(run_cycle(runtime, loader, portfolio, ledger, RiskLimits(),
                                       as_of=AS_OF, clock=_now))
        wall = time.perf_counter() - started
    metrics = report.metrics
    cpu = metrics.cpu_percent / 100 * metrics.processing_time_ms / 1000
    return _Run(wall, cpu, metrics.rss_mb), metrics.markets_evaluated


def _files(runtime: Runtime, markets: int, scratch: Path) -> tuple[InputLoader, Path, Path]:
    paths = scratch / f"markets-{markets}.jsonl", scratch / f"signals-{markets}.jsonl"
    asyncio.run(generate_files(markets, 7, AS_OF, *paths, runtime.map))
    return Sources(JsonlMarkets(paths[0]), [JsonlSignals(paths[1])]), *paths


def _pieces(markets: Path, signals: Path, workers: int, batch_size: int) -> int:
    """How many pieces the engine cuts these files into (the same planner, the same call)."""
    fds = [os.open(path, os.O_RDONLY) for path in (markets, signals)]
    try:
        readers = [Reader(None, fd, os.fstat(fd).st_size) for fd in fds]
        return len(plan_pieces(*readers, workers=workers, batch_size=batch_size))
    finally:
        for fd in fds:
            os.close(fd)


def _settings(workers: int, executor: str, evaluator: str, batch_size: int) -> BatchSettings:
    return BatchSettings(workers=workers, batch_size=batch_size, max_concurrency=50,
                         timeout_ms=5000, retry_attempts=2, evaluator=evaluator,
                         executor=executor, dask_scheduler="local")


def _race(runtimes: dict[str, Runtime], loader: InputLoader, scratch: Path, size: int,
          repeats: int) -> dict[str, _Run]:
    """The best run of each runtime (by wall time; with the least CPU time of its runs),
    taking turns so that a slow spell of a shared machine hits both."""
    best: dict[str, _Run] = {}
    for _ in range(repeats):
        for name, runtime in runtimes.items():
            run, evaluated = _cycle(runtime, loader, scratch)
            assert evaluated == size, f"{name}: {evaluated} of {size} markets evaluated"
            known = best.get(name)
            if known is None:
                best[name] = run
            else:
                best[name] = _Run(min(known.wall_s, run.wall_s), min(known.cpu_s, run.cpu_s),
                                  known.rss_mb if known.wall_s <= run.wall_s else run.rss_mb)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**5, 10**6])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per executor below 1e6 markets; the best counts")
    parser.add_argument("--plugin-markets", type=int, default=2000,
                        help="markets of the 5 ms plugin's cycles (0: skip them)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))  # the plugin, here and in the workers
    configure_logging("WARNING")
    print(f"{args.workers} workers each, batch_size {args.batch_size}; cores {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    runtimes: dict[str, Runtime] = {}
    with tempfile.TemporaryDirectory(prefix="pomabotd-bench-") as directory:
        scratch = Path(directory)
        try:
            for name in ("local", "dask"):
                started = time.perf_counter()
                runtime = runtimes[name] = Runtime(_settings(
                    args.workers, name, "pomabotd:evaluate_market", args.batch_size))
                runtime.start()
                print(f"{name} started in {time.perf_counter() - started:.1f} s", flush=True)
            print(f"{'markets':>10} {'local /s':>10} {'dask /s':>10} {'dask/local':>10} "
                  f"{'local MB':>9} {'dask MB':>8} {'local CPU':>10} {'dask CPU':>9} "
                  f"{'pieces':>7} {'CPU/piece':>10}", flush=True)
            for size in args.sizes:
                loader, markets, signals = _files(runtimes["local"], size, scratch)
                best = _race(runtimes, loader, scratch, size,
                             args.repeats if size < 10**6 else 1)
                local, dask = best["local"], best["dask"]
                pieces = _pieces(markets, signals, args.workers, args.batch_size)
                added = (dask.cpu_s - local.cpu_s) / pieces * 1000
                print(f"{size:>10,} {size / local.wall_s:>10,.0f} {size / dask.wall_s:>10,.0f} "
                      f"{local.wall_s / dask.wall_s:>9.2f}x {local.rss_mb:>9.0f} "
                      f"{dask.rss_mb:>8.0f} {local.cpu_s:>9.2f}s {dask.cpu_s:>8.2f}s "
                      f"{pieces:>7} {added:>8.1f}ms", flush=True)
                for path in scratch.glob(f"*-{size}.jsonl"):
                    path.unlink()

            if args.plugin_markets:
                size = args.plugin_markets
                loader, markets, signals = _files(runtimes["local"], size, scratch)
                for name, runtime in runtimes.items():
                    runtime.reconfigure(_settings(args.workers, name, PLUGIN, args.batch_size))
                best = _race(runtimes, loader, scratch, size, args.repeats)
                pieces = _pieces(markets, signals, args.workers, args.batch_size)
                local, dask = best["local"], best["dask"]
                print(f"5 ms plugin, {size:,} markets in {pieces} pieces: local "
                      f"{local.wall_s:.2f} s ({size / local.wall_s:,.0f} /s, CPU "
                      f"{local.cpu_s:.2f} s), dask {dask.wall_s:.2f} s "
                      f"({size / dask.wall_s:,.0f} /s, CPU {dask.cpu_s:.2f} s), dask/local "
                      f"{local.wall_s / dask.wall_s:.2f}x; CPU per market "
                      f"{local.cpu_s / size * 1000:.2f} ms (local), "
                      f"{dask.cpu_s / size * 1000:.2f} ms (dask)", flush=True)
        finally:
            for runtime in runtimes.values():
                runtime.close()
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
