"""An afternoon of the embedded default: cycles on the living world open, mark and close
positions for every reason a default configuration can close them."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

from strategies import AS_OF

from pomabotd import app
from pomabotd.config import load
from pomabotd.cycle import Portfolio, run_cycle
from pomabotd.domain.models import CloseEvent
from pomabotd.domain.research import halt_figures
from pomabotd.output import Ledger, read_ledger

#: Noon to six, a cycle every three minutes (the daemon's 60-second cycles see the same world
#: more often; three minutes keeps the test to seconds).
CYCLES = 120
EVERY = timedelta(minutes=3)


def test_an_afternoon_of_the_default_world_closes_positions_for_every_reason(tmp_path: Path):
    """Six simulated hours of the default configuration: positions open and close by
    stop_loss, profit_target, resolved and invalidated (converged cannot come first with the
    default limits), and the halt rules judge resolved positions."""
    config = load(None, {"BATCH_WORKERS": "0"}, {})
    limits, policy = config.risk_limits(), app.halt_policy(config)

    async def afternoon() -> Portfolio:
        with app.runtime(config) as runtime, Ledger(tmp_path) as ledger:
            portfolio = Portfolio.recover(ledger)
            async with app.sources(config) as sources:
                for number in range(CYCLES):
                    when = AS_OF + number * EVERY
                    await run_cycle(runtime, sources, portfolio, ledger, limits, as_of=when,
                                    clock=lambda when=when: when, halt=policy)
            return portfolio

    portfolio = asyncio.run(afternoon())
    events = read_ledger(tmp_path, history=True).history
    reasons = Counter(e.exit_reason for e in events if isinstance(e, CloseEvent))
    assert {"stop_loss", "profit_target", "resolved", "invalidated"} <= set(reasons)
    assert sum(reasons.values()) > 50
    assert halt_figures(portfolio.halt.window, policy.rules).resolved >= 1
