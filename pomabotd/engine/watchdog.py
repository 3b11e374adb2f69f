"""Per-market timeouts inside the process that evaluates.

Before each evaluator call the evaluating thread stores the call's start time in its slot (one
store per market; where the executor can, its slots are visible to pomabotd). A watchdog thread
interrupts the evaluating thread with SIGALRM once that start is older than the limit; the
handler raises `MarketTimeout` only if the same call is still running outside the runtime's own
frames (`own_code`), so a late signal can never hit the runtime's own code or the next market.
Code that never returns to the interpreter (a C loop holding the GIL, a blocked SIGALRM) cannot
be interrupted: an executor that can kill its workers reads the same slots and kills that
worker (`engine/supervisor.py`).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import CodeType, FrameType
from typing import Any, Final

from pomabotd.domain.models import Market, Signal

__all__ = [
    "BUSY",
    "MARKET",
    "PID",
    "STEPS",
    "WORDS",
    "Evaluator",
    "MarketTimeout",
    "WorkerState",
    "arm",
    "current",
    "inline_state",
    "own_code",
]

Evaluator = Callable[[Market, Sequence[Signal], datetime], Any]
"""A strategy plugin: `pomabotd.evaluate_market`'s signature, any return checked at run time."""

#: The watchdog looks at the slot this often, at most; a timeout is noticed within one period.
_MAX_WATCH_INTERVAL_NS: Final = 50_000_000
_MIN_WATCH_INTERVAL_NS: Final = 2_000_000

#: Each worker's words in the shared slots the pool reads: its pid; the start (perf_counter
#: ns) of the market it evaluates now, 0 between markets; 1 while it runs a submission; and a
#: count of the steps it took (a submission begun or ended, a task done), so that the pool can
#: tell a worker that moves from one that stands still.
WORDS: Final = 4
PID: Final = 0
MARKET: Final = 1
BUSY: Final = 2
STEPS: Final = 3


class MarketTimeout(BaseException):
    """Raised inside the evaluator when its market ran past `timeout_ms`.

    A BaseException, so that a plugin's `except Exception` cannot swallow it.
    """


class WorkerState:
    """The evaluator and the timeout machinery of one evaluating thread.

    `slot` is the index of its market word in `slots`; its busy and steps words follow it.
    """

    __slots__ = (
        "busy", "evaluator", "interval_s", "main_ident", "slot", "slots", "target", "timeout_ns"
    )

    def __init__(self, evaluator: Evaluator, slots: memoryview, slot: int) -> None:
        self.evaluator = evaluator
        self.slots = slots
        self.slot = slot
        self.main_ident = threading.get_ident()
        self.timeout_ns = 5_000_000_000
        self.interval_s = _MAX_WATCH_INTERVAL_NS / 1e9
        self.target = 0
        #: Set while tasks are being evaluated: an idle worker's watchdog sleeps on it.
        self.busy = threading.Event()

    def begin(self) -> None:
        """A submission starts: the pool sees this worker took work."""
        self.busy.set()
        slots, slot = self.slots, self.slot
        slots[slot + BUSY - MARKET] = 1
        slots[slot + STEPS - MARKET] += 1

    def step(self) -> None:
        """One more task done: the pool sees this worker moves."""
        self.slots[self.slot + STEPS - MARKET] += 1

    def end(self) -> None:
        """The submission is over: the worker is idle again."""
        slots, slot = self.slots, self.slot
        slots[slot + STEPS - MARKET] += 1
        slots[slot + BUSY - MARKET] = 0
        self.busy.clear()

    def configure(self, timeout_ms: int) -> None:
        """Take the cycle's timeout; the watchdog period follows it."""
        self.timeout_ns = max(1, timeout_ms) * 1_000_000
        period = min(max(self.timeout_ns // 4, _MIN_WATCH_INTERVAL_NS), _MAX_WATCH_INTERVAL_NS)
        self.interval_s = period / 1e9


_STATE: WorkerState | None = None
#: Frames in which a timeout must never be raised: the loops between markets and the guarded
#: call of a retry. The watchdog signals again if the market is still running.
_OWN_CODE: set[CodeType] = set()


def own_code(*functions: Callable[..., Any]) -> None:
    """Declare runtime functions whose own frames a timeout must not interrupt."""
    _OWN_CODE.update(function.__code__ for function in functions)


def current() -> WorkerState | None:
    """This process's evaluating state, if one is armed."""
    return _STATE


def arm(state: WorkerState) -> None:
    """Make `state` this worker process's, and start its watchdog for good."""
    global _STATE
    _STATE = state
    signal.signal(signal.SIGALRM, _on_alarm)
    threading.Thread(target=_watch, args=(state,), name="watchdog", daemon=True).start()


@contextmanager
def inline_state(fn: Evaluator) -> Iterator[WorkerState]:
    """Evaluate in this process (`workers = 0`) with the same code as a worker.

    Timeouts need a signal handler, which only the main thread can own; elsewhere markets run
    without a time limit. A hang the interpreter cannot interrupt hangs the caller: that is the
    price of having no pool. One watchdog thread serves every such run, started with the first
    (starting a thread per cycle costs a short cycle much of its time on a busy machine).
    """
    global _STATE
    state = WorkerState(fn, memoryview(bytearray(8 * WORDS)).cast("q"), MARKET)
    state.slots[PID] = os.getpid()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    outer, _STATE = _STATE, state
    _inline_watchdog().watch(state)
    try:
        yield state
    finally:
        _inline_watchdog().watch(outer if outer is not None and outer.busy.is_set() else None)
        _STATE = outer
        signal.signal(signal.SIGALRM, previous)


class _InlineWatchdog:
    """The watchdog of runs in pomabotd's own process; idle (asleep) between them."""

    def __init__(self) -> None:
        self._state: WorkerState | None = None
        self._wake = threading.Event()
        threading.Thread(target=self._run, name="watchdog", daemon=True).start()

    def watch(self, state: WorkerState | None) -> None:
        """Watch `state` from now on (None: nothing)."""
        self._state = state
        if state is None:
            self._wake.clear()
        else:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            state = self._state
            if state is None:
                continue
            time.sleep(state.interval_s)
            _check(state)


_INLINE: _InlineWatchdog | None = None


def _inline_watchdog() -> _InlineWatchdog:
    global _INLINE
    if _INLINE is None:
        _INLINE = _InlineWatchdog()
    return _INLINE


def _watch(state: WorkerState) -> None:
    """A worker's watchdog: interrupt the evaluating thread while its current market is past
    the limit."""
    while True:
        state.busy.wait()  # an idle worker costs no CPU between cycles
        time.sleep(state.interval_s)
        _check(state)


def _check(state: WorkerState) -> None:
    started = state.slots[state.slot]
    if started and time.perf_counter_ns() - started > state.timeout_ns:
        state.target = started
        signal.pthread_kill(state.main_ident, signal.SIGALRM)


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    """Raise in the evaluator, and only there, for the very call the watchdog timed."""
    state = _STATE
    if state is None or frame is None or frame.f_code in _OWN_CODE:
        return
    target = state.target
    if target and state.slots[state.slot] == target:
        state.target = 0
        raise MarketTimeout
