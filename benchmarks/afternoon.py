"""What an afternoon of the embedded default does: cycles on the living world, in process.

Run from a checkout with pomabotd installed:

    python benchmarks/afternoon.py                         # 12:00-18:00 UTC on 2026-06-01
    python benchmarks/afternoon.py --start 2026-07-14T12:00:00Z --hours 4 --every 120
    python benchmarks/afternoon.py --set strategy.prior=market

It runs the cycles a daemon with the default configuration would run, one every `--every`
seconds of simulated time (60, the daemon's default interval) for `--hours` hours, each as of
its own time, with `batch.workers = 0`, into a temporary ledger, and prints what they did:
positions opened, closes by exit reason, realized P&L, the resolved positions the halt rules
judged, whether a halt tripped, and the wall time it took. `--set KEY=VALUE` overrides a
configuration key, as a flag would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from pomabotd import app
from pomabotd.config import load
from pomabotd.cycle import Portfolio, run_cycle
from pomabotd.domain.research import halt_figures
from pomabotd.log import logger
from pomabotd.output import Ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2026-06-01T12:00:00Z")
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between cycles")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    flags = dict(item.split("=", 1) for item in args.set)
    config = load(None, {"BATCH_WORKERS": "0"}, flags)
    start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    cycles = int(args.hours * 3600 / args.every)
    logger.remove()
    print(f"load average before: {os.getloadavg()[0]:.2f}")

    async def afternoon(directory: Path) -> None:
        opened = 0
        reasons: Counter[str] = Counter()
        tripped: tuple[int, str | None] | None = None
        policy = app.halt_policy(config)
        with app.runtime(config) as runtime, Ledger(directory) as ledger:
            portfolio = Portfolio.recover(ledger)
            async with app.sources(config) as sources:
                started = time.perf_counter()
                for number in range(cycles):
                    when = start + timedelta(seconds=number * args.every)
                    report = await run_cycle(
                        runtime, sources, portfolio, ledger, config.risk_limits(), as_of=when,
                        clock=lambda when=when: when, halt=policy,
                    )
                    opened += len(report.opened)
                    reasons.update(close.exit_reason for close in report.closed)
                    if report.metrics.halted and tripped is None:
                        tripped = (report.metrics.cycle_id, report.metrics.halt_reason)
                elapsed = time.perf_counter() - started
        judged = halt_figures(portfolio.halt.window, policy.rules).resolved
        print(f"{cycles} cycles from {start:%Y-%m-%d %H:%M} UTC, one every {args.every:g} s, "
              f"in {elapsed:.1f} s")
        print(f"opened {opened}, closed {sum(reasons.values())}: "
              + ", ".join(f"{reason} {count}" for reason, count in reasons.most_common()))
        print(f"realized P&L {portfolio.realized_pnl_usd:,.2f} USD, "
              f"{len(portfolio.open_positions)} open; halt rules judged {judged} resolved, "
              + (f"halted at cycle {tripped[0]}: {tripped[1]}" if tripped else "no halt"))

    with tempfile.TemporaryDirectory(prefix="pomabotd-afternoon-") as scratch:
        asyncio.run(afternoon(Path(scratch)))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
