"""A strategy plugin that holds every evaluation until the test lets it go, so that a test can
act on a command or daemon whose cycle is known to be in flight.

Each call creates the file named by `$POMABOTD_TEST_STARTED` (the test waits for it), then
waits until the file named by `$POMABOTD_TEST_RELEASE` exists and decides as the built-in
evaluator does; without that variable it never finishes, until its worker is ended.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pomabotd import Evaluation, Market, Signal, evaluate_market


def evaluate(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Say evaluation has started, wait for the release, then decide like the built-in."""
    Path(os.environ["POMABOTD_TEST_STARTED"]).touch()
    release = os.environ.get("POMABOTD_TEST_RELEASE")
    while release is None or not os.path.exists(release):
        time.sleep(0.02)
    return evaluate_market(market, signals, as_of)
