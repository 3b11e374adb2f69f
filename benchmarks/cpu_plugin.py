"""A strategy plugin for `benchmarks/executors.py`: the built-in evaluator after 5 ms of CPU.

It stands for a strategy whose cost per market is its own computation (a model, a
simulation), the case where more machines help: it holds the core, it does not sleep.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from pomabotd import Evaluation, Market, Signal, evaluate_market

#: CPU time spent per market before evaluating it.
COST_S = 0.005


def evaluate_5ms(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Spin for 5 ms of this thread's CPU time, then evaluate as pomabotd does."""
    until = time.thread_time() + COST_S
    while time.thread_time() < until:
        pass
    return evaluate_market(market, signals, as_of)
