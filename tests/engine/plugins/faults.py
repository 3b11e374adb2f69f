"""Evaluators that fail in one way on the markets named in `TARGETS`, and work on the others.

Each runs inside real worker processes: the runtime must contain the damage to those markets.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pomabotd import Evaluation, Market, Signal, evaluate_market

#: The markets every plugin here misbehaves on.
TARGETS = frozenset({"m0003"})


def hang_python(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Spin forever in Python bytecode: a timeout can interrupt it inside the worker."""
    while market.id in TARGETS:
        pass
    return evaluate_market(market, signals, as_of)


def hang_blocked(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Block SIGALRM, then sleep: only killing the worker can reclaim it."""
    if market.id in TARGETS:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    return evaluate_market(market, signals, as_of)


def hang_in_c(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Loop in C holding the GIL: no handler and no other thread of the worker ever runs."""
    if market.id in TARGETS:
        sum(itertools.repeat(1, 10**15))
    return evaluate_market(market, signals, as_of)


def kill_self(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Kill the worker process, as a segfaulting extension would."""
    if market.id in TARGETS:
        os.kill(os.getpid(), signal.SIGKILL)
    return evaluate_market(market, signals, as_of)


def raise_error(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Raise, as a buggy strategy would."""
    if market.id in TARGETS:
        raise ValueError("boom")
    return evaluate_market(market, signals, as_of)


def garbage(market: Market, signals: Sequence[Signal], as_of: datetime) -> Any:
    """Return something that is not an Evaluation."""
    if market.id in TARGETS:
        return 42
    return evaluate_market(market, signals, as_of)


def kill_every(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Kill the worker on every market: a crash loop once the pool is up."""
    os.kill(os.getpid(), signal.SIGKILL)
    return evaluate_market(market, signals, as_of)
