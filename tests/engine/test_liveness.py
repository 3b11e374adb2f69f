"""Workers that stop moving or leave processes behind, with real signals and real processes:
the runtime kills and replaces them, and nothing a worker started outlives the pool."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import msgspec
import psutil
import pytest

from pomabotd.engine.runtime import BatchSettings, RunResult, Runtime
from pomabotd.errors import PoolCrashLoopError

from .plugins import faults
from .test_runtime import AS_OF, MARKET_LINES, MARKETS, SIGNAL_LINES

#: A run that the fix lets finish in seconds; without it, it never would.
_BOUND_S = 40.0


def _settings(workers: int, **changes: object) -> BatchSettings:
    base = BatchSettings(workers=workers, batch_size=7, max_concurrency=50, timeout_ms=200,
                         retry_attempts=1, inline_below=0)
    return msgspec.structs.replace(base, **changes)


def _workers() -> list[psutil.Process]:
    """This process's pool workers: the children of its fork server."""
    return [proc for child in psutil.Process().children()
            for proc in child.children() if "forkserver" in " ".join(child.cmdline())]


def _evaluate(runtime: Runtime) -> RunResult:
    async def bounded() -> RunResult:
        run = runtime.evaluate(MARKET_LINES, "markets.jsonl", SIGNAL_LINES, "signals.jsonl",
                               AS_OF)
        return await asyncio.wait_for(run, _BOUND_S)

    return asyncio.run(bounded())


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stopped_idle_workers_are_killed_and_replaced() -> None:
    """Every idle worker stopped with SIGSTOP (so none takes work from the call queue): the
    run kills them after the stall deadline, rebuilds the pool and evaluates every market,
    counting the kills as timeouts and the replaced workers as restarts."""
    with Runtime(_settings(2)) as runtime:
        stopped = _workers()
        assert len(stopped) == 2
        for proc in stopped:
            proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        result = _evaluate(runtime)
        took = time.monotonic() - started
        assert result.markets_evaluated == len(MARKETS) and not result.failures
        assert result.worker_restarts >= 2 and result.timeouts >= 1
        assert result.worker_kills and all("stopped" in kill for kill in result.worker_kills)
        assert all(_gone(proc) for proc in stopped)
        assert took < _BOUND_S
        again = _evaluate(runtime)  # the new pool serves the next run as usual
        assert again.markets_evaluated == len(MARKETS) and again.worker_restarts == 0


def test_one_stopped_worker_of_two_is_replaced_while_runs_go_on() -> None:
    """One of two idle workers stopped with SIGSTOP: runs go on (or stall, if it held the
    call queue) until it has been seen stopped for the stall deadline; then it is killed and
    replaced, and the runs after it use a whole pool again."""
    with Runtime(_settings(2)) as runtime:
        proc = _workers()[0]
        proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + _BOUND_S
        restarts = 0
        while not _gone(proc):
            assert time.monotonic() < deadline, "the stopped worker was never replaced"
            result = _evaluate(runtime)
            assert result.markets_evaluated == len(MARKETS)
            restarts += result.worker_restarts
        after = _evaluate(runtime)  # killed at the end of a run, it is replaced by the next
        assert after.markets_evaluated == len(MARKETS)
        assert restarts + after.worker_restarts >= 2
        assert len(_workers()) == 2 and all(not _gone(worker) for worker in _workers())


def test_a_pause_between_runs_kills_no_idle_worker() -> None:
    """Workers idle between runs for longer than the stall deadline (2 s) are not "idle while
    work waited" when the next run's first look comes before they took its submissions: no
    worker is killed, none replaced (a daemon's interval, a benchmark's turns)."""
    settings = _settings(2, evaluator=f"{faults.__name__}:slow_last", timeout_ms=1000)
    with Runtime(settings) as runtime:
        first = _evaluate(runtime)
        assert first.markets_evaluated == len(MARKETS) and first.worker_kills == []
        for _ in range(2):
            time.sleep(2.4)  # watched idle at the end of the run, then left alone
            result = _evaluate(runtime)
            assert result.markets_evaluated == len(MARKETS)
            assert result.worker_kills == [] and result.worker_restarts == 0


def test_what_a_plugin_forks_ends_with_the_pool(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin forks a child that sleeps a minute in each worker: closing the runtime ends
    those children too, within two seconds, and no descendant of this process is left."""
    children = tmp_path / "children"
    monkeypatch.setenv("POMABOTD_TEST_CHILDREN", str(children))
    runtime = Runtime(_settings(2, evaluator="forking_evaluator:evaluate"))
    runtime.start()
    try:
        result = _evaluate(runtime)
        assert result.markets_evaluated == len(MARKETS)
        pids = [int(pid) for pid in children.read_text().split()]
        assert pids
        forked = [psutil.Process(pid) for pid in pids]
    finally:
        started = time.monotonic()
        runtime.close()
        closed_s = time.monotonic() - started
    deadline = time.monotonic() + 2.0
    while not all(_gone(proc) for proc in forked) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(_gone(proc) for proc in forked)
    assert psutil.Process().children(recursive=True) == []
    assert closed_s < 10


def test_a_plugin_that_hangs_on_every_market_is_called_a_hang_not_a_crash() -> None:
    """Every market hangs where only a kill reclaims its worker: after the crash cap the run
    fails saying the markets hung past batch.timeout_ms, not that they crashed."""
    settings = _settings(2, evaluator=f"{faults.__name__}:hang_every", retry_attempts=0,
                         timeout_ms=100)
    with Runtime(settings) as runtime, pytest.raises(PoolCrashLoopError) as failure:
        _evaluate(runtime)
    message = str(failure.value)
    assert "hung past batch.timeout_ms = 100 until their worker was killed" in message
    assert "seems to hang on every market" in message and "crash" not in message
