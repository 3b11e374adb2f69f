"""Source work off the event loop stops when the cycle awaiting it is cancelled."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from strategies import AS_OF

from pomabotd.sources.base import FetchContext
from pomabotd.sources.offload import checked, off_loop
from pomabotd.sources.synthetic import SyntheticSource
from pomabotd.sources.world import World


def test_cancelling_the_awaiting_task_stops_the_work_at_its_next_checkpoint() -> None:
    """The awaiting task is cancelled at once; the thread's endless work ends within a slice,
    and no thread is left working."""
    ended = threading.Event()

    def endless() -> None:
        try:
            for _ in checked(iter(int, 1)):
                time.sleep(0.0001)
        finally:
            ended.set()

    async def cancel_it() -> float:
        task = asyncio.create_task(off_loop(endless))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(cancel_it()) < 0.5
    assert ended.wait(5)


def test_results_and_errors_of_the_work_reach_the_awaiting_task() -> None:
    """What the work returns is returned; what it raises is raised in the awaiting task."""

    def fails() -> None:
        raise ValueError("bad record")

    async def both() -> int:
        with pytest.raises(ValueError, match="bad record"):
            await off_loop(fails)
        return await off_loop(sum, [1, 2, 3])

    assert asyncio.run(both()) == 6


def test_a_cancelled_synthetic_load_stops_generating_at_its_next_block() -> None:
    """The synthetic source's fetch of 2,000,000 markets (seconds of generation) cancelled
    mid-way: its generating thread ends within a block or two, not when the world is done."""

    def generating() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "pomabotd-world_jsonl"]

    async def cancel_it() -> None:
        source = SyntheticSource(World(seed=7, markets=2_000_000, news_quality=0.6))
        task = asyncio.create_task(source.fetch(FetchContext(as_of=AS_OF)))
        await asyncio.sleep(0.2)
        assert generating()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    cancelled = time.monotonic()
    for thread in generating():
        thread.join(5)
    assert not generating()
    assert time.monotonic() - cancelled < 2.0  # the whole world takes several seconds
