"""A source's CPU work off the event loop, stopped when the cycle that awaits it is cancelled.

Generating, mapping or matching hundreds of thousands of records takes seconds; it runs in a
thread so that the daemon's loop keeps answering its status endpoint and its signals. A thread
cannot be interrupted from outside, so the work itself calls `checkpoint()` once per slice of
records: when the task awaiting `off_loop` is cancelled (a stop signal, `stop_timeout_s`
running out), the next checkpoint raises `Abandoned` and the thread ends within a slice.

The threads are daemon threads of their own, not the event loop's default executor, so that
neither `asyncio.run` (which joins that executor's threads when it closes the loop) nor the
interpreter's exit ever waits for work nobody awaits any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Final, TypeVar

__all__ = ["SLICE", "Abandoned", "checked", "checkpoint", "off_loop"]

#: Records between two checkpoints: a few milliseconds of work at most.
SLICE: Final = 1024

_T = TypeVar("_T")
_local = threading.local()


class Abandoned(BaseException):
    """The cycle that wanted this work was cancelled; raised inside the abandoned thread only
    (a BaseException, so that no `except Exception` of the work catches it)."""


def checkpoint() -> None:
    """Stop here (raise `Abandoned`) if the task awaiting this thread's work was cancelled."""
    cancelled: threading.Event | None = getattr(_local, "cancelled", None)
    if cancelled is not None and cancelled.is_set():
        raise Abandoned


def checked(records: Iterable[_T], every: int = SLICE) -> Iterator[_T]:
    """`records`, with a `checkpoint()` before every `every`-th one."""
    for position, record in enumerate(records):
        if position % every == 0:
            checkpoint()
        yield record


async def off_loop(work: Callable[..., _T], /, *args: object) -> _T:
    """`work(*args)` in a thread of its own; cancelling the awaiting task returns at once and
    makes the work stop at its next `checkpoint()`."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()
    cancelled = threading.Event()
    context = contextvars.copy_context()

    def deliver(result: _T | None, error: BaseException | None) -> None:
        if done.done():
            return  # cancelled meanwhile
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        _local.cancelled = cancelled
        result: _T | None = None
        error: BaseException | None = None
        try:
            result = context.run(work, *args)
        except Abandoned:
            return
        except BaseException as exc:  # handed to the awaiting task, which raises it
            error = exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=run, name=f"pomabotd-{getattr(work, '__name__', 'work')}",
                     daemon=True).start()
    try:
        return await done
    except asyncio.CancelledError:
        cancelled.set()
        raise
