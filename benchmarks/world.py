"""Measure what generating the living world costs, against the stress workload's generator.

Run from a checkout with pomabotd installed:

    python benchmarks/world.py                    # 1,000,000 markets, best of 3
    python benchmarks/world.py --markets 100000   # another size
    python benchmarks/world.py --repeats 5

Both produce the same kind of output, market and signal JSON lines as the `synthetic` source
hands to a cycle, in one thread, by blocks of 32,768 markets:

- `world`: the living world as it stands at one moment (`sources.synthetic.world_jsonl`):
  every slot's current market, its price on its path, and the news of the last hours;
- `workload`: the fixed stress workload (`sources.workload.generate_jsonl`), the generator
  the `synthetic` source used before the world lived, which `stress` and the other
  benchmarks still measure cycles on.

They run alternately, so that a slow spell of a shared machine hits both alike; the best of
`--repeats` runs of each is printed, with the ratio world / workload (at most 1: the world
costs no more than the generator it replaced). The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pomabotd.sources.synthetic import world_jsonl
from pomabotd.sources.workload import generate_jsonl
from pomabotd.sources.world import World

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _timed(make: Callable[[], tuple[bytes, bytes]]) -> tuple[float, int, int]:
    """Seconds to make the lines, and how many market and signal lines they are."""
    started = time.perf_counter()
    markets, signals = make()
    elapsed = time.perf_counter() - started
    return elapsed, markets.count(b"\n"), signals.count(b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    world = World(seed=args.seed, markets=args.markets, news_quality=0.6)
    makers = {
        "world": lambda: world_jsonl(world, AS_OF),
        "workload": lambda: generate_jsonl(args.markets, args.seed, AS_OF),
    }
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    best: dict[str, tuple[float, int, int]] = {}
    for _ in range(args.repeats):
        for name, make in makers.items():
            figures = _timed(make)
            if name not in best or figures[0] < best[name][0]:
                best[name] = figures
    for name, (seconds, markets, signals) in best.items():
        print(f"{name:>9}: {markets:,} markets, {signals:,} signals "
              f"({signals / markets:.2f} a market) in {seconds:.2f} s "
              f"({markets / seconds:,.0f} markets/s)")
    ratio = best["world"][0] / best["workload"][0]
    print(f"world / workload: {ratio:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
