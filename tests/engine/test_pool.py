"""The pool's view of its workers: each busy slot is read once, so no healthy worker is killed."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from conftest import RunCli

from pomabotd.engine.pool import WorkerPool, busy_slots


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
    slots = [11, 0, 12, 500, 13, 900]
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


@pytest.mark.slow
def test_fifty_thousand_one_market_chunks_kill_no_healthy_worker(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """The probe that found the race: 50,000 markets one per chunk, two in flight, the
    built-in evaluator. No market is slow, so no timeout and no worker restart may appear."""
    config = tmp_path / "race.toml"
    config.write_text("[sources]\nsynthetic_markets = 50000\n")
    result = run_cli(
        "run-once", "--config", str(config), "--out", str(tmp_path / "out"), "--json",
        env={"BATCH_SIZE": "1", "BATCH_MAX_CONCURRENCY": "2", "BATCH_WORKERS": "2"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["markets_evaluated"] == 50000
    assert (summary["timeouts"], summary["worker_restarts"]) == (0, 0)
