"""A strategy plugin that never returns, so a test can signal a command mid-evaluation.

Its first call in a process creates the file named by `$POMABOTD_TEST_STARTED` (the test waits
for it), then every call sleeps until the worker running it is ended.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pomabotd import Evaluation, Market, Signal


def evaluate(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Say evaluation has started, then never finish."""
    Path(os.environ["POMABOTD_TEST_STARTED"]).touch()
    while True:
        time.sleep(1)
