"""Market-ordered input evaluated by pieces: pomabotd only schedules, workers find their lines."""

from __future__ import annotations

import asyncio
import gc
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from pomabotd.cycle import Portfolio, run_cycle
from pomabotd.domain.models import Market, RiskLimits, Signal
from pomabotd.engine import schedule as schedule_module
from pomabotd.engine.inputs import Reader
from pomabotd.engine.runtime import BatchSettings, RunResult, Runtime
from pomabotd.output import Ledger
from pomabotd.sources.jsonl import JsonlMarkets, JsonlSignals
from pomabotd.sources.registry import Sources
from pomabotd.sources.workload import BLOCK, generate_files, generate_jsonl
from pomabotd.wire import LinesFile

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)
_ENCODER = msgspec.json.Encoder()


def _settings(workers: int, **changes: object) -> BatchSettings:
    base = BatchSettings(workers=workers, batch_size=100, max_concurrency=50, timeout_ms=5000,
                         retry_attempts=1, inline_below=0)
    return msgspec.structs.replace(base, **changes)


def _digest(result: RunResult) -> tuple[object, ...]:
    return (
        [msgspec.structs.replace(e, elapsed_us=0.0) for e in result.candidates],
        result.markets,
        sorted(result.kept),
        result.markets_evaluated,
        result.markets_failed,
        result.signals_total,
        result.rejected,
    )


class _Parent:
    """Bytes of input read in this process (workers are other processes), with planning line
    by line refused until `allow_lines`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.read: list[int] = []
        self._monkeypatch = monkeypatch
        self._plan = schedule_module.plan_workload
        original = Reader.read

        def counted(reader: Reader, start: int, end: int) -> bytes:
            data = original(reader, start, end)
            self.read.append(len(data))
            return data

        def refused(*args: object, **kwargs: object) -> object:
            raise AssertionError("the input was planned line by line")

        monkeypatch.setattr(Reader, "read", counted)
        monkeypatch.setattr(schedule_module, "plan_workload", refused)

    def allow_lines(self) -> None:
        self._monkeypatch.setattr(schedule_module, "plan_workload", self._plan)


@pytest.fixture
def parent(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Parent]:
    """Watches what pomabotd's own process reads and plans."""
    yield _Parent(monkeypatch)


def _files(tmp_path: Path, markets: bytes, signals: bytes) -> tuple[LinesFile, LinesFile]:
    (tmp_path / "m.jsonl").write_bytes(markets)
    (tmp_path / "s.jsonl").write_bytes(signals)
    return LinesFile(str(tmp_path / "m.jsonl")), LinesFile(str(tmp_path / "s.jsonl"))


@pytest.mark.slow
def test_the_parent_reads_almost_nothing_and_decodes_nothing(
    tmp_path: Path, parent: _Parent
) -> None:
    """On a pool, 30,000 market-ordered markets are planned from a few small reads: pomabotd
    itself reads well under 1% of the input and never plans it line by line, and the results
    equal a line-by-line run's."""
    markets, signals = generate_jsonl(30_000, 5, AS_OF)
    market_file, signal_file = _files(tmp_path, markets, signals)
    keep = ("syn-0000003", "syn-0029999")
    with Runtime(_settings(2)) as runtime:
        pieces = runtime.evaluate_sync(market_file, "m", signal_file, "s", AS_OF, keep=keep)
        parent_bytes = sum(parent.read)
        parent.allow_lines()
        lines = runtime.evaluate_sync(market_file, "m", signal_file, "s", AS_OF, keep=keep,
                                      on_lines=lambda _: None)
    assert parent_bytes < (len(markets) + len(signals)) / 100
    assert _digest(pieces) == _digest(lines)
    assert pieces.markets_evaluated == 30_000 and set(pieces.kept) == set(keep)
    assert psutil.Process().children(recursive=True) == []


def _skewed(count: int) -> tuple[bytes, bytes]:
    """Markets in order, with signals only for the last tenth (six each): every guess of where
    a piece's signals lie is wrong."""
    rng = random.Random(4)
    markets = [
        Market(id=f"k{index:05d}", question="q", category="crypto",
               price=round(rng.uniform(1, 99), 1), liquidity=5000.0)
        for index in range(count)
    ]
    signals = [
        Signal(market_id=market.id, type="authoritative", direction=rng.choice(("up", "down")),
               strength=rng.randint(3, 5), timestamp=AS_OF - timedelta(hours=rng.randint(1, 9)))
        for market in markets[count - count // 10 :]
        for _ in range(6)
    ]
    return (b"".join(_ENCODER.encode(m) + b"\n" for m in markets),
            b"".join(_ENCODER.encode(s) + b"\n" for s in signals))


@pytest.mark.parametrize("workers", [0, 2])
def test_pieces_whose_guess_missed_their_signals_find_them(
    tmp_path: Path, parent: _Parent, workers: int
) -> None:
    """Signals crowded at the end of the input are still found by their pieces (a second look
    in the gap the first runs left, never a plan line by line), with the line-by-line plan's
    results."""
    markets, signals = _skewed(3000)
    market_file, signal_file = _files(tmp_path, markets, signals)
    with Runtime(_settings(workers)) as runtime:
        pieces = runtime.evaluate_sync(market_file, "m", signal_file, "s", AS_OF)
        parent.allow_lines()
        lines = runtime.evaluate_sync(market_file, "m", signal_file, "s", AS_OF,
                                      on_lines=lambda _: None)
    assert _digest(pieces) == _digest(lines)
    assert pieces.signals_total == 1800 and pieces.candidates


def test_a_kernel_pass_that_raises_in_a_piece_runs_it_market_by_market() -> None:
    """In a pool, the piece whose kernel pass raises (news centuries old) is evaluated market
    by market, the other pieces in the kernel, with the scalar kernel's results."""
    markets, signals = generate_jsonl(400, 9, AS_OF)
    market = _ENCODER.encode(Market(id="ancient", question="q", price=50.0, liquidity=9000.0))
    ancient = _ENCODER.encode(
        Signal(market_id="ancient", type="procedural", direction="up", strength=3,
               timestamp=datetime(1600, 1, 1, tzinfo=UTC))
    )
    runs = {}
    for kernel in ("columnar", "scalar"):
        with Runtime(_settings(2, kernel=kernel, batch_size=50)) as runtime:
            runs[kernel] = runtime.evaluate_sync(market + b"\n" + markets, "m",
                                                 ancient + b"\n" + signals, "s", AS_OF)
    assert _digest(runs["columnar"]) == _digest(runs["scalar"])
    assert runs["columnar"].markets_evaluated == 401
    assert 0 < runs["columnar"].markets_columnar < 401


def test_generated_files_do_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    """The same seed writes the same files whether its blocks are made here or by a pool,
    and they hold what `generate_jsonl` gives."""
    count = BLOCK + 50
    written = []
    for workers in (0, 2):
        with Runtime(_settings(workers)) as runtime:
            paths = tmp_path / f"m{workers}.jsonl", tmp_path / f"s{workers}.jsonl"
            asyncio.run(generate_files(count, 3, AS_OF, *paths, runtime.map))
        written.append(tuple(path.read_bytes() for path in paths))
    assert written[0] == written[1] == generate_jsonl(count, 3, AS_OF)
    assert written[0][0].count(b"\n") == count
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "m0.jsonl", "m2.jsonl", "s0.jsonl", "s2.jsonl"
    ]


def test_nothing_of_a_pooled_cycle_outlives_it(tmp_path: Path) -> None:
    """Once a pooled cycle is over, none of what its workers sent back stays alive in
    pomabotd: a daemon does not carry the last cycle's candidates (about 20 objects each;
    20,000 markets give about 1,400 of them) into the next one."""
    def loader(count: int) -> Sources:
        markets, signals = generate_jsonl(count, 11, AS_OF)
        (tmp_path / f"m{count}.jsonl").write_bytes(markets)
        (tmp_path / f"s{count}.jsonl").write_bytes(signals)
        return Sources(JsonlMarkets(tmp_path / f"m{count}.jsonl"),
                       [JsonlSignals(tmp_path / f"s{count}.jsonl")])

    big, small = loader(20_000), loader(200)

    async def cycle(runtime: Runtime, inputs: Sources, number: int) -> int:
        with Ledger(tmp_path / f"out-{number}") as ledger:
            report = await run_cycle(runtime, inputs, Portfolio.recover(ledger), ledger,
                                     RiskLimits(), as_of=AS_OF, clock=lambda: AS_OF)
        return report.metrics.opportunities

    async def blocks_left_by_a_cycle(runtime: Runtime) -> tuple[int, int]:
        """Objects left by a big cycle after a small one on the same event loop, as in a
        daemon, and the candidates of the big cycle."""
        await cycle(runtime, big, 0)  # warm every cache
        await cycle(runtime, small, 1)
        gc.collect()
        before = sys.getallocatedblocks()
        candidates = await cycle(runtime, big, 2)
        gc.collect()
        return sys.getallocatedblocks() - before, candidates

    with Runtime(_settings(2)) as runtime:
        left, candidates = asyncio.run(blocks_left_by_a_cycle(runtime))
    assert candidates > 1000
    assert left < 2 * candidates, left
    assert psutil.Process().children(recursive=True) == []


@pytest.mark.slow
def test_signals_about_markets_not_in_the_input_stay_off_the_line_by_line_plan(
    tmp_path: Path, parent: _Parent
) -> None:
    """Market-ordered signals of a wider universe than the markets (the first 6,000 of 12,000
    markets, every signal kept, a keyless line and blank lines among the strangers): the pieces
    take their runs and stray tasks the rest, pomabotd never plans the input line by line nor
    reads more than a sliver of it, and results, counts and refusals (with their line numbers)
    equal a line-by-line run's."""
    markets, signals = generate_jsonl(12_000, 13, AS_OF)
    lines = signals.split(b"\n")
    middle = len(lines) * 3 // 4
    lines[middle:middle] = [b"", b'{"type":"speculative"}', b"  "]
    signals = b"\n".join(lines)
    mine = b"".join(markets.splitlines(keepends=True)[:6_000])
    market_file, signal_file = _files(tmp_path, mine, signals)
    with Runtime(_settings(2)) as runtime:
        pieces = runtime.evaluate_sync(market_file, "m", signal_file, "s", AS_OF)
        parent_bytes = sum(parent.read)
        parent.allow_lines()
        by_lines = runtime.evaluate_sync(market_file, "m", signal_file, "s", AS_OF,
                                         on_lines=lambda _: None)
    assert parent_bytes < (len(mine) + len(signals)) / 40  # samples and line starts
    assert _digest(pieces) == _digest(by_lines)
    assert [(r.line, r.field) for r in pieces.rejected] == [(middle + 2, "market_id")]
    assert pieces.markets_evaluated == 6_000
    assert pieces.signals_total == sum(1 for line in lines if line.strip())
    assert psutil.Process().children(recursive=True) == []


def test_a_stray_signal_about_a_market_of_the_input_sends_it_line_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal about one of the input's markets, far from that market's run among signals
    about other markets, is found out by the stray tasks' ids: the cycle is planned line by
    line, and its results equal a line-by-line run's."""
    planned: list[int] = []
    plan = schedule_module.plan_workload

    def counted(*args: Any, **kwargs: Any) -> Any:
        planned.append(1)
        return plan(*args, **kwargs)

    monkeypatch.setattr(schedule_module, "plan_workload", counted)
    markets, signals = generate_jsonl(4_000, 17, AS_OF)
    mine = b"".join(markets.splitlines(keepends=True)[:2_000])
    lost = _ENCODER.encode(Signal(market_id="syn-0000005", type="authoritative",
                                  direction="up", strength=5, conflicts_with_existing=False,
                                  timestamp=AS_OF - timedelta(hours=1), source="wire",
                                  description="late"))
    signals = signals + lost + b"\n"
    market_file, signal_file = _files(tmp_path, mine, signals)
    with Runtime(_settings(2)) as runtime:
        pieces = runtime.evaluate_sync(market_file, "m", signal_file, "s", AS_OF,
                                       keep=("syn-0000005",))
        fell_back = len(planned)
        by_lines = runtime.evaluate_sync(market_file, "m", signal_file, "s", AS_OF,
                                         keep=("syn-0000005",), on_lines=lambda _: None)
    assert fell_back == 1
    assert _digest(pieces) == _digest(by_lines)
    assert psutil.Process().children(recursive=True) == []
