"""Measure end-to-end cycle throughput and peak memory: the scalar kernel, and the columnar
kernel with each decoder (msgspec and the native one), in-process and pooled.

Run from a checkout with pomabotd installed (with cargo on the PATH for the native decoder):

    python benchmarks/throughput.py                      # 1e3 1e4 1e5 1e6 markets
    python benchmarks/throughput.py --sizes 1000 100000  # a quicker subset

For each size the synthetic workload (about 3.3 signals per market) is written once to two
JSON-lines files, as `stress` writes it, then full cycles (read, decode, evaluate, mark, select,
encode, write) run on those files as file sources with `workers=0` and with the pool, each with
`batch.kernel` scalar (the baseline, measured in the same run) and columnar with
`batch.decoder` msgspec and native, in turn; the best of `--repeats` runs of each is printed
(one run each at a million markets) with its peak memory (the cycle's `rss_mb`: summed PSS of
pomabotd and its workers; both runtimes live in this one process, so the pool's figure also
carries what the in-process runs left in its heap: `stress` in a fresh process gives the
pool's own), and the ratios: native against msgspec and columnar against scalar (pool), pool
against in-process (native). Warm 1,000- and 10,000-market cycles with the default settings
are timed repeatedly at the end for each configuration (their median and least). Every figure
printed is measured here, none is assumed; the load average is printed first and last.
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

from pomabotd.cycle import InputLoader, Portfolio, run_cycle
from pomabotd.domain.models import RiskLimits
from pomabotd.engine.kernels import native
from pomabotd.engine.runtime import BatchSettings, Runtime
from pomabotd.log import configure_logging
from pomabotd.output import Ledger
from pomabotd.sources.jsonl import JsonlMarkets, JsonlSignals
from pomabotd.sources.registry import Sources
from pomabotd.sources.workload import generate_files

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)
#: The configurations compared: (name, batch.kernel, batch.decoder).
_WAYS = (("scalar", "scalar", "msgspec"), ("msgspec", "columnar", "msgspec"),
         ("native", "columnar", "native"))


def _now() -> datetime:
    return datetime.now(UTC)


def _cycle(runtime: Runtime, loader: InputLoader, scratch: Path) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory(dir=scratch) as out, Ledger(Path(out)) as ledger:
        portfolio = Portfolio.recover(ledger)
        started = time.perf_counter()
        report = asyncio.run(run_cycle(runtime, loader, portfolio, ledger, RiskLimits(),
                                       as_of=AS_OF, clock=_now))
        wall = time.perf_counter() - started
    return wall, report.metrics.rss_mb, report.metrics.markets_evaluated


def _files(runtime: Runtime, markets: int, scratch: Path) -> tuple[InputLoader, float]:
    """The workload written as `stress` writes it, and the file sources reading it."""
    started = time.perf_counter()
    paths = scratch / f"markets-{markets}.jsonl", scratch / f"signals-{markets}.jsonl"
    asyncio.run(generate_files(markets, 7, AS_OF, *paths, runtime.map))
    return Sources(JsonlMarkets(paths[0]), [JsonlSignals(paths[1])]), time.perf_counter() - started


def _settings(
    workers: int, batch_size: int, kernel: str, decoder: str = "msgspec"
) -> BatchSettings:
    return BatchSettings(workers=workers, batch_size=batch_size, max_concurrency=50,
                         timeout_ms=5000, retry_attempts=2,
                         kernel=kernel, decoder=decoder)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per configuration below 1e6 markets; the best counts")
    parser.add_argument("--warm-runs", type=int, default=30)
    args = parser.parse_args()
    configure_logging("WARNING")

    ways = [way for way in _WAYS if way[2] != "native" or native.available()]
    if len(ways) < len(_WAYS):
        print(f"native decoder: {native.problem()} ({native.BUILD_HINT}); msgspec only")
    print(f"pool: {args.workers} workers, batch_size {args.batch_size}; cores {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.2f}; markets/s, best of {args.repeats}")
    header = " ".join(f"{f'{where} {name}':>13}" for where in ("w=0", "pool")
                      for name, _, _ in ways)
    print(f"{'markets':>10} {header} {'nat/msg':>8} {'col/scal':>9} {'pool/w0':>8} "
          f"{'w=0 MB':>7} {'pool MB':>8}")
    with tempfile.TemporaryDirectory(prefix="pomabotd-bench-") as directory, \
            Runtime(_settings(0, args.batch_size, "scalar")) as inline, \
            Runtime(_settings(args.workers, args.batch_size, "scalar")) as pooled:
        scratch = Path(directory)
        for size in args.sizes:
            loader = _files(pooled, size, scratch)[0]
            # Take turns so that a slow spell of a shared machine hits every configuration.
            best: dict[tuple[int, str], tuple[float, float]] = {}
            for _ in range(args.repeats if size < 10**6 else 1):
                for workers, runtime in ((0, inline), (args.workers, pooled)):
                    for name, kernel, decoder in ways:
                        runtime.reconfigure(_settings(workers, args.batch_size, kernel, decoder))
                        wall, rss, evaluated = _cycle(runtime, loader, scratch)
                        assert evaluated == size, f"{evaluated} of {size} markets evaluated"
                        key = (workers, name)
                        if size / wall > best.get(key, (0.0, 0.0))[0]:
                            best[key] = (size / wall, rss)
            rates = " ".join(f"{best[workers, name][0]:>13,.0f}"
                             for workers in (0, args.workers) for name, _, _ in ways)
            fastest = ways[-1][0]
            pool = args.workers
            print(f"{size:>10,} {rates} "
                  f"{best[pool, fastest][0] / best[pool, 'msgspec'][0]:>7.2f}x "
                  f"{best[pool, fastest][0] / best[pool, 'scalar'][0]:>8.2f}x "
                  f"{best[pool, fastest][0] / best[0, fastest][0]:>7.2f}x "
                  f"{best[0, fastest][1]:>7.0f} {best[pool, fastest][1]:>8.0f}", flush=True)
            for path in scratch.glob(f"*-{size}.jsonl"):
                path.unlink()

        for size in (1000, 10_000):
            loader = _files(pooled, size, scratch)[0]
            for name, kernel, decoder in ways:
                pooled.reconfigure(_settings(args.workers, 100, kernel, decoder))
                _cycle(pooled, loader, scratch)
                walls = [_cycle(pooled, loader, scratch)[0] for _ in range(args.warm_runs)]
                print(f"warm {size:,}-market cycle, {name}: median "
                      f"{statistics.median(walls) * 1000:.2f} ms, least {min(walls) * 1000:.2f} "
                      f"ms over {args.warm_runs} runs", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
