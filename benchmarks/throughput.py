"""Measure end-to-end cycle throughput and peak memory: both kernels, in-process and pooled.

Run from a checkout with pomabotd installed:

    python benchmarks/throughput.py                      # 1e3 1e4 1e5 1e6 markets
    python benchmarks/throughput.py --sizes 1000 100000  # a quicker subset

For each size the synthetic workload (about 3 signals per market) is generated once as JSON-lines
bytes, then full cycles (decode, evaluate, mark, select, encode, write) run with `workers=0` and
with the pool, each with `batch.kernel` scalar (the baseline, measured in the same run) and
columnar, in turn, and the best of `--repeats` runs of each is printed (one run each at a
million markets), with the columnar/scalar and pool/in-process ratios. A warm 1,000-market cycle
is timed repeatedly at the end with each kernel. Every figure printed is measured here, none is
assumed; the load average is printed first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pomabotd.config import load
from pomabotd.cycle import Portfolio, PreparedInput, run_cycle
from pomabotd.domain.models import RiskLimits
from pomabotd.engine.runtime import BatchSettings, Runtime
from pomabotd.output import Ledger
from pomabotd.sources import CycleInput, open_sources

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _cycle(runtime: Runtime, workload: CycleInput) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as out, Ledger(Path(out)) as ledger:
        portfolio = Portfolio.recover(ledger)
        started = time.perf_counter()
        report = asyncio.run(run_cycle(runtime, PreparedInput(workload), portfolio, ledger,
                                       RiskLimits(), as_of=AS_OF, clock=_now))
        wall = time.perf_counter() - started
    return wall, report.metrics.rss_mb, report.metrics.markets_evaluated


def _synthetic(markets: int) -> CycleInput:
    """The workload encoded as JSON lines, exactly as the synthetic source delivers it."""
    config = load(None, None, {"sources.synthetic_markets": markets, "sources.seed": 7})

    async def synthetic() -> CycleInput:
        async with open_sources(config) as sources:
            return await sources.load(AS_OF)

    return asyncio.run(synthetic())


def _settings(workers: int, batch_size: int, kernel: str) -> BatchSettings:
    return BatchSettings(workers=workers, batch_size=batch_size, max_concurrency=50,
                         timeout_ms=5000, retry_attempts=2, kernel=kernel)  # type: ignore[arg-type]


_KERNELS = ("scalar", "columnar")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per configuration below 1e6 markets; the best counts")
    parser.add_argument("--warm-runs", type=int, default=30)
    args = parser.parse_args()

    print(f"pool: {args.workers} workers, batch_size {args.batch_size}; cores {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'markets':>10} {'gen s':>6} {'w=0 scal':>9} {'w=0 col':>9} {'pool scal':>10} "
          f"{'pool col':>9} {'col/scal':>9} {'pool/w0':>8} {'pool MB':>8}")
    with Runtime(_settings(0, args.batch_size, "scalar")) as inline, \
            Runtime(_settings(args.workers, args.batch_size, "scalar")) as pooled:
        for size in args.sizes:
            started = time.perf_counter()
            workload = _synthetic(size)
            generate_s = time.perf_counter() - started
            # Take turns so that a slow spell of a shared machine hits every configuration.
            best: dict[tuple[int, str], tuple[float, float]] = {}
            for _ in range(args.repeats if size < 10**6 else 1):
                for workers, runtime in ((0, inline), (args.workers, pooled)):
                    for kernel in _KERNELS:
                        runtime.reconfigure(_settings(workers, args.batch_size, kernel))
                        wall, rss, evaluated = _cycle(runtime, workload)
                        assert evaluated == size, f"{evaluated} of {size} markets evaluated"
                        key = (workers, kernel)
                        if size / wall > best.get(key, (0.0, 0.0))[0]:
                            best[key] = (size / wall, rss)
            w0s, w0c = best[0, "scalar"][0], best[0, "columnar"][0]
            ps, pc = best[args.workers, "scalar"][0], best[args.workers, "columnar"][0]
            print(f"{size:>10,} {generate_s:>6.1f} {w0s:>9,.0f} {w0c:>9,.0f} {ps:>10,.0f} "
                  f"{pc:>9,.0f} {pc / ps:>8.2f}x {pc / w0c:>7.2f}x "
                  f"{best[args.workers, 'columnar'][1]:>8.0f}", flush=True)
            del workload

    workload = _synthetic(1000)
    for kernel in _KERNELS:
        with Runtime(_settings(args.workers, 100, kernel)) as runtime:
            _cycle(runtime, workload)
            walls = [_cycle(runtime, workload)[0] for _ in range(args.warm_runs)]
        print(f"warm 1,000-market cycle, {kernel}: median {statistics.median(walls) * 1000:.2f} "
              f"ms, min {min(walls) * 1000:.2f} ms over {args.warm_runs} runs")


if __name__ == "__main__":
    main()
