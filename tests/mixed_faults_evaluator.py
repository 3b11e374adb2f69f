"""A strategy plugin that fails in a different way on each of four markets and decides like
the built-in evaluator on the others: m0001 raises, m0002 hangs in C holding the GIL (only a
kill reclaims its worker), m0003 runs out of memory, m0004 kills its worker."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Sequence
from datetime import datetime

from pomabotd import Evaluation, Market, Signal, evaluate_market

#: Each failing market and the error its evaluation ends with.
EXPECTED = {
    "m0001": "ValueError: boom",
    "m0002": "timeout",
    "m0003": "MemoryError: cannot allocate 64 GiB",
    "m0004": "worker crashed",
}


def evaluate(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Fail as `EXPECTED` says on its markets; decide like the built-in on the others."""
    if market.id == "m0001":
        raise ValueError("boom")
    if market.id == "m0002":
        sum(itertools.repeat(1, 10**15))
    if market.id == "m0003":
        raise MemoryError("cannot allocate 64 GiB")
    if market.id == "m0004":
        os.kill(os.getpid(), signal.SIGKILL)
    return evaluate_market(market, signals, as_of)
