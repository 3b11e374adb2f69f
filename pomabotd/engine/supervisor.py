"""Fault policy: kill a stuck worker, corner the market that killed its worker.

Inside a worker, a market that raises, returns garbage or runs past `timeout_ms` is retried and
then reported with `error` set (`chunk.py`). What a worker cannot survive is handled here, over
whatever executor runs the tasks (`engine/executor/`), by what it can do:

- `watch`, on an executor that `kills`, kills a worker whose current market (or kernel pass)
  runs past its timeout plus a grace, in code the interpreter cannot interrupt, and a worker
  that stands still while work waits for it (`Executor.stalled`: stopped, idle holding the
  queue, or stuck between markets); its submission then fails like after a crash
  (`WorkerLost`), and what was lost runs again.
- `isolate` replays the chunks a dead worker took with it, one at a time, once the executor
  has recovered; a chunk that loses its worker again is evaluated one market per submission,
  so that only the culprit ends with `worker crashed` (or `timeout`, when it had to be
  killed).
- A cycle in which more markets than `_CRASHED_MARKETS` (or one in `_CRASH_LOOP_SHARE` of its
  markets) lose their worker when evaluated alone (they crash it, or hang until it is killed,
  which the error says) is failed with `PoolCrashLoopError`: the evaluator fails on everything,
  and each crash costs a recovery (a new local pool). It is counted over the whole cycle, so the
  verdict depends only on which markets crash, never on the chunking.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

import msgspec
import tenacity

from pomabotd.domain.models import Market
from pomabotd.engine.executor import Executor, WorkerLost
from pomabotd.engine.inputs import reader
from pomabotd.engine.kernels.scalar import failed_evaluation
from pomabotd.engine.protocol import ChunkOut, Job, Task
from pomabotd.errors import PoolCrashLoopError
from pomabotd.wire import decode_markets, decode_signals

__all__ = ["Supervisor", "stall_after_ns"]

#: A stuck worker is killed this long after its market's timeout (and at least this late).
_MIN_KILL_GRACE_NS: Final = 100_000_000
#: A worker standing still while work waits for it is killed after twice `timeout_ms`, and
#: never sooner than this: taking a queued call or finishing a task takes milliseconds.
_MIN_STALL_NS: Final = 2_000_000_000
_SUPERVISE_EVERY_S: Final = 0.05
_CRASHED_MARKETS: Final = 5
#: A market whose worker had to be killed ends as a timeout, as one interrupted in time does.
_HUNG: Final = "timeout"
_CRASH_LOOP_SHARE: Final = 1000
_OUTS: Final = msgspec.msgpack.Decoder(list[ChunkOut])
_LINES: Final = msgspec.json.Encoder()


def stall_after_ns(timeout_ms: int) -> int:
    """How long a worker may stand still while work waits for it: idle while submissions
    wait untaken, or inside a submission but in no market with no task finished."""
    return max(2 * timeout_ms * 1_000_000, _MIN_STALL_NS)


class _Lost(Exception):
    """A lone market's worker died; `error` says whether the supervisor killed it."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class Supervisor:
    """The fault policy of one run on `executor`, with its counts; `evaluator` is named when
    it crashes on everything."""

    def __init__(self, executor: Executor, job: Job, markets_total: int, evaluator: str) -> None:
        self.executor = executor
        self.evaluator = evaluator
        self.job = job
        self.timeouts = 0
        self.retries = 0
        self.crashed = 0
        #: Of those, the markets that hung until their worker was killed.
        self.hung = 0
        #: Why `watch` killed each worker it killed, one line each.
        self.kills: list[str] = []
        self._crash_cap = max(_CRASHED_MARKETS, -(-markets_total // _CRASH_LOOP_SHARE))

    async def watch(self) -> None:
        """Kill a worker stuck past its market's timeout plus a grace, or one that stood still
        for `stall_after_ns` while work waited for it (until cancelled), on an executor that
        can."""
        executor = self.executor
        if not executor.capabilities.kills:
            return
        timeout_ns = self.job.timeout_ms * 1_000_000
        deadline_ns = timeout_ns + max(timeout_ns, _MIN_KILL_GRACE_NS)
        stall_ns = stall_after_ns(self.job.timeout_ms)
        period = min(max(timeout_ns / 4e9, 0.005), _SUPERVISE_EVERY_S)
        while True:
            # Look before the first sleep too: a run shorter than `period` still finds a
            # worker that was seen stopped in earlier runs past its deadline.
            now = time.monotonic_ns()
            for worker, started in executor.busy():
                if now - started > deadline_ns and executor.kill(worker):
                    self.timeouts += 1
                    self.kills.append(
                        f"worker {worker} killed: its market ran {(now - started) / 1e9:.1f} s, "
                        f"past batch.timeout_ms = {self.job.timeout_ms}"
                    )
            for worker, why in executor.stalled(stall_ns):
                if executor.kill(worker):
                    self.timeouts += 1
                    self.kills.append(f"worker {worker} killed: it {why}")
            await asyncio.sleep(period)

    async def isolate(
        self, lost: list[int], task_of: Callable[[int, int], Task]
    ) -> list[ChunkOut]:
        """Replay chunks a dead worker took with it, one at a time, to corner the culprit;
        `task_of(index, only)` gives the task of chunk `index` (all its markets when `only` is
        -1). The executor must have recovered."""
        outs: list[ChunkOut] = []
        for index in sorted(lost):
            if len(lost) > 1:
                try:
                    data = await self._alone(task_of(index, -1))
                except _Lost:
                    pass
                else:
                    for out in _OUTS.decode(data):
                        self.retries += out.evaluated + out.failed  # each market ran again
                        outs.append(out)
                    continue
            outs.append(await self._market_by_market(index, task_of))
        return outs

    async def _market_by_market(self, index: int, task_of: Callable[[int, int], Task]) -> ChunkOut:
        """Evaluate a chunk one market per submission; a market that keeps killing its worker
        ends with `worker crashed` (or `timeout` when the supervisor had to kill it)."""
        job = self.job
        task = task_of(index, -1)
        markets, market_rejected = decode_markets(
            reader(job.markets).join(task.markets), job.markets.name
        )
        signal_lines = reader(job.signals).join(task.signals) if task.signals else b""
        signals, signal_rejected = decode_signals(signal_lines, job.signals.name)
        total = ChunkOut(
            index=index,
            market_rejected=market_rejected,
            signal_rejected=signal_rejected,
            signals=len(signals) + len(signal_rejected),
        )
        parts: list[bytes] = []
        policy = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(1 + job.retry_attempts),
            wait=tenacity.wait_none(),
            retry=tenacity.retry_if_exception_type(_Lost),
            reraise=True,
        )
        for position, market in enumerate(markets):
            single = task_of(index, position)
            try:
                async for attempt in policy:
                    with attempt:
                        self.retries += 1  # lost with its chunk's worker: every run is a rerun
                        data = await self._alone(single)
            except _Lost as lost:
                self.crashed += 1
                self.hung += lost.error == _HUNG
                if self.crashed > self._crash_cap:
                    raise PoolCrashLoopError(self._verdict()) from lost
                out = _failed_out(index, market, lost.error, task.keep, job.want_lines)
            else:
                out = _OUTS.decode(data)[0]
            parts.append(out.lines)
            total.candidates += out.candidates
            total.markets += out.markets
            total.kept += out.kept
            total.failures += out.failures
            total.evaluated += out.evaluated
            total.failed += out.failed
            total.retries += out.retries
            total.timeouts += out.timeouts
            total.eval_us += out.eval_us
        total.lines = b"".join(parts)
        return total

    def _verdict(self) -> str:
        """Why the cycle gives up: its markets crash their workers, or hang until killed (a
        hang is a timeout, never called a crash)."""
        crashed, hung = self.crashed, self.hung
        evaluator = self.evaluator
        if hung == crashed:
            return (f"{hung} markets hung past batch.timeout_ms = {self.job.timeout_ms} until "
                    f"their worker was killed in this cycle: evaluator {evaluator!r} seems to "
                    "hang on every market")
        if not hung:
            return (f"{crashed} markets killed their worker process in this cycle: evaluator "
                    f"{evaluator!r} seems to crash on every market")
        return (f"{crashed} markets lost their worker process in this cycle ({crashed - hung} "
                f"crashed it, {hung} hung past batch.timeout_ms = {self.job.timeout_ms} until "
                f"it was killed): evaluator {evaluator!r} seems to fail on every market")

    async def _alone(self, task: Task) -> bytes:
        """Run one task with nothing else in flight; a lost worker means recover and `_Lost`."""
        timeouts_before = self.timeouts
        try:
            return await self.executor.submit([task], self.job)
        except WorkerLost as lost:
            if lost.timed_out:
                self.timeouts += 1
            killed = self.timeouts > timeouts_before
            await self.executor.recover()
            raise _Lost(_HUNG if killed else "worker crashed") from None


def _failed_out(
    index: int, market: Market, error: str, keep: frozenset[str], want_lines: bool
) -> ChunkOut:
    evaluation = failed_evaluation(market, error)
    kept = market.id in keep
    return ChunkOut(
        index=index,
        lines=_LINES.encode(evaluation) + b"\n" if want_lines else b"",
        markets=[market] if kept else [],
        kept=[evaluation] if kept else [],
        failures=[(market.id, error)],
        failed=1,
    )
