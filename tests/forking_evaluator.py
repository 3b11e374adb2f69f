"""A strategy plugin that starts a helper process and forgets it: on the first market each
worker evaluates, it forks a child that sleeps for a minute.

Each child's pid is appended to the file named by `$POMABOTD_TEST_CHILDREN` (when set), so a
test can check that none outlives the run that started it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime

from pomabotd import Evaluation, Market, Signal, evaluate_market

#: How long the forgotten child sleeps: far longer than any test waits.
SLEEP_S = 60.0
_forked = False


def evaluate(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Fork a sleeping child once per worker, then decide like the built-in evaluator."""
    global _forked
    if not _forked:
        _forked = True
        child = os.fork()
        if child == 0:
            try:
                time.sleep(SLEEP_S)
            finally:
                os._exit(0)
        record = os.environ.get("POMABOTD_TEST_CHILDREN")
        if record:
            with open(record, "a") as pids:
                pids.write(f"{child}\n")
    return evaluate_market(market, signals, as_of)
