"""Signals the daemon obeys: SIGHUP reloads, SIGTERM and SIGINT stop, a second stop hurries.

The handlers, installed with `loop.add_signal_handler`, only set flags and events; the loop
acts on them between (or around) cycles.
"""

from __future__ import annotations

import asyncio
import signal

__all__ = ["STOP_SIGNALS", "SignalFlags"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalFlags:
    """What the signals asked for, and events the loop waits on."""

    def __init__(self) -> None:
        #: Set by any signal, so a sleeping loop wakes up and looks at the flags.
        self.wake = asyncio.Event()
        #: Set by the first stop signal: start no new cycle.
        self.stop = asyncio.Event()
        #: Set by the second stop signal: abandon the cycle in flight now.
        self.hurry = asyncio.Event()
        self.reload = False
        self.stop_signal: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Route SIGHUP, SIGTERM and SIGINT to this object on `loop`."""
        self._loop = loop
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_stop, signum)

    def remove(self) -> None:
        """Give the signals back to their default handling."""
        loop, self._loop = self._loop, None
        if loop is not None:
            for signum in (signal.SIGHUP, *STOP_SIGNALS):
                loop.remove_signal_handler(signum)

    def _on_hup(self) -> None:
        self.reload = True
        self.wake.set()

    def _on_stop(self, signum: int) -> None:
        if self.stop.is_set():
            self.hurry.set()
        else:
            self.stop_signal = signum
            self.stop.set()
        self.wake.set()
