"""The worker side of the runtime: decode, evaluate and encode whole chunks of JSON lines.

A chunk arrives as the raw bytes of its market and signal lines, so the parent does almost
nothing per market; decoding (with the readers' own decoders), evaluation and encoding all happen
here. The same functions run inside pool workers and, with `workers = 0`, in the daemon itself.

Per-market timeouts: before each evaluator call the evaluating thread stores the call's start
time in its slot of a small shared array (one store per market). A watchdog thread interrupts the
evaluating thread with SIGALRM once that start is older than the limit; the handler raises
`MarketTimeout` only if the same call is still running inside the evaluator, so a late signal can
never hit the runtime's own code or the next market. Code that never returns to the interpreter
(a C loop holding the GIL, a blocked SIGALRM) cannot be interrupted: the parent reads the same
slots and kills that worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from itertools import groupby
from multiprocessing import forkserver
from operator import attrgetter
from types import FrameType
from typing import Any, Final, Literal, TypeVar

import msgspec
import numpy as np
import psutil
import tenacity

from pomabotd.domain.belief import Prior, prior
from pomabotd.domain.evaluate import evaluate_market, evaluate_tradeable
from pomabotd.domain.models import Evaluation, Market, Signal
from pomabotd.engine.kernels import BatchEvaluator, batch_form
from pomabotd.engine.kernels.columnar import PASSED, evaluations
from pomabotd.engine.kernels.columns import market_columns, market_rows, signal_columns
from pomabotd.wire import (
    Rejected,
    decode_markets,
    decode_signals,
    market_key,
    signal_key,
)

__all__ = [
    "ChunkOut",
    "Job",
    "MarketTimeout",
    "Task",
    "WorkerState",
    "describe_error",
    "die_with_parent",
    "evaluate_chunks",
    "failed_evaluation",
    "init_worker",
    "inline_worker",
    "ping",
    "run_submission",
]

Evaluator = Callable[[Market, Sequence[Signal], datetime], Any]
"""A strategy plugin: `pomabotd.evaluate_market`'s signature, any return checked at run time."""

#: The watchdog looks at the slot this often, at most; a timeout is noticed within one period.
_MAX_WATCH_INTERVAL_NS: Final = 50_000_000
_MIN_WATCH_INTERVAL_NS: Final = 2_000_000
_NO_SIGNALS: Final[tuple[Signal, ...]] = ()


class MarketTimeout(BaseException):
    """Raised inside the evaluator when its market ran past `timeout_ms`.

    A BaseException, so that a plugin's `except Exception` cannot swallow it.
    """


class _Garbage(Exception):
    """The evaluator returned something that is not an `Evaluation`."""


class Task(msgspec.Struct, frozen=True, array_like=True):
    """One chunk to evaluate: its lines as the source delivered them.

    `only` >= 0 evaluates just that market of the chunk and reports no rejected lines; the parent
    uses it to find which market kills its worker. `verify` says the signals were cut assuming
    market order: the chunk is evaluated only if every one of them is about its markets.
    """

    index: int
    markets: bytes
    signals: bytes
    keep: frozenset[str] = frozenset()
    only: int = -1
    verify: bool = False


class Job(msgspec.Struct, frozen=True, array_like=True):
    """What every chunk of one cycle shares. `kernel` and `prior` apply to the built-in
    evaluator only (`batch.kernel`, `strategy.prior`)."""

    as_of: datetime
    markets_source: str
    signals_source: str
    want_lines: bool
    timeout_ms: int
    retry_attempts: int
    kernel: Literal["columnar", "scalar"] = "columnar"
    prior: Prior = "fixed"


class ChunkOut(msgspec.Struct, array_like=True):
    """What a chunk gives back: only what selection and the outputs need.

    Rejected lines are numbered within the chunk's own bytes; the parent maps them back to the
    source's line numbers. `signals` counts the chunk's non-blank signal lines. `misrouted`
    says a `verify` chunk held a signal about another chunk's market, and nothing else is set.
    `columnar` counts the markets the columnar kernel evaluated (the others ran market by
    market).
    """

    index: int
    lines: bytes
    candidates: list[Evaluation]
    markets: list[Market]
    kept: list[Evaluation]
    market_rejected: list[Rejected]
    signal_rejected: list[Rejected]
    failures: list[tuple[str, str]]
    evaluated: int
    failed: int
    signals: int
    retries: int
    timeouts: int
    eval_us: float
    misrouted: bool = False
    columnar: int = 0


class WorkerState:
    """The evaluator and the timeout machinery of one evaluating thread."""

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
        #: Set while chunks are being evaluated: an idle worker's watchdog sleeps on it.
        self.busy = threading.Event()

    def configure(self, timeout_ms: int) -> None:
        """Take the cycle's timeout; the watchdog period follows it."""
        self.timeout_ns = max(1, timeout_ms) * 1_000_000
        period = min(max(self.timeout_ns // 4, _MIN_WATCH_INTERVAL_NS), _MAX_WATCH_INTERVAL_NS)
        self.interval_s = period / 1e9


class _Counts:
    __slots__ = ("retries", "timeouts")

    def __init__(self) -> None:
        self.retries = 0
        self.timeouts = 0


_STATE: WorkerState | None = None
#: The pool's shared count of workers that finished `init_worker`; `ping` waits on it.
_STARTED: Any = None
#: How often `ping` looks at that count while the pool starts.
_START_POLL_S: Final = 0.005
_PR_SET_PDEATHSIG_OPTION: Final = 1


def _prctl() -> Callable[..., int] | None:
    """libc's `prctl`, or None where there is none (the check of the parent still runs)."""
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


_PR_SET_PDEATHSIG: Final = _prctl()
_T = TypeVar("_T", Market, Signal)
_MARKETS: Final = msgspec.json.Decoder(list[Market])
_SIGNALS: Final = msgspec.json.Decoder(list[Signal])
_MARKET_ID: Final = attrgetter("market_id")
_LINES: Final = msgspec.json.Encoder()
_PACK: Final = msgspec.msgpack.Encoder()
_CHECKED: Final = msgspec.msgpack.Decoder(Evaluation)
_perf_ns: Final = time.perf_counter_ns
_force_setattr: Final = msgspec.structs.force_setattr


def init_worker(evaluator: str, slots: Any, counter: Any, owner: int) -> None:
    """Pool initializer: tie the worker's life to pomabotd's, import the evaluator, claim a
    slot, arm the watchdog.

    `slots` is a shared array of (pid, start_ns) pairs, `counter` a shared int handing out slots,
    `owner` the pid of the pomabotd process that owns the pool.
    """
    global _STATE, _STARTED
    from pomabotd.config import resolve_evaluator  # the single place that imports plugins

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C and shutdown
    die_with_parent(owner)
    fn = resolve_evaluator(evaluator)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    view = memoryview(slots).cast("B").cast("q")
    view[2 * index] = os.getpid()
    _STATE = WorkerState(fn, view, 2 * index + 1)
    _STARTED = counter
    signal.signal(signal.SIGALRM, _on_alarm)
    threading.Thread(target=_watch, args=(_STATE, None), name="watchdog", daemon=True).start()
    gc.freeze()  # start-up objects are never garbage; keep the collector off them


def die_with_parent(owner: int) -> None:
    """Make the kernel SIGKILL this worker when its parent, the fork server, exits.

    The fork server exits once every holder of its "alive" pipe is gone. Each forked process
    inherits that pipe so it could start processes of its own; a worker never does, so it
    closes its copy and leaves `owner` the only holder. A `kill -9` of pomabotd then ends the
    fork server, which ends every worker, whose exit lets the resource tracker see EOF too.
    If the fork server, or `owner`, is already gone when the request is made, the signal would
    never come: exit now instead.
    """
    server: Any = forkserver._forkserver
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        server._forkserver_alive_fd = None
        with contextlib.suppress(OSError):
            os.close(alive)
    if _PR_SET_PDEATHSIG is not None:
        _PR_SET_PDEATHSIG(_PR_SET_PDEATHSIG_OPTION, signal.SIGKILL, 0, 0, 0)
    try:
        fork_server = psutil.Process(os.getppid())
        owned = fork_server.ppid() == owner
    except psutil.Error:
        owned = False
    if not owned:
        os._exit(1)


def ping(workers: int, timeout_s: float) -> int:
    """Prove this worker started and imported the evaluator, then hold it until all `workers`
    of the pool have: the executor starts processes on demand, and only a ping still running
    makes it start another one for the next. Raises TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while _STARTED is None or _STARTED.value < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {_STARTED.value if _STARTED else 0} of {workers} "
                               "workers started")
        time.sleep(_START_POLL_S)
    return os.getpid()


def run_submission(tasks: list[Task], job: Job) -> bytes:
    """Pool entry point: evaluate several chunks, return them msgpack-encoded."""
    if _STATE is None:
        raise RuntimeError("worker used before init_worker ran")
    return evaluate_chunks(tasks, job, _STATE)


def evaluate_chunks(tasks: list[Task], job: Job, state: WorkerState) -> bytes:
    """Evaluate chunks with the collector paused (they allocate much, and leave no cycles).

    The built-in evaluator with the columnar kernel takes every chunk it can decode at once,
    in one kernel pass; the other chunks, and every chunk of a plugin, run market by market.
    """
    state.configure(job.timeout_ms)
    enabled = gc.isenabled()
    gc.disable()
    state.busy.set()
    try:
        batch = batch_form(state.evaluator) if job.kernel == "columnar" else None
        done = [None] * len(tasks) if batch is None else _columnar_chunks(tasks, job, batch)
        return _PACK.encode(
            [
                out if out is not None else _evaluate_chunk(task, job, state)
                for task, out in zip(tasks, done, strict=True)
            ]
        )
    finally:
        state.busy.clear()
        if enabled:
            gc.enable()


@contextmanager
def inline_worker(fn: Evaluator) -> Iterator[WorkerState]:
    """Evaluate in this process (`workers = 0`) with the same code as a worker.

    Timeouts need a signal handler, which only the main thread can own; elsewhere markets run
    without a time limit. A hang the interpreter cannot interrupt hangs the caller: that is the
    price of having no pool.
    """
    state = WorkerState(fn, memoryview(bytearray(16)).cast("q"), 1)
    state.slots[0] = os.getpid()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    stop = threading.Event()
    watchdog = threading.Thread(target=_watch, args=(state, stop), name="watchdog", daemon=True)
    global _STATE
    outer, _STATE = _STATE, state
    watchdog.start()
    try:
        yield state
    finally:
        stop.set()
        watchdog.join()
        _STATE = outer
        signal.signal(signal.SIGALRM, previous)


def failed_evaluation(market: Market, error: str) -> Evaluation:
    """The evaluation of a market that failed after its retries: prior belief, no side."""
    belief = prior(market.unknowns)
    return Evaluation(
        market_id=market.id,
        category=market.category,
        price=market.price,
        belief_low=belief.low,
        belief_high=belief.high,
        confidence=belief.confidence,
        side="NONE",
        edge=0.0,
        expected_edge=0.0,
        failed_check=None,
        reason=f"evaluation failed: {error}",
        signals_applied=0,
        signals_rejected=0,
        error=error,
    )


def describe_error(exc: BaseException) -> str:
    """`timeout`, or the exception as `Type: message`."""
    if isinstance(exc, MarketTimeout):
        return "timeout"
    if isinstance(exc, _Garbage):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _columnar_chunks(
    tasks: list[Task], job: Job, batch: BatchEvaluator
) -> list[ChunkOut | None]:
    """The chunks the columnar kernel evaluated, None for each one it left to the scalar path.

    A chunk is taken only if its lines decode in one call with the same typed decoders as the
    scalar path (so they passed the very same validation): any refused line, or any value out
    of range, leaves the chunk to the scalar path, which names each refusal's line and field.
    If the kernel raises, every chunk goes to the scalar path. Evaluations are built only for
    candidates, held markets and, when lines are wanted, every market.
    """
    outs: list[ChunkOut | None] = [None] * len(tasks)
    taken: list[tuple[int, Task, list[Market], list[Signal], dict[str, int]]] = []
    markets: list[Market] = []
    signals: list[Signal] = []
    rows: list[int] = []
    seen: dict[str, int] = {}
    for position, task in enumerate(tasks):
        if task.only >= 0:
            continue
        own_markets = _bulk(task.markets, _MARKETS)
        own_signals = _bulk(task.signals, _SIGNALS) if task.signals else []
        if own_markets is None or own_signals is None:
            continue
        index = {market.id: len(markets) + row for row, market in enumerate(own_markets)}
        if len(index) != len(own_markets):
            continue  # a repeated id: the scalar readers refuse the repeat by its line
        own_rows = market_rows(own_signals, index)
        if task.verify and -1 in own_rows:
            outs[position] = ChunkOut(
                index=task.index, lines=b"", candidates=[], markets=[], kept=[],
                market_rejected=[], signal_rejected=[], failures=[], evaluated=0, failed=0,
                signals=0, retries=0, timeouts=0, eval_us=0.0, misrouted=True,
            )
            continue
        seen.update(index)
        taken.append((position, task, own_markets, own_signals, index))
        markets += own_markets
        signals += own_signals
        rows += own_rows
    if not taken:
        return outs
    try:
        if len(seen) != len(markets):
            return outs  # chunks of one submission never share a market; be sure of it
        started = _perf_ns()
        columns = market_columns(markets)
        verdicts = batch(columns, signal_columns(signals, rows), job.as_of, job.prior)
        elapsed_us = (_perf_ns() - started) / 1000.0
        per_market_us = elapsed_us / len(markets)
        built = [
            _columnar_out(task, job, own_markets, len(own_signals), index, columns, verdicts,
                          per_market_us)
            for _, task, own_markets, own_signals, index in taken
        ]
    except Exception:  # the scalar path is the reference: it evaluates what the kernel cannot
        return [out if out is not None and out.misrouted else None for out in outs]
    for (position, *_), out in zip(taken, built, strict=True):
        outs[position] = out
    return outs


def _columnar_out(
    task: Task,
    job: Job,
    own_markets: list[Market],
    signal_count: int,
    index: dict[str, int],
    columns: Any,
    verdicts: Any,
    per_market_us: float,
) -> ChunkOut:
    """One chunk's share of a kernel pass, as the scalar path would report it."""
    first = index[own_markets[0].id]
    count = len(own_markets)
    keep = task.keep
    want_lines = job.want_lines
    if want_lines:
        wanted = np.arange(first, first + count)
    else:
        wanted = np.flatnonzero(verdicts.failed[first : first + count] == PASSED) + first
        if keep:
            held = [index[market_id] for market_id in keep if market_id in index]
            wanted = np.union1d(wanted, np.asarray(held, np.int64))
    built = evaluations(columns, verdicts, job.as_of, wanted.tolist(), per_market_us)
    records = columns.records
    candidates: list[Evaluation] = []
    chosen: list[Market] = []
    kept: list[Evaluation] = []
    for row, evaluation in zip(wanted.tolist(), built, strict=True):
        market = records[row]
        if evaluation.failed_check is None:
            candidates.append(evaluation)
            chosen.append(market)
        if keep and market.id in keep:
            kept.append(evaluation)
            if evaluation.failed_check is not None:
                chosen.append(market)
    return ChunkOut(
        index=task.index,
        lines=_LINES.encode_lines(built) if want_lines else b"",
        candidates=candidates,
        markets=chosen,
        kept=kept,
        market_rejected=[],
        signal_rejected=[],
        failures=[],
        evaluated=count,
        failed=0,
        signals=signal_count,
        retries=0,
        timeouts=0,
        eval_us=per_market_us * count,
        columnar=count,
    )


def _evaluate_chunk(task: Task, job: Job, state: WorkerState) -> ChunkOut:
    """Decode a chunk, evaluate each market once (retrying failures), keep what is needed."""
    markets, market_rejected = _decode(
        task.markets, job.markets_source, _MARKETS, decode_markets, unique_ids=True
    )
    if task.signals:
        signals, signal_rejected = _decode(
            task.signals, job.signals_source, _SIGNALS, decode_signals
        )
    else:
        signals, signal_rejected = [], []
    signal_count = len(signals) + len(signal_rejected)
    grouped = _group(signals)
    if task.verify and not _all_own(task, markets, market_rejected, grouped, signal_rejected):
        return ChunkOut(task.index, b"", [], [], [], [], [], [], 0, 0, 0, 0, 0, 0.0, True)
    if task.only >= 0:
        markets = markets[task.only : task.only + 1]
        market_rejected, signal_rejected = [], []
    by_market = grouped.get
    builtin = state.evaluator is evaluate_market
    fn = _evaluator(state, job)
    # The built-in evaluator's verdict alone decides whether a market is kept when no lines are
    # wanted; `evaluate_tradeable` reaches it without writing the sentences of dropped markets.
    screen = builtin and not job.want_lines
    prior_used = job.prior
    as_of = job.as_of
    slots = state.slots
    slot = state.slot
    keep = task.keep
    want_lines = job.want_lines
    produced: list[Evaluation] = []
    candidates: list[Evaluation] = []
    chosen: list[Market] = []
    kept: list[Evaluation] = []
    failures: list[tuple[str, str]] = []
    counts = _Counts()
    evaluated = 0
    eval_us = 0.0
    for market in markets:
        market_signals = by_market(market.id, _NO_SIGNALS)
        started = _perf_ns()
        slots[slot] = started
        try:
            if screen and not (keep and market.id in keep):
                screened = evaluate_tradeable(market, market_signals, as_of, prior=prior_used)
                if screened is None:
                    eval_us += (_perf_ns() - started) / 1000.0
                    evaluated += 1
                    continue
                evaluation = screened
            else:
                evaluation = fn(market, market_signals, as_of)
        except BaseException as exc:  # a plugin's SystemExit fails its market only
            slots[slot] = 0
            evaluation = _recover(state, fn, market, market_signals, as_of, exc, job, counts)
        else:
            finished = _perf_ns()
            slots[slot] = 0
            try:
                evaluation = _accepted(evaluation, market, builtin, finished - started)
            except _Garbage as garbage:
                evaluation = _recover(
                    state, fn, market, market_signals, as_of, garbage, job, counts
                )
        if evaluation.error is None:
            evaluated += 1
            eval_us += evaluation.elapsed_us
            if evaluation.failed_check is None:
                candidates.append(evaluation)
                chosen.append(market)
        else:
            failures.append((market.id, evaluation.error))
        if want_lines:
            produced.append(evaluation)
        if keep and market.id in keep:
            kept.append(evaluation)
            if evaluation.error is not None or evaluation.failed_check is not None:
                chosen.append(market)
    slots[slot] = 0
    return ChunkOut(
        index=task.index,
        lines=_LINES.encode_lines(produced) if want_lines else b"",
        candidates=candidates,
        markets=chosen,
        kept=kept,
        market_rejected=market_rejected,
        signal_rejected=signal_rejected,
        failures=failures,
        evaluated=evaluated,
        failed=len(failures),
        signals=signal_count,
        retries=counts.retries,
        timeouts=counts.timeouts,
        eval_us=eval_us,
    )


def _evaluator(state: WorkerState, job: Job) -> Evaluator:
    """The evaluator to call per market: a plugin as it is, the built-in with `job.prior`."""
    if state.evaluator is evaluate_market and job.prior != "fixed":
        return partial(evaluate_market, prior=job.prior)
    return state.evaluator


def _bulk(
    data: bytes,
    bulk: msgspec.json.Decoder[list[_T]],
    *,
    unique_ids: bool = False,
) -> list[_T] | None:
    """A chunk's lines decoded as one JSON array, or None if any line is refused or the
    lines are not one record each (or, with `unique_ids`, an id repeats)."""
    try:
        records = bulk.decode(b"[" + data.replace(b"\n", b",") + b"]")
    except msgspec.DecodeError:
        return None
    if len(records) != data.count(b"\n") + 1 or (unique_ids and not _unique_ids(records)):
        return None
    return records


def _decode(
    data: bytes,
    source: str,
    bulk: msgspec.json.Decoder[list[_T]],
    by_line: Callable[[bytes, str], tuple[list[_T], list[Rejected]]],
    *,
    unique_ids: bool = False,
) -> tuple[list[_T], list[Rejected]]:
    """Decode a chunk's lines as one JSON array (same types, same checks, one call), or, if
    that fails, line by line with the readers' own function so each refusal names its line.

    The count check catches the only way the two could disagree: a line that is not one
    record on its own (two records on a line, one record over two lines). Markets also leave
    a repeated id to the readers, who reject it.
    """
    records = _bulk(data, bulk, unique_ids=unique_ids)
    if records is None:
        return by_line(data, source)
    return records, []


def _all_own(
    task: Task,
    markets: list[Market],
    market_rejected: list[Rejected],
    grouped: dict[str, list[Signal]],
    signal_rejected: list[Rejected],
) -> bool:
    """True if every signal line of the chunk, valid or not, names one of its market lines."""
    ids = {market.id for market in markets}
    if market_rejected:  # a refused market line still owns its signals, as the planner routes
        ids.update(_line_keys(task.markets, market_rejected, market_key))
    if not ids.issuperset(grouped):
        return False
    return not signal_rejected or ids.issuperset(
        _line_keys(task.signals, signal_rejected, signal_key)
    )


def _line_keys(
    data: bytes, rejected: list[Rejected], key_of: Callable[[bytes], str | None]
) -> Iterator[str]:
    """The key of each rejected line that still has one."""
    lines = data.split(b"\n")
    for refused in rejected:
        if 0 < refused.line <= len(lines):
            key = key_of(lines[refused.line - 1])
            if key is not None:
                yield key


def _unique_ids(records: list[Any]) -> bool:
    return len({record.id for record in records}) == len(records)


def _group(signals: list[Signal]) -> dict[str, list[Signal]]:
    """Signals by market, input order kept; one step per run of a market's adjacent signals."""
    grouped: dict[str, list[Signal]] = {}
    for market_id, run in groupby(signals, _MARKET_ID):
        bucket = grouped.get(market_id)
        if bucket is None:
            grouped[market_id] = list(run)
        else:
            bucket.extend(run)
    return grouped


def _recover(
    state: WorkerState,
    fn: Evaluator,
    market: Market,
    signals: Sequence[Signal],
    as_of: datetime,
    first: BaseException,
    job: Job,
    counts: _Counts,
) -> Evaluation:
    """The rare path: retry a failed market with the named policy, then give up with an error."""
    if isinstance(first, MarketTimeout):
        counts.timeouts += 1
    error = describe_error(first)
    if job.retry_attempts > 0:
        policy = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(job.retry_attempts),
            wait=tenacity.wait_none(),
            retry=tenacity.retry_if_exception_type(BaseException),
            reraise=True,
        )
        try:
            for attempt in policy:
                with attempt:
                    counts.retries += 1
                    return _attempt(state, fn, market, signals, as_of, counts)
        except BaseException as exc:  # whatever the plugin raised fails its market
            error = describe_error(exc)
    return failed_evaluation(market, error)


def _attempt(
    state: WorkerState,
    fn: Evaluator,
    market: Market,
    signals: Sequence[Signal],
    as_of: datetime,
    counts: _Counts,
) -> Evaluation:
    """One guarded evaluator call; the slot is cleared before any other code can run."""
    slots = state.slots
    slot = state.slot
    started = _perf_ns()
    slots[slot] = started
    try:
        evaluation = fn(market, signals, as_of)
    except MarketTimeout:
        slots[slot] = 0
        counts.timeouts += 1
        raise
    except BaseException:
        slots[slot] = 0
        raise
    finished = _perf_ns()
    slots[slot] = 0
    return _accepted(evaluation, market, state.evaluator is evaluate_market, finished - started)


def _accepted(evaluation: object, market: Market, builtin: bool, elapsed_ns: int) -> Evaluation:
    """The evaluator's result once it is known to be a valid evaluation of `market`.

    The built-in evaluator is trusted; a plugin's result is checked field by field (a Struct
    is not validated when it is built), so one bad result fails its market, not the cycle.
    """
    if not isinstance(evaluation, Evaluation):
        raise _Garbage(f"evaluator returned {type(evaluation).__name__}, expected Evaluation")
    if not builtin:
        try:
            evaluation = _CHECKED.decode(_PACK.encode(evaluation))
        except msgspec.ValidationError as exc:
            raise _Garbage(f"evaluator returned an invalid Evaluation: {exc}") from None
        if evaluation.market_id != market.id:
            raise _Garbage(
                f"evaluator returned an evaluation of market {evaluation.market_id!r}"
            )
    # The evaluator's fresh Struct; setting the one field the domain cannot know in place
    # avoids a copy per market.
    _force_setattr(evaluation, "elapsed_us", elapsed_ns / 1000.0)
    return evaluation


def _watch(state: WorkerState, stop: threading.Event | None) -> None:
    """Interrupt the evaluating thread while its current market is past the limit."""
    slots = state.slots
    slot = state.slot
    while True:
        if stop is None:
            state.busy.wait()  # an idle worker costs no CPU between cycles
            time.sleep(state.interval_s)
        elif stop.wait(state.interval_s):
            return
        started = slots[slot]
        if started and _perf_ns() - started > state.timeout_ns:
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


#: Frames of the runtime itself, where a timeout must never be raised: the loop between
#: markets and the guarded call of a retry. The watchdog signals again if the market is
#: still running.
_OWN_CODE: Final = frozenset({_evaluate_chunk.__code__, _attempt.__code__})
