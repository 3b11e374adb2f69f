"""A strategy plugin whose module hangs when a worker imports it (a plugin that opens a
connection to a server that never answers, say): a pool with it never starts. In pomabotd's
own process, where the configuration is checked, it imports at once."""

from __future__ import annotations

import multiprocessing
import time

from pomabotd import evaluate_market

if multiprocessing.current_process().name != "MainProcess":
    time.sleep(3600)

evaluate = evaluate_market
