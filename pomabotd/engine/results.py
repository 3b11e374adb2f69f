"""Task results in, one run's result out: counts summed, refusals numbered, lines in order.

Results arrive in any order. A `Sink` keeps only what selection and the outputs need (candidates,
held markets and their records, refusals, counts), hands per-market lines to `on_lines` in market
input order as soon as that order allows, and tells `on_progress` how far the run is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import Protocol

import msgspec
from msgspec import Struct

from pomabotd.domain.models import Evaluation, Market
from pomabotd.engine.protocol import ChunkOut
from pomabotd.wire import Rejected

__all__ = ["LineNumbers", "PieceLines", "RunResult", "Sink"]


class RunResult(Struct, kw_only=True):
    """What one run produced, and what it cost, measured."""

    candidates: list[Evaluation]
    markets: dict[str, Market]
    kept: dict[str, Evaluation]
    rejected: list[Rejected]
    failures: list[tuple[str, str]]
    markets_total: int
    markets_evaluated: int
    markets_failed: int
    signals_total: int
    retries: int
    timeouts: int
    worker_restarts: int
    eval_us_total: float
    peak_rss_mb: float
    cpu_percent: float
    wall_s: float
    #: How many markets the columnar kernel evaluated; the rest ran market by market.
    markets_columnar: int = 0
    #: How many of those the native decoder decoded (the others, msgspec).
    markets_native: int = 0
    #: Why the kernel's pass failed, one entry per task it failed on (run market by market).
    kernel_errors: list[str] = []
    #: Why the supervisor killed a worker, one line per worker killed (its work ran again).
    worker_kills: list[str] = []


class LineNumbers(Protocol):
    """Maps a line of a task's own lines (1-based) to the source's line number."""

    def market_line(self, index: int, position: int) -> int:
        """The source line of the `position`-th market line of task `index`."""
        ...

    def signal_line(self, index: int, position: int) -> int:
        """The source line of the `position`-th signal line of task `index`."""
        ...


class PieceLines:
    """Line numbers of pieces (and stray tasks) that tile both inputs: each piece's market lines
    follow those of the pieces before it, each run of signal lines those of the runs before it
    in the input."""

    def __init__(self, outs: Iterable[ChunkOut]) -> None:
        ordered = sorted(outs, key=lambda out: out.index)
        self._markets = dict(zip((o.index for o in ordered),
                                 accumulate((o.market_lines for o in ordered), initial=0),
                                 strict=False))
        runs = sorted((o for o in ordered if o.run is not None),
                      key=lambda out: out.run[0] if out.run is not None else 0)
        self._signals = dict(zip((o.index for o in runs),
                                 accumulate((o.signal_lines for o in runs), initial=0),
                                 strict=False))

    def market_line(self, index: int, position: int) -> int:
        """The source line of the `position`-th market line of piece `index`."""
        return self._markets[index] + position

    def signal_line(self, index: int, position: int) -> int:
        """The source line of the `position`-th line of piece `index`'s signal run."""
        return self._signals.get(index, 0) + position


class Sink:
    """Collects task results in any order; emits lines and assembles results in input order.

    `done_before` markets count as done from the start (refused while planning); `total()`
    is the best estimate of the run's markets so far.
    """

    def __init__(
        self,
        on_lines: Callable[[bytes], None] | None,
        on_progress: Callable[[int, int], None] | None,
        total: Callable[[], int],
        *,
        rejected: Iterable[Rejected] = (),
        done_before: int = 0,
    ) -> None:
        self._on_lines = on_lines
        self._on_progress = on_progress
        self._total = total
        self._done = done_before
        self._reported = -1
        self._pending: dict[int, bytes] = {}
        self._next = 0
        self._outs: dict[int, ChunkOut] = {}
        self._counted: dict[int, int] = {}
        self._planned: list[Rejected] = list(rejected)

    @property
    def outs(self) -> list[ChunkOut]:
        """Every result so far."""
        return list(self._outs.values())

    def add(self, out: ChunkOut, markets: int) -> None:
        """Take one task's result; it covered `markets` market lines."""
        self._done += markets - self._counted.get(out.index, 0)
        self._counted[out.index] = markets
        self._outs[out.index] = out
        if self._on_lines is not None:
            self._pending[out.index] = out.lines
            while self._next in self._pending:
                lines = self._pending.pop(self._next)
                self._next += 1
                if lines:
                    self._on_lines(lines)

    def progress(self) -> None:
        """Tell `on_progress` how many markets are done, if that changed."""
        if self._on_progress is not None and self._done != self._reported:
            self._reported = self._done
            self._on_progress(self._done, max(self._done, self._total()))

    def result(
        self,
        numbers: LineNumbers,
        *,
        markets_source: str,
        markets_total: int,
        signals_total: int | None,
        retries: int,
        timeouts: int,
        restarts: int,
        kills: list[str] | None = None,
        peak_rss_mb: float,
        cpu_percent: float,
        wall_s: float,
    ) -> RunResult:
        """The run's result; `signals_total` None means the tasks' own counts."""
        outs = [self._outs[index] for index in sorted(self._outs)]
        rejected = list(self._planned)
        markets: dict[str, Market] = {}
        kept: dict[str, Evaluation] = {}
        for out in outs:
            for market in out.markets:
                markets[market.id] = market
            for evaluation in out.kept:
                kept[evaluation.market_id] = evaluation
            for refused in out.market_rejected:
                line = numbers.market_line(out.index, refused.line)
                rejected.append(msgspec.structs.replace(refused, line=line))
            for refused in out.signal_rejected:
                line = numbers.signal_line(out.index, refused.line)
                rejected.append(msgspec.structs.replace(refused, line=line))
        rejected.sort(key=lambda r: (r.source != markets_source, r.line))
        return RunResult(
            candidates=[e for out in outs for e in out.candidates],
            markets=markets,
            kept=kept,
            rejected=rejected,
            failures=[f for out in outs for f in out.failures],
            markets_total=markets_total,
            markets_evaluated=sum(out.evaluated for out in outs),
            markets_failed=sum(out.failed for out in outs),
            signals_total=(sum(out.signals for out in outs) if signals_total is None
                           else signals_total),
            retries=sum(out.retries for out in outs) + retries,
            timeouts=sum(out.timeouts for out in outs) + timeouts,
            worker_restarts=restarts,
            eval_us_total=sum(out.eval_us for out in outs),
            peak_rss_mb=peak_rss_mb,
            cpu_percent=cpu_percent,
            wall_s=wall_s,
            markets_columnar=sum(out.columnar for out in outs),
            markets_native=sum(out.native for out in outs),
            kernel_errors=[out.kernel_error for out in outs if out.kernel_error],
            worker_kills=list(kills or ()),
        )
