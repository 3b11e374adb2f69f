"""Turn the configured market and signal sources into one cycle's raw input.

Every source hands the engine JSON-lines bytes, exactly as a file would: the engine forwards them
to the workers untouched, so the parent does near-zero work per market whatever the source.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec

from pomabotd.sources.jsonl import read_bytes
from pomabotd.sources.synthetic import generate_jsonl
from pomabotd.wire import Rejected

__all__ = ["SYNTHETIC", "CycleInput", "load_inputs"]

SYNTHETIC = "synthetic"


class CycleInput(msgspec.Struct, frozen=True, kw_only=True):
    """One cycle's markets and signals as JSON lines, with names for error messages.

    `rejected` holds records an adapter refused before they became lines (a live API object
    that cannot be mapped onto a market); file and synthetic sources never fill it.
    """

    markets: bytes
    markets_source: str
    signals: bytes
    signals_source: str
    rejected: tuple[Rejected, ...] = ()


def load_inputs(
    markets: str, signals: str, as_of: datetime, *, synthetic_markets: int, seed: int
) -> CycleInput:
    """Load the sources named by `sources.markets` and `sources.signals` for one cycle.

    `synthetic` markets bring their own signals unless a signals file is named too.
    """
    if markets == SYNTHETIC:
        market_lines, signal_lines = generate_jsonl(synthetic_markets, seed, as_of)
        markets_source = SYNTHETIC
    else:
        market_lines, signal_lines = read_bytes(Path(markets)), b""
        markets_source = markets
    if signals:
        signal_lines, signals_source = read_bytes(Path(signals)), signals
    else:
        signals_source = SYNTHETIC + " signals" if markets == SYNTHETIC else "no signals"
    return CycleInput(
        markets=market_lines,
        markets_source=markets_source,
        signals=signal_lines,
        signals_source=signals_source,
    )
