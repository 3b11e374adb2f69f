"""Evaluators that fail in one way on the markets named in `TARGETS`, and work on the others.

Each runs inside real worker processes: the runtime must contain the damage to those markets.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

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


def invalid_field(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Return an Evaluation whose side is none of YES, NO and NONE (Structs are not validated
    when built, so only the runtime's check catches it)."""
    evaluation = evaluate_market(market, signals, as_of)
    if market.id in TARGETS:
        return msgspec.structs.replace(evaluation, side="MAYBE", failed_check=None)  # type: ignore[arg-type]
    return evaluation


def wrong_market(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """File the result under another market's id."""
    evaluation = evaluate_market(market, signals, as_of)
    if market.id in TARGETS:
        return msgspec.structs.replace(evaluation, market_id="m0004")
    return evaluation


def exits(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Call sys.exit, as a careless script-turned-plugin would."""
    if market.id in TARGETS:
        sys.exit(3)
    return evaluate_market(market, signals, as_of)


def kill_on_five(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Kill the worker on five adjacent markets: a bad streak, not a crash loop."""
    if market.id in {"m0003", "m0004", "m0005", "m0006", "m0007"}:
        os.kill(os.getpid(), signal.SIGKILL)
    return evaluate_market(market, signals, as_of)


def truncate_markets(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """On a target market, cut the markets file named by `POMABOTD_TEST_TRUNCATE` to its
    first 100 bytes, as a careless writer truncating it in place mid-cycle would."""
    if market.id in TARGETS:
        path = os.environ["POMABOTD_TEST_TRUNCATE"]
        if os.path.getsize(path) > 100:
            os.truncate(path, 100)
    return evaluate_market(market, signals, as_of)


def hang_every(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Loop in C holding the GIL on every market: a strategy whose every call blocks."""
    sum(itertools.repeat(1, 10**15))
    return evaluate_market(market, signals, as_of)


#: What `mixed` does to each market it misbehaves on.
MIXED = {
    "m0003": "killed",
    "m0005": "hang in C",
    "m0007": "exception",
    "m0009": "hang in Python",
}


def mixed(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Each fault on its own market (`MIXED`): a worker killed, a hang no signal interrupts,
    an exception, a hang in Python bytecode."""
    fault = MIXED.get(market.id)
    if fault == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "hang in C":
        sum(itertools.repeat(1, 10**15))
    elif fault == "exception":
        raise ValueError("boom")
    elif fault == "hang in Python":
        while True:
            pass
    return evaluate_market(market, signals, as_of)


def slow(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """The built-in evaluator, 20 ms a market: a cycle long enough to lose a worker in."""
    time.sleep(0.02)
    return evaluate_market(market, signals, as_of)


def held(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """Hold market m0003 while the file `hold` exists in `$POMABOTD_TEST_DIR`, after creating
    `started` there; evaluate the others as the built-in evaluator does."""
    if market.id == "m0003":
        directory = Path(os.environ["POMABOTD_TEST_DIR"])
        (directory / "started").touch()
        while (directory / "hold").exists():
            time.sleep(0.02)
    return evaluate_market(market, signals, as_of)


def slow_last(market: Market, signals: Sequence[Signal], as_of: datetime) -> Evaluation:
    """The built-in evaluator, with the last market (`m0119`) taking 0.4 s: the other workers
    finish their work and sit idle, watched, while the run waits for it."""
    if market.id == "m0119":
        time.sleep(0.4)
    return evaluate_market(market, signals, as_of)
