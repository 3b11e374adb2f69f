"""The pool's view of its workers: each busy slot is read once, so no healthy worker is killed."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec
import psutil

from pomabotd.engine.executor import worker
from pomabotd.engine.executor.pool import WorkerPool, busy_slots
from pomabotd.engine.protocol import ChunkOut, InputRef, Job, Task
from pomabotd.sources.workload import generate_jsonl

RACE_AS_OF: Final = datetime(2026, 1, 1, tzinfo=UTC)
_OUTS: Final = msgspec.msgpack.Decoder(list[ChunkOut])


class _ClearedBetweenReads:
    """Shared slots whose worker finishes its market right after the supervisor's first read
    of the start time: every later read of that start says 0, as the real array would."""

    def __init__(self, pid: int, started: int) -> None:
        self._values = [pid, started]
        self.reads = 0

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index: int) -> int:
        value = self._values[index]
        if index == 1:
            self.reads += 1
            self._values[1] = 0  # the worker clears its slot as soon as it was read
        return value


def test_a_slot_cleared_between_reads_is_not_a_market_started_at_zero() -> None:
    """A start time that turns to 0 while it is read is reported with the value read, once."""
    slots = _ClearedBetweenReads(pid=4242, started=123_456_789)
    assert busy_slots(slots) == [(4242, 123_456_789)]
    assert slots.reads == 1
    assert busy_slots(slots) == []


def test_idle_and_killed_workers_are_not_busy() -> None:
    """Only slots with a start time, of workers not already killed, are busy."""
    slots = [11, 0, 0, 0, 12, 500, 1, 3, 13, 900, 1, 8]  # pid, market start, busy, steps
    assert busy_slots(slots) == [(12, 500), (13, 900)]
    assert busy_slots(slots, killed={13}) == [(12, 500)]


def test_start_brings_up_every_worker_before_returning() -> None:
    """However quickly the first worker answers, `start` returns with all of them running:
    each start-up ping holds its worker until every worker has started."""
    pool = WorkerPool(3, "pomabotd:evaluate_market")
    try:
        pool.start()
        pids = pool.pids()
        assert len(set(pids)) == 3
        assert all(psutil.Process(pid).is_running() for pid in pids)
    finally:
        pool.close()
    assert psutil.Process().children(recursive=True) == []


#: The probe for the race, as small as it still reproduces it. Against the old `busy()`, which
#: read a start twice (nonzero, then 0 once the market had finished: "started at 0", which the
#: supervisor kills as hopelessly late), 10,000 markets gave 33-1,363 such reads in each of 30
#: runs at load 2.5-3.6 on 2 cores (0.7 s with the fix); 2,000 markets gave none in 2 of 30
#: runs and 500 in 1 of 20, when other work took a core for the short run. Left to share the
#: cores as the scheduler pleases, the worker and the reader met rarely: even 20,000 markets
#: often gave none. What makes it likely is how often a slot goes back to 0 while someone
#: reads it: markets evaluated one by one (the scalar path with every evaluation wanted clears
#: the slot after each), reads as fast as a thread can make them, and the worker and the
#: reader on cores of their own. The supervisor reads only every 5-50 ms, so the earlier probe
#: (a `run-once` of 50,000 markets one per chunk, a minute) caught it only now and then, and
#: not at all once `run-once` evaluated pieces with the kernel.
RACE_MARKETS = 10_000


def test_markets_finishing_while_busy_slots_are_read_never_look_started_at_zero(
    tmp_path: Path,
) -> None:
    """A worker evaluates 10,000 markets one by one, clearing its busy slot after each, while
    this test reads the pool's busy workers as fast as it can on another core: no read ever
    reports a market started at 0 (or in the future), which the supervisor would kill."""
    market_lines, _ = generate_jsonl(RACE_MARKETS, 7, RACE_AS_OF)
    markets = tmp_path / "markets.jsonl"
    markets.write_bytes(market_lines)
    (tmp_path / "signals.jsonl").write_bytes(b"")
    job = Job(as_of=RACE_AS_OF, markets=_ref(markets), signals=_ref(tmp_path / "signals.jsonl"),
              want_lines=True, timeout_ms=5000, retry_attempts=1, kernel="scalar")
    task = Task(index=0, markets=[(0, len(market_lines))], signals=[])
    cores = os.sched_getaffinity(0)
    pool = WorkerPool(1, "pomabotd:evaluate_market")
    bad: list[tuple[int, int]] = []
    reads = 0
    try:
        pool.start()
        if len(cores) >= 2:  # the reader on one core, the worker on another
            reader_core, worker_core, *_ = sorted(cores)
            os.sched_setaffinity(0, {reader_core})
            os.sched_setaffinity(pool.pids()[0], {worker_core})
        future = pool.submit(worker.run_submission, [task], job)
        while not future.done():
            for _ in range(1000):
                busy = pool.busy()
                now = time.monotonic_ns()  # the workers' clock; read after the slots
                bad += [(pid, started) for pid, started in busy if not 0 < started <= now]
            reads += 1000
        outs = _OUTS.decode(future.result())
    finally:
        os.sched_setaffinity(0, cores)
        pool.close()
    assert bad == []
    assert reads >= 1000  # read while the markets ran
    assert sum(out.evaluated for out in outs) == RACE_MARKETS
    assert psutil.Process().children(recursive=True) == []


def _ref(path: Path) -> InputRef:
    status = path.stat()
    return InputRef(name=path.name, path=str(path), size=status.st_size, dev=status.st_dev,
                    ino=status.st_ino)
