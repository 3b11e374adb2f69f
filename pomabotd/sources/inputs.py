"""One cycle's input in one call, for callers without a long-lived loader (benchmarks, stress).

The daemon keeps a `Sources` from `pomabotd.sources.registry.open_sources` for its whole life;
this builds one for a single cycle and closes it again.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from pomabotd.config import load
from pomabotd.sources.base import CycleInput
from pomabotd.sources.registry import load_once
from pomabotd.sources.synthetic import NAME as SYNTHETIC

__all__ = ["SYNTHETIC", "CycleInput", "load_inputs"]


def load_inputs(
    markets: str, signals: str, as_of: datetime, *, synthetic_markets: int, seed: int
) -> CycleInput:
    """Load the sources named like `sources.markets` and `sources.signals` for one cycle.

    `synthetic` markets bring their own signals unless a signals file is named too. Every other
    `[sources]` key takes its default.
    """
    config = load(None, None, {
        "sources.markets": markets,
        "sources.signals": signals,
        "sources.synthetic_markets": synthetic_markets,
        "sources.seed": seed,
    })
    return asyncio.run(load_once(config, as_of))
