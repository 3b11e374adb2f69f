"""How a command that is not the daemon stops on SIGTERM or SIGINT: what it was doing is
abandoned cleanly (nothing half-written), it says so on stderr, and it exits with 128 + the
signal's number."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from pomabotd.daemon.signals import STOP_SIGNALS

__all__ = ["stop_on_signal", "until_signal"]

_T = TypeVar("_T")


def until_signal(
    work: Callable[[], Coroutine[Any, Any, _T]],
    abandoned: str = "the cycle was abandoned, nothing of it written",
) -> _T:
    """Run `work()` on a new event loop; SIGTERM or SIGINT abandons it, and the command then
    exits with 128 + the signal's number, saying what was `abandoned`."""
    received: list[int] = []

    async def guarded() -> _T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            received.append(signum)
            task.cancel()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await work()
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if not received:
            raise
        _exit_stopped(received[0], abandoned)


class _Stopped(Exception):
    """A stop signal arrived during synchronous work guarded by `stop_on_signal`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def stop_on_signal(abandoned: str) -> Iterator[None]:
    """`until_signal` for synchronous work (reading input files, drawing plots): SIGTERM or
    SIGINT raises inside the work, whose own clean-up runs (no half-written file stays), and
    the command exits with 128 + the signal's number, saying what was `abandoned`."""

    def stop(signum: int, frame: object) -> None:
        raise _Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    except _Stopped as stopped:
        _exit_stopped(stopped.signum, abandoned)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_stopped(signum: int, abandoned: str) -> NoReturn:
    click.echo(f"stopped by {signal.Signals(signum).name}: {abandoned}", err=True)
    raise SystemExit(128 + signum) from None
