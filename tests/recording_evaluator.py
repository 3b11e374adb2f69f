"""A strategy plugin that writes down everything it is shown, then decides like the built-in one.

Each call appends one JSON line (its process and session ids, the market, the signals and
`as_of`) to the file named by `$POMABOTD_TEST_RECORD`, so a test can prove what an evaluation
could and could not see.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime

import msgspec

from pomabotd import Evaluation, Market, Signal, evaluate_market

_ENCODER = msgspec.json.Encoder()


def evaluate(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Record the call with one write (appends from several workers never interleave)."""
    record = {"pid": os.getpid(), "session": os.getsid(0), "market": market,
              "signals": list(signals), "as_of": as_of}
    descriptor = os.open(os.environ["POMABOTD_TEST_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, _ENCODER.encode(record) + b"\n")
    finally:
        os.close(descriptor)
    return evaluate_market(market, signals, as_of)
