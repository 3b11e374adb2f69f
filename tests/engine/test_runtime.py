"""The evaluation runtime, through `Runtime`, with real worker processes and faulty plugins."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psutil
import pytest

from pomabotd.domain.models import Evaluation, Market, Signal
from pomabotd.engine import chunk as chunk_module
from pomabotd.engine.kernels import native
from pomabotd.engine.runtime import BatchSettings, RunResult, Runtime
from pomabotd.errors import PomabotdError, PoolCrashLoopError
from pomabotd.sources.workload import generate_jsonl
from pomabotd.wire import LinesFile

from .plugins import faults

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)
#: The decoders to run a test with: msgspec, and the native decoder where it is built.
DECODERS = ("msgspec", "native") if native.available() else ("msgspec",)
TARGET = "m0003"
_ENCODER = msgspec.json.Encoder()
_LINE = msgspec.json.Decoder(Evaluation)
_CATEGORIES = ("politics", "crypto", "sports", "weather", "other")
_TYPES = ("authoritative", "procedural", "quantitative", "interpretive", "speculative")


def _workload(count: int, seed: int = 3) -> tuple[list[Market], list[Signal]]:
    """Markets `m0000`... with 0-5 signals each; strong news makes a fair share tradeable."""
    rng = random.Random(seed)
    markets: list[Market] = []
    signals: list[Signal] = []
    for index in range(count):
        market_id = f"m{index:04d}"
        markets.append(
            Market(
                id=market_id,
                question=f"Will thing {index} happen?",
                category=_CATEGORIES[index % len(_CATEGORIES)],
                price=round(rng.uniform(1.0, 99.0), 1),
                liquidity=rng.choice((500.0, 5000.0, 50000.0)),
                closes_at=AS_OF + timedelta(days=30),
                unknowns=rng.choice((0, 0, 0, 1)),
            )
        )
        direction = rng.choice(("up", "down"))
        for _ in range(rng.randint(0, 5)):
            signals.append(
                Signal(
                    market_id=market_id,
                    type=rng.choice(_TYPES[:2]) if rng.random() < 0.7 else rng.choice(_TYPES),
                    direction=direction,
                    strength=rng.randint(3, 5),
                    timestamp=AS_OF - timedelta(hours=rng.randint(1, 48)),
                )
            )
    return markets, signals


def _jsonl(records: list[Market] | list[Signal]) -> bytes:
    return b"".join(_ENCODER.encode(record) + b"\n" for record in records)


MARKETS, SIGNALS = _workload(120)
MARKET_LINES = _jsonl(MARKETS)
SIGNAL_LINES = _jsonl(SIGNALS)
#: The same signals, newest first: not grouped by market, so routed line by line.
SHUFFLED_SIGNAL_LINES = _jsonl(sorted(SIGNALS, key=lambda s: s.timestamp, reverse=True))


def _settings(workers: int, **changes: object) -> BatchSettings:
    base = BatchSettings(
        workers=workers,
        batch_size=7,
        max_concurrency=50,
        timeout_ms=200,
        retry_attempts=1,
        inline_below=0,  # these small inputs must really go through the pool
    )
    return msgspec.structs.replace(base, **changes)


def _run(
    runtime: Runtime,
    markets: bytes = MARKET_LINES,
    signals: bytes = SIGNAL_LINES,
    keep: tuple[str, ...] = (),
) -> tuple[RunResult, list[Evaluation]]:
    chunks: list[bytes] = []
    result = runtime.evaluate_sync(
        markets,
        "markets.jsonl",
        signals,
        "signals.jsonl",
        AS_OF,
        keep=keep,
        on_lines=chunks.append,
    )
    lines = b"".join(chunks).splitlines()
    return result, [_LINE.decode(line) for line in lines]


def _timeless(evaluations: list[Evaluation]) -> list[Evaluation]:
    return [msgspec.structs.replace(e, elapsed_us=0.0) for e in evaluations]


def _plugin(name: str) -> str:
    return f"{faults.__name__}:{name}"


@pytest.fixture(scope="module")
def reference() -> tuple[RunResult, list[Evaluation]]:
    """The in-process run every other configuration must reproduce."""
    with Runtime(_settings(0)) as runtime:
        return _run(runtime, keep=("m0001", "m0002"))


class _SharedPool:
    """One two-worker runtime with the built-in evaluator, started when first asked for and
    reconfigured for each test: a pool start costs about a second of CPU, a run on a warm pool
    a fifth of that. Tests that kill, crash or hang workers, or count processes, go without."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None

    def on(self, settings: BatchSettings) -> Runtime:
        """The shared runtime, taking `settings` (two workers, the built-in evaluator)."""
        if self._runtime is None:
            self._runtime = Runtime(settings)
            self._runtime.start()
        else:
            self._runtime.reconfigure(settings)
        return self._runtime

    def close(self) -> None:
        """Stop the pool; the next `on` starts another."""
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


@pytest.fixture(scope="module")
def shared() -> Iterator[_SharedPool]:
    """The module's shared two-worker pool, closed when its tests are done."""
    pool = _SharedPool()
    yield pool
    pool.close()


@pytest.fixture
def alone(shared: _SharedPool) -> None:
    """No shared pool alive: for tests that kill workers or count this process's children."""
    shared.close()


@pytest.fixture
def pool2(shared: _SharedPool) -> Runtime:
    """The shared two-worker runtime, at the default test settings."""
    return shared.on(_settings(2))


@contextlib.contextmanager
def _runtime(shared: _SharedPool, settings: BatchSettings) -> Iterator[Runtime]:
    """A runtime with `settings`: the shared pool when they ask for its two workers and the
    built-in evaluator, else one of their own, closed afterwards."""
    if settings.workers == 2 and settings.evaluator == _settings(2).evaluator:
        yield shared.on(settings)
    else:
        with Runtime(settings) as runtime:
            yield runtime


def test_reference_run_evaluates_everything(reference: tuple[RunResult, list[Evaluation]]) -> None:
    """The in-process run evaluates every market, finds candidates and measures itself."""
    result, lines = reference
    assert result.markets_total == len(MARKETS) == result.markets_evaluated
    assert result.signals_total == len(SIGNALS)
    assert result.markets_failed == 0 and not result.failures and not result.rejected
    assert 0 < len(result.candidates) < len(MARKETS)
    assert all(c.error is None and c.failed_check is None for c in result.candidates)
    assert set(result.markets) == {c.market_id for c in result.candidates} | {"m0001", "m0002"}
    assert set(result.kept) == {"m0001", "m0002"}
    assert result.eval_us_total > 0 and all(e.elapsed_us > 0 for e in lines)
    assert result.peak_rss_mb > 10 and result.cpu_percent > 0 and result.wall_s > 0


def test_lines_come_in_input_order(pool2: Runtime) -> None:
    """`on_lines` receives one evaluation per market, in market input order, with a pool."""
    _, lines = _run(pool2)
    assert [e.market_id for e in lines] == [m.id for m in MARKETS]


@pytest.mark.parametrize(("batch_size", "max_concurrency"), [(1, 50), (7, 1), (100, 50), (7, 50)])
def test_pool_matches_in_process(
    pool2: Runtime,
    reference: tuple[RunResult, list[Evaluation]],
    batch_size: int,
    max_concurrency: int,
) -> None:
    """Two workers give the in-process evaluations whatever the chunking and concurrency."""
    pool2.reconfigure(_settings(2, batch_size=batch_size, max_concurrency=max_concurrency))
    result, lines = _run(pool2, keep=("m0001", "m0002"))
    expected, expected_lines = reference
    assert _timeless(lines) == _timeless(expected_lines)
    assert _timeless(result.candidates) == _timeless(expected.candidates)
    assert result.markets == expected.markets
    assert _timeless(list(result.kept.values())) == _timeless(list(expected.kept.values()))
    assert result.worker_restarts == 0


def test_one_worker_and_unsorted_signals_match(
    reference: tuple[RunResult, list[Evaluation]],
) -> None:
    """One worker, and signals not grouped by market, still give the same evaluations."""
    with Runtime(_settings(1, batch_size=100)) as runtime:
        result, lines = _run(runtime, signals=SHUFFLED_SIGNAL_LINES, keep=("m0001", "m0002"))
    expected, expected_lines = reference
    assert _timeless(lines) == _timeless(expected_lines)
    assert [c.market_id for c in result.candidates] == [c.market_id for c in expected.candidates]
    assert result.signals_total == len(SIGNALS)


def test_without_on_lines_only_candidates_come_back(pool2: Runtime) -> None:
    """Without `on_lines` the run still counts every market and returns its candidates."""
    pool2.reconfigure(_settings(2))
    result = pool2.evaluate_sync(MARKET_LINES, "m", SIGNAL_LINES, "s", AS_OF)
    assert result.markets_evaluated == len(MARKETS)
    assert result.candidates and not result.kept


@pytest.mark.parametrize("workers", [0, 2])
def test_progress_counts_up_to_every_market(shared: _SharedPool, workers: int) -> None:
    """`on_progress` reports rising counts in the parent against an estimated total (pieces
    are cut by bytes), ending at every market done of the exact total."""
    calls: list[tuple[int, int]] = []
    with _runtime(shared, _settings(workers, batch_size=7, max_concurrency=1)) as runtime:
        result = runtime.evaluate_sync(
            MARKET_LINES, "m", SIGNAL_LINES, "s", AS_OF, on_progress=lambda *c: calls.append(c)
        )
    assert len(calls) > 1
    assert all(done <= total for done, total in calls)
    assert calls[-1] == (result.markets_total, result.markets_total)
    done = [d for d, _ in calls]
    assert done == sorted(set(done)) and done[-1] == len(MARKETS)


def test_progress_counts_refused_and_crashed_markets() -> None:
    """Markets refused while planning, and markets whose worker died, still count as done."""
    calls: list[tuple[int, int]] = []
    with Runtime(_settings(2, evaluator=_plugin("kill_self"), retry_attempts=0)) as runtime:
        result = runtime.evaluate_sync(
            MARKET_LINES[: MARKET_LINES.index(b"m0040")] + BAD_MARKETS,
            "m",
            SIGNAL_LINES,
            "s",
            AS_OF,
            on_progress=lambda *c: calls.append(c),
        )
    assert result.failures == [(TARGET, "worker crashed")]
    assert calls[-1] == (result.markets_total, result.markets_total) == (47, 47)


def test_progress_on_empty_input_reports_zero_of_zero() -> None:
    """An empty cycle still tells the progress hook it is finished."""
    calls: list[tuple[int, int]] = []
    with Runtime(_settings(0)) as runtime:
        runtime.evaluate_sync(b"", "m", b"", "s", AS_OF, on_progress=lambda *c: calls.append(c))
    assert calls == [(0, 0)]


BAD_MARKETS = (
    b"\n".join(
        [
            _ENCODER.encode(MARKETS[0]),  # line 1
            b"",  # line 2: blank, skipped
            b"{not json",  # line 3
            b'{"question": "no id", "price": 5, "liquidity": 10}',  # line 4
            _ENCODER.encode(msgspec.structs.replace(MARKETS[1], price=50.0)).replace(
                b'"price":50.0', b'"price":150.0'
            ),  # line 5: price out of range, caught by the worker
            _ENCODER.encode(MARKETS[2]),  # line 6
            _ENCODER.encode(MARKETS[0]),  # line 7: duplicate id
            b'{"id": "spaced", "question": "q", "price": 40, "liquidity": 2000}',  # line 8
        ]
    )
    + b"\n"
)
BAD_SIGNALS = b"\n".join(
    [
        _ENCODER.encode(SIGNALS[0]),  # line 1
        b'{"market_id": "m0000", "type": "rumour"}',  # line 2: bad type, caught by the worker
        b"[1, 2]",  # line 3: no market id
        _ENCODER.encode(msgspec.structs.replace(SIGNALS[0], market_id="unknown")),  # line 4
    ]
)


@pytest.mark.parametrize("workers", [0, 2])
def test_rejected_lines_keep_source_line_numbers(shared: _SharedPool, workers: int) -> None:
    """Refused records name the source, the original line number and the field."""
    with _runtime(shared, _settings(workers, batch_size=2)) as runtime:
        result, lines = _run(runtime, BAD_MARKETS, BAD_SIGNALS)
    where = [(r.source, r.line, r.field) for r in result.rejected]
    assert where == [
        ("markets.jsonl", 3, None),
        ("markets.jsonl", 4, "id"),
        ("markets.jsonl", 5, "price"),
        ("markets.jsonl", 7, "id"),
        ("signals.jsonl", 2, "type"),
        ("signals.jsonl", 3, "$"),
    ]
    assert [e.market_id for e in lines] == ["m0000", "m0002", "spaced"]
    assert result.markets_total == 7 and result.markets_evaluated == 3
    assert result.signals_total == 4


def _fault_run(evaluator: str, **changes: object) -> tuple[RunResult, list[Evaluation], float]:
    started = time.perf_counter()
    with Runtime(_settings(2, evaluator=_plugin(evaluator), **changes)) as runtime:
        result, lines = _run(runtime, MARKET_LINES[: MARKET_LINES.index(b"m0040")])
    return result, lines, time.perf_counter() - started


def _only_target_failed(result: RunResult, lines: list[Evaluation], error: str) -> None:
    assert result.failures == [(TARGET, error)]
    assert result.markets_failed == 1 and result.markets_evaluated == 39
    (failed,) = [e for e in lines if e.error is not None]
    assert failed.market_id == TARGET and failed.side == "NONE"
    assert failed.failed_check is None and failed.reason == f"evaluation failed: {error}"
    assert failed.price == MARKETS[3].price and failed.category == MARKETS[3].category
    assert [e.market_id for e in lines] == [m.id for m in MARKETS[:40]]


def test_python_hang_times_out_inside_the_worker() -> None:
    """A market spinning in Python is interrupted after `timeout_ms`; no worker is replaced."""
    result, lines, took = _fault_run("hang_python")
    _only_target_failed(result, lines, "timeout")
    assert result.timeouts == 2 and result.retries == 1
    assert result.worker_restarts == 0
    assert took < 10


@pytest.mark.slow
@pytest.mark.parametrize("evaluator", ["hang_blocked", "hang_in_c"])
def test_uninterruptible_hang_is_killed(evaluator: str) -> None:
    """A market the interpreter cannot interrupt gets its worker killed and ends as timeout."""
    result, lines, took = _fault_run(evaluator)
    _only_target_failed(result, lines, "timeout")
    assert result.worker_restarts >= 2 and result.timeouts >= 2
    assert took < 20


def test_worker_crash_blames_only_the_culprit() -> None:
    """A market that kills its worker ends as `worker crashed`; the pool is rebuilt."""
    result, lines, _ = _fault_run("kill_self")
    _only_target_failed(result, lines, "worker crashed")
    assert result.worker_restarts >= 2 and result.retries >= 1


def test_exception_text_becomes_the_error() -> None:
    """A raising evaluator is retried, then its market carries the exception text."""
    result, lines, _ = _fault_run("raise_error", retry_attempts=2)
    _only_target_failed(result, lines, "ValueError: boom")
    assert result.retries == 2 and result.worker_restarts == 0


def test_garbage_return_becomes_the_error() -> None:
    """An evaluator returning a non-Evaluation fails that market with a clear error."""
    result, lines, _ = _fault_run("garbage", retry_attempts=0)
    _only_target_failed(result, lines, "evaluator returned int, expected Evaluation")
    assert result.retries == 0


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(
    ("evaluator", "error"),
    [
        ("invalid_field",
         "evaluator returned an invalid Evaluation: Invalid enum value 'MAYBE' - at `$.side`"),
        ("wrong_market", "evaluator returned an evaluation of market 'm0004'"),
        ("exits", "SystemExit: 3"),
    ],
)
def test_a_bad_plugin_result_fails_only_its_market(workers: int, evaluator: str, error: str):
    """Invalid fields, another market's id, or sys.exit fail that market; the cycle completes."""
    settings = _settings(workers, evaluator=_plugin(evaluator), retry_attempts=0)
    with Runtime(settings) as runtime:
        result, lines = _run(runtime, keep=(TARGET,))
    assert result.failures == [(TARGET, error)]
    assert result.kept[TARGET].error == error
    assert [e.market_id for e in lines] == [m.id for m in MARKETS]
    assert result.markets_evaluated == len(MARKETS) - 1


@pytest.mark.parametrize("batch_size", [4, 7, 120])
def test_crash_cap_does_not_depend_on_chunking(batch_size: int) -> None:
    """Five markets that kill their worker fail alone, whatever the chunk size."""
    settings = _settings(2, evaluator=_plugin("kill_on_five"), retry_attempts=0,
                         batch_size=batch_size)
    with Runtime(settings) as runtime:
        result, _ = _run(runtime)
    assert sorted(result.failures) == [(f"m000{i}", "worker crashed") for i in range(3, 8)]
    assert result.markets_evaluated == len(MARKETS) - 5


def test_in_process_timeout() -> None:
    """With `workers = 0` a Python hang is still interrupted in the main thread."""
    with Runtime(_settings(0, evaluator=_plugin("hang_python"), retry_attempts=0)) as runtime:
        result, lines = _run(runtime, MARKET_LINES[: MARKET_LINES.index(b"m0040")])
    _only_target_failed(result, lines, "timeout")


def test_module_that_kills_on_import_is_a_crash_loop(alone: None) -> None:
    """A plugin that kills every fresh worker fails start-up with a clear message."""
    spec = f"{faults.__name__.rsplit('.', 1)[0]}.dies_on_import:evaluate_market"
    runtime = Runtime(_settings(2, evaluator=spec))
    with pytest.raises(PoolCrashLoopError, match="died 3 times in a row"):
        runtime.start()
    runtime.close()
    assert psutil.Process().children(recursive=True) == []


def test_crash_on_every_market_is_a_crash_loop() -> None:
    """When every market kills its worker the cycle fails instead of spinning."""
    with (
        Runtime(_settings(2, evaluator=_plugin("kill_every"), retry_attempts=0)) as runtime,
        pytest.raises(PoolCrashLoopError, match="killed their worker process in this cycle"),
    ):
        _run(runtime)


def test_close_leaves_no_child_process(alone: None) -> None:
    """After `close` neither workers nor multiprocessing helpers remain."""
    runtime = Runtime(_settings(2))
    runtime.start()
    assert psutil.Process().children(recursive=True)
    _run(runtime)
    runtime.close()
    assert psutil.Process().children(recursive=True) == []


def test_reconfigure_rebuilds_the_pool_only_when_needed(alone: None) -> None:
    """Changing chunking keeps the workers; changing their number replaces them."""
    with Runtime(_settings(1)) as runtime:
        before = set(_worker_pids())
        runtime.reconfigure(_settings(1, batch_size=50, timeout_ms=1000))
        assert set(_worker_pids()) == before
        runtime.reconfigure(_settings(2))
        after = set(_worker_pids())
        assert len(after) == 2 and not after & before
        result, _ = _run(runtime)
    assert result.markets_evaluated == len(MARKETS)


def _worker_pids() -> list[int]:
    """The pool's workers: descendants that are neither the fork server nor the resource
    tracker. A process that vanishes while it is looked at is not one."""
    me = os.getpid()
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(process.cmdline()) and process.ppid() != me:
                found.append(process.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def test_megabytes_of_input_cut_at_block_edges_match(shared: _SharedPool) -> None:
    """Inputs spanning several scan blocks chunk and route exactly as a small input does."""
    markets, signals = _workload(9000, seed=11)
    market_lines, signal_lines = _jsonl(markets), _jsonl(signals)
    assert len(market_lines) > 1 << 20 and len(signal_lines) > 1 << 20
    runs = []
    for workers, batch_size in ((0, 9000), (2, 64)):
        with _runtime(shared, _settings(workers, batch_size=batch_size)) as runtime:
            runs.append(_run(runtime, market_lines, signal_lines))
    (inline, inline_lines), (pooled, pooled_lines) = runs
    assert _timeless(pooled_lines) == _timeless(inline_lines)
    assert [e.market_id for e in pooled_lines] == [m.id for m in markets]
    assert pooled.signals_total == inline.signals_total == len(signals)
    assert sum(e.signals_applied + e.signals_rejected for e in pooled_lines) == len(signals)


def _kill_workers() -> None:
    for pid in _worker_pids():
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def test_small_cycle_skips_the_pool(alone: None) -> None:
    """Below `inline_below` markets the built-in evaluator runs here: dead workers go unnoticed,
    and the evaluations are the pool's."""
    with Runtime(_settings(2, inline_below=len(MARKETS) + 1)) as runtime:
        _kill_workers()
        result, lines = _run(runtime, keep=("m0001", "m0002"))
        assert result.worker_restarts == 0
        runtime.reconfigure(_settings(2, inline_below=len(MARKETS)))
        pooled, pooled_lines = _run(runtime, keep=("m0001", "m0002"))
    assert pooled.worker_restarts >= 2
    assert _timeless(lines) == _timeless(pooled_lines)
    assert _timeless(result.candidates) == _timeless(pooled.candidates)


def test_plugins_never_run_in_the_parent() -> None:
    """A strategy plugin goes to the pool whatever the cycle's size."""
    with Runtime(_settings(2, evaluator=_plugin("kill_self"), inline_below=10**6)) as runtime:
        result, _ = _run(runtime, MARKET_LINES[: MARKET_LINES.index(b"m0040")])
    assert result.failures == [(TARGET, "worker crashed")]


def _digest(result: RunResult) -> tuple[object, ...]:
    return (
        _timeless(result.candidates),
        result.markets,
        _timeless([result.kept[market_id] for market_id in sorted(result.kept)]),
        result.markets_evaluated,
        result.markets_failed,
        result.signals_total,
    )


@pytest.mark.slow
def test_synthetic_thousands_match_across_workers_and_outputs(shared: _SharedPool) -> None:
    """Thousands of synthetic markets give identical results in process and in the pool, with
    per-market lines (every evaluation built) and without them (only tradeable ones built)."""
    as_of = datetime(2026, 6, 1, 12, tzinfo=UTC)
    markets, signals = generate_jsonl(4000, 5, as_of)
    keep = ("syn-0000003", "syn-0000010", "syn-0001234")
    digests = []
    for workers, batch_size in ((0, 4000), (2, 250), (1, 999)):
        with _runtime(shared, _settings(workers, batch_size=batch_size)) as runtime:
            chunks: list[bytes] = []
            with_lines = runtime.evaluate_sync(
                markets, "m", signals, "s", as_of, keep=keep, on_lines=chunks.append
            )
            without = runtime.evaluate_sync(markets, "m", signals, "s", as_of, keep=keep)
        lines = [_LINE.decode(line) for line in b"".join(chunks).splitlines()]
        assert _digest(with_lines) == _digest(without)
        assert _timeless([e for e in lines if e.failed_check is None and e.error is None]) == (
            _timeless(without.candidates)
        )
        digests.append((_digest(without), _timeless(lines)))
    assert len(without.candidates) > 100 and set(without.kept) == set(keep)
    assert digests[0] == digests[1] == digests[2]


def _signal_line(market_id: str, **fields: object) -> bytes:
    return _ENCODER.encode(msgspec.structs.replace(SIGNALS[0], market_id=market_id, **fields))


_SORTED = SIGNAL_LINES.splitlines()
#: Signal inputs in market order or nearly, each with a twist the planner must not trip over.
ORDER_CASES = {
    "market order": SIGNAL_LINES,
    "newest first": SHUFFLED_SIGNAL_LINES,
    "one stray behind": b"\n".join([*_SORTED, _signal_line("m0002")]) + b"\n",
    "one stray ahead": b"\n".join([_signal_line("m0100"), *_SORTED]),
    "unknown market": b"\n".join([*_SORTED[:50], _signal_line("nowhere"), *_SORTED[50:]]),
    "bad lines in order": b"\n".join(
        [
            *_SORTED[:30],
            b'{"market_id": "' + _SORTED[30][14:19] + b'", "type": "rumour"}',
            b"",
            b"{broken",
            *_SORTED[30:],
        ]
    ),
    "bad line of another chunk": b"\n".join(
        [*_SORTED[:30], b'{"market_id": "m0110", "strength": 9}', *_SORTED[30:]]
    ),
    "byte order mark": b"\xef\xbb\xbf" + SIGNAL_LINES,
}


@pytest.mark.parametrize("case", sorted(ORDER_CASES))
@pytest.mark.parametrize(("workers", "batch_size"), [(0, 7), (2, 1), (2, 13), (2, 1000)])
def test_runs_without_lines_match_runs_with_them(
    shared: _SharedPool, case: str, workers: int, batch_size: int
) -> None:
    """A cycle without per-market output (whose signals may be cut assuming market order)
    gives what the line-by-line plan gives: same candidates, kept markets, counts and refused
    lines with their source line numbers."""
    signals = ORDER_CASES[case]
    keep = ("m0001", "m0050", "m0119")
    with _runtime(shared, _settings(workers, batch_size=batch_size)) as runtime:
        with_lines = runtime.evaluate_sync(
            MARKET_LINES, "m", signals, "s", AS_OF, keep=keep, on_lines=lambda _: None
        )
        without = runtime.evaluate_sync(MARKET_LINES, "m", signals, "s", AS_OF, keep=keep)
    assert _digest(without) == _digest(with_lines)
    assert without.rejected == with_lines.rejected
    assert without.candidates and set(without.kept) == set(keep)
    if case.startswith("bad line"):
        assert without.rejected[0].field in {"type", "strength"}
        assert without.rejected[0].line == 31


@pytest.mark.parametrize("workers", [0, 2])
def test_a_repeated_id_far_apart_is_refused_in_compact_input(
    shared: _SharedPool, workers: int
) -> None:
    """A compact markets file whose last line repeats the first id, over a megabyte later,
    keeps the first and refuses the repeat by line number, with or without per-market lines."""
    markets, signals = _workload(9000, seed=11)
    market_lines = _jsonl(markets) + _ENCODER.encode(markets[0]) + b"\n"
    assert len(market_lines) > 1 << 20
    with _runtime(shared, _settings(workers, batch_size=500)) as runtime:
        plain = runtime.evaluate_sync(market_lines, "m", _jsonl(signals), "s", AS_OF)
        lined, lines = _run(runtime, market_lines, _jsonl(signals))
    for result in (plain, lined):
        assert [(r.line, r.field) for r in result.rejected] == [(9001, "id")]
        assert result.markets_total == 9001 and result.markets_evaluated == 9000
    assert [e.market_id for e in lines] == [m.id for m in markets]


_MIXED_MARKETS = b"\n".join(
    [*MARKET_LINES.splitlines()[:50], b'{"id": "bad-price", "question": "q", "price": 101,'
     b' "liquidity": 5}', *MARKET_LINES.splitlines()[50:90], b"{broken",
     *MARKET_LINES.splitlines()[90:]]
) + b"\n"
_MIXED_SIGNALS = b"\n".join(
    [*_SORTED[:200], b'{"market_id": "m0060", "type": "rumour"}', *_SORTED[200:]]
)


@pytest.mark.parametrize(
    ("workers", "batch_size", "max_concurrency"), [(0, 7, 50), (2, 13, 3), (2, 100, 50)]
)
@pytest.mark.parametrize("prior", ["fixed", "market"])
def test_kernels_agree_on_chunks_mixing_valid_and_refused_lines(
    shared: _SharedPool, workers: int, batch_size: int, max_concurrency: int, prior: str
) -> None:
    """Both kernels give the same evaluations, kept markets, refusals (file, line, field) and
    counts; chunks holding a refused line run market by market, the rest in the kernel."""
    runs = {}
    for kernel in ("columnar", "scalar"):
        settings = _settings(
            workers, batch_size=batch_size, max_concurrency=max_concurrency, kernel=kernel,
            prior=prior,
        )
        with _runtime(shared, settings) as runtime:
            with_lines, lines = _run(runtime, _MIXED_MARKETS, _MIXED_SIGNALS, keep=("m0001",))
            without = runtime.evaluate_sync(
                _MIXED_MARKETS, "m", _MIXED_SIGNALS, "s", AS_OF, keep=("m0001", "m0100")
            )
        runs[kernel] = (_digest(with_lines), with_lines.rejected, _timeless(lines),
                        _digest(without), without.rejected)
        columnar_share = (with_lines.markets_columnar, without.markets_columnar)
        if kernel == "scalar":
            assert columnar_share == (0, 0)
        else:
            assert all(0 < share < len(MARKETS) for share in columnar_share)
    assert runs["columnar"] == runs["scalar"]
    rejected = runs["scalar"][1]
    assert [(r.source, r.line, r.field) for r in rejected] == [
        ("markets.jsonl", 51, "price"), ("markets.jsonl", 92, None),
        ("signals.jsonl", 201, "type"),
    ]


def test_a_kernel_pass_that_raises_reruns_its_chunks_market_by_market() -> None:
    """A market whose only news is centuries old makes the kernel refuse its pass: those
    chunks run market by market, the others stay in the kernel, and the evaluations equal
    the scalar kernel's."""
    market = _ENCODER.encode(msgspec.structs.replace(MARKETS[0], id="ancient")) + b"\n"
    ancient = _signal_line("ancient", timestamp=datetime(1600, 1, 1, tzinfo=UTC), type="procedural")
    runs = {}
    for kernel in ("columnar", "scalar"):
        with Runtime(_settings(0, batch_size=7, kernel=kernel)) as runtime:
            result, lines = _run(runtime, market + MARKET_LINES, ancient + b"\n" + SIGNAL_LINES)
        runs[kernel] = (result, _timeless(lines))
    (columnar, columnar_lines), (scalar, scalar_lines) = runs["columnar"], runs["scalar"]
    assert columnar_lines == scalar_lines and _digest(columnar) == _digest(scalar)
    assert 0 < columnar.markets_columnar < len(MARKETS)
    assert columnar_lines[0].signals_applied == 1 and columnar_lines[0].confidence == 30.0


def test_a_markets_file_cut_short_mid_cycle_fails_the_cycle_naming_it(
    alone: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A markets file truncated in place while the workers read it fails the run with an
    error naming the file, instead of a run on the part that was left."""
    path = tmp_path / "markets.jsonl"
    path.write_bytes(MARKET_LINES)
    (tmp_path / "signals.jsonl").write_bytes(SIGNAL_LINES)
    monkeypatch.setenv("POMABOTD_TEST_TRUNCATE", str(path))
    settings = _settings(2, evaluator=_plugin("truncate_markets"), retry_attempts=0)
    with Runtime(settings) as runtime, pytest.raises(PomabotdError) as failed:
        runtime.evaluate_sync(LinesFile(str(path)), "markets.jsonl",
                              LinesFile(str(tmp_path / "signals.jsonl")), "signals.jsonl", AS_OF)
    assert "markets.jsonl: changed while the cycle was reading it" in str(failed.value)
    assert psutil.Process().children(recursive=True) == []


def test_workers_hold_no_input_open_after_a_run(alone: None, tmp_path: Path) -> None:
    """Once a run is over, no worker keeps its input files open: a file or memory file
    pomabotd let go of is not kept alive, unseen, by the pool."""
    path = tmp_path / "markets.jsonl"
    path.write_bytes(MARKET_LINES)
    (tmp_path / "signals.jsonl").write_bytes(SIGNAL_LINES)
    with Runtime(_settings(2)) as runtime:
        result = runtime.evaluate_sync(LinesFile(str(path)), "markets.jsonl",
                                       LinesFile(str(tmp_path / "signals.jsonl")),
                                       "signals.jsonl", AS_OF)
        workers = psutil.Process().children(recursive=True)
        held = [f.path for proc in workers for f in proc.open_files()
                if f.path.startswith(str(tmp_path))]
    assert result.markets_evaluated == len(MARKETS)
    assert held == []
    assert psutil.Process().children(recursive=True) == []


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_failing_kernel_pass_runs_market_by_market_and_says_why(
    monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    """When the columnar kernel's pass raises, its markets are evaluated market by market with
    the same results, and the run says the kernel failed and why, whichever decoder ran."""
    with Runtime(_settings(0, decoder=decoder)) as runtime:
        fine = runtime.evaluate_sync(MARKET_LINES, "markets.jsonl", SIGNAL_LINES,
                                     "signals.jsonl", AS_OF)

        def broken(*args: object) -> None:
            raise MemoryError("no room for the columns")

        monkeypatch.setattr(chunk_module, "join_columns", broken)
        failed = runtime.evaluate_sync(MARKET_LINES, "markets.jsonl", SIGNAL_LINES,
                                       "signals.jsonl", AS_OF)
    assert fine.markets_columnar == len(MARKETS) and fine.kernel_errors == []
    assert failed.markets_columnar == 0
    assert failed.kernel_errors and set(failed.kernel_errors) == {
        "MemoryError: no room for the columns"}
    assert _timeless(failed.candidates) == _timeless(fine.candidates)
    assert failed.markets_evaluated == fine.markets_evaluated == len(MARKETS)


def _lines_merged_and_split(lines: list[bytes], at: int) -> list[bytes]:
    """Lines `at` and `at + 1` on one line, then line `at + 2` split after its first comma:
    as many records as lines, but not one per line."""
    comma = lines[at + 2].index(b",") + 1
    return [*lines[:at], lines[at] + lines[at + 1], lines[at + 2][:comma],
            lines[at + 2][comma:], *lines[at + 3 :]]


@pytest.mark.parametrize("kernel", ["columnar", "scalar"])
@pytest.mark.parametrize("workers", [0, 2])
def test_a_record_over_two_lines_beside_two_on_one_line_is_refused(
    shared: _SharedPool, kernel: str, workers: int
) -> None:
    """Two records on one line next to a record split over two lines (as many records as
    lines): the three lines are refused by number, as the line-by-line readers refuse them,
    and every other market is evaluated."""
    markets = b"\n".join(_lines_merged_and_split(MARKET_LINES.splitlines(), 40)) + b"\n"
    signals = b"\n".join(_lines_merged_and_split(SIGNAL_LINES.splitlines(), 70)) + b"\n"
    with _runtime(shared, _settings(workers, batch_size=30, kernel=kernel)) as runtime:
        result = runtime.evaluate_sync(markets, "m", signals, "s", AS_OF)
    assert [(r.source, r.line) for r in result.rejected] == [
        ("m", 41), ("m", 42), ("m", 43), ("s", 71), ("s", 72), ("s", 73)]
    assert result.markets_evaluated == len(MARKETS) - 3


def test_a_time_whose_utc_is_past_year_9999_stays_in_the_kernel() -> None:
    """A close and a news time whose offset carries them past 9999 in UTC
    (`9999-12-31T23:59:59-01:00`) are evaluated by the kernel with the rest of their chunk,
    with the scalar kernel's results."""
    late = datetime.fromisoformat("9999-12-31T23:59:59-01:00")
    market = _ENCODER.encode(msgspec.structs.replace(MARKETS[0], id="late", closes_at=late))
    news = _signal_line("late", timestamp=late) + b"\n" + _signal_line(
        "late", timestamp=AS_OF - timedelta(hours=2))
    runs = {}
    for kernel in ("columnar", "scalar"):
        with Runtime(_settings(0, batch_size=500, kernel=kernel)) as runtime:
            runs[kernel] = _run(runtime, market + b"\n" + MARKET_LINES,
                                news + b"\n" + SIGNAL_LINES)
    (columnar, columnar_lines), (scalar, scalar_lines) = runs["columnar"], runs["scalar"]
    assert _timeless(columnar_lines) == _timeless(scalar_lines)
    assert _digest(columnar) == _digest(scalar)
    assert columnar.markets_columnar == len(MARKETS) + 1 and columnar.kernel_errors == []
    assert columnar_lines[0].signals_applied == 1 and columnar_lines[0].signals_rejected == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_repeated_id_is_found_whatever_the_longest_id_of_each_piece(
    shared: _SharedPool, workers: int
) -> None:
    """A repeated id is refused even when the piece holding its first line has a longer id
    than the piece holding the repeat (each id's hash covers its own bytes only)."""
    markets, signals = _workload(9000, seed=11)
    markets[0] = msgspec.structs.replace(markets[0], id="m0000-repeated")
    markets[1] = msgspec.structs.replace(markets[1], id="m0001-longer-than-the-repeated-one")
    signals = [s for s in signals if s.market_id not in ("m0000", "m0001")]
    market_lines = _jsonl(markets) + _ENCODER.encode(markets[0]) + b"\n"
    with _runtime(shared, _settings(workers, batch_size=500)) as runtime:
        result = runtime.evaluate_sync(market_lines, "m", _jsonl(signals), "s", AS_OF)
    assert [(r.line, r.field) for r in result.rejected] == [(9001, "id")]
    assert result.markets_total == 9001 and result.markets_evaluated == 9000
