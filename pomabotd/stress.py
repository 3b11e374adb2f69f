"""The stress tool: full cycles on a large workload, measured and checked.

A synthetic workload is first written, by seeded blocks spread over the worker pool, to two
JSON-lines files in a scratch directory, exactly as a file source delivers them; then it goes
through the same cycle coroutine as `run-once` and the daemon, read like any file source, into a
scratch ledger, `repeat` times on the same warm pool (each cycle on a fresh ledger, so that each
does the same work). Its figures are the cycle's own, as its metrics line and its log line give
them (one throughput for one cycle): `wall_s` is the cycle's `processing_time_ms`, from loading
the files to the selection, with the pool already started, as in the daemon (the lines' append
comes after it); generating the workload and starting the pool are timed separately.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Final

import msgspec

from pomabotd.cycle import CycleReport, InputLoader, Portfolio, run_cycle
from pomabotd.domain.models import RiskLimits
from pomabotd.engine.runtime import Runtime
from pomabotd.output import Ledger
from pomabotd.sources.jsonl import JsonlMarkets, JsonlSignals
from pomabotd.sources.registry import Sources
from pomabotd.sources.workload import generate_files
from pomabotd.words import plural

__all__ = [
    "StressCheck",
    "StressReport",
    "Synthetic",
    "run_stress",
    "stress_checks",
]

_SCRATCH_PREFIX: Final = "pomabotd-stress-"
#: Held (flock) for the life of a stress run's scratch directory: a directory whose lock
#: nobody holds belongs to a run that died without removing it (SIGKILL).
_SCRATCH_LOCK: Final = ".stress.lock"
_MIN_THROUGHPUT_PER_S: Final = 10.0
_MAX_RSS_MB: Final = 2048.0
_EPSILON: Final = 1e-9


class StressCheck(msgspec.Struct, frozen=True):
    """One validation check of a stress run, with the figure it judged."""

    name: str
    passed: bool
    detail: str


class StressReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a stress run measured; `--json` prints exactly this."""

    markets: int
    wall_s: float
    throughput_per_s: float
    peak_rss_mb: float
    cpu_percent: float
    avg_eval_us: float
    opportunities: int
    selected: int
    markets_evaluated: int
    markets_failed: int
    markets_rejected: int
    workers: int
    generate_s: float
    pool_start_s: float
    portfolio_risk_pct: float
    checks: list[StressCheck]
    passed: bool
    #: `wall_s` and `throughput_per_s` are those of the median of `repeats` cycles on the
    #: same warm pool (the lower middle one of an even count); `wall_s_min` the least wall
    #: time. `peak_rss_mb` is the highest of those cycles' peaks.
    wall_s_median: float
    wall_s_min: float
    repeats: int
    #: The decoder the workers used for the columnar kernel (`batch.decoder` resolved), and
    #: how many markets of the last cycle it decoded.
    decoder: str
    markets_native: int


@contextlib.contextmanager
def _scratch_directory() -> Iterator[str]:
    """A scratch directory in the temporary directory, locked while this run holds it and
    removed after; the scratch directories of earlier runs that died are removed first."""
    _remove_dead_scratch()
    with tempfile.TemporaryDirectory(prefix=_SCRATCH_PREFIX) as scratch:
        fd = os.open(os.path.join(scratch, _SCRATCH_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield scratch
        finally:
            os.close(fd)


def _remove_dead_scratch() -> None:
    """Remove `pomabotd-stress-*` directories whose lock file no process holds. A directory
    without a lock file is left alone: its run may be just creating it."""
    root = tempfile.gettempdir()
    try:
        names = [name for name in os.listdir(root) if name.startswith(_SCRATCH_PREFIX)]
    except OSError:
        return
    for name in names:
        directory = os.path.join(root, name)
        try:
            fd = os.open(os.path.join(directory, _SCRATCH_LOCK), os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError: a live run holds it
            shutil.rmtree(directory, ignore_errors=True)
        except OSError:
            pass
        finally:
            os.close(fd)


def stress_checks(
    report: CycleReport, limits: RiskLimits, peak_rss_mb: float | None = None
) -> list[StressCheck]:
    """Judge a stress cycle against the validation checks, on its own throughput; `peak_rss_mb`
    is the peak of every cycle of the run when it ran several (the cycle's own by default)."""
    m = report.metrics
    peak = m.rss_mb if peak_rss_mb is None else peak_rss_mb
    throughput = m.throughput_per_s
    per_category = Counter(p.category for p in report.opened)
    worst_category = max(per_category.values(), default=0)
    min_selected_edge = min((p.edge for p in report.opened), default=None)
    return [
        StressCheck(
            "processing_completed",
            m.markets_failed == 0 and m.markets_evaluated + m.markets_rejected == m.markets_total,
            f"{m.markets_evaluated:,} of {plural(m.markets_total, 'market')} evaluated, "
            f"{m.markets_failed} failed, {m.markets_rejected} rejected",
        ),
        StressCheck(
            "throughput",
            throughput > _MIN_THROUGHPUT_PER_S,
            f"{throughput:,.0f} markets/s (minimum {_MIN_THROUGHPUT_PER_S:.0f})",
        ),
        StressCheck(
            "memory",
            peak < _MAX_RSS_MB,
            f"peak RSS {peak:,.1f} MB (limit {_MAX_RSS_MB:,.0f} MB)",
        ),
        StressCheck(
            "portfolio_risk",
            m.portfolio_risk_pct <= limits.max_portfolio_risk + _EPSILON,
            f"{m.portfolio_risk_pct:.2f}% of equity (limit {limits.max_portfolio_risk:g}%)",
        ),
        StressCheck(
            "min_edge",
            min_selected_edge is None or min_selected_edge >= limits.min_edge - _EPSILON,
            "no position selected" if min_selected_edge is None else
            f"smallest selected edge {min_selected_edge:.2f} (minimum {limits.min_edge:g})",
        ),
        StressCheck(
            "diversification",
            not limits.require_diversification
            or worst_category <= limits.max_positions_per_category,
            f"at most {plural(worst_category, 'position')} in one category "
            f"(limit {limits.max_positions_per_category}"
            f"{'' if limits.require_diversification else ', not required'})",
        ),
    ]


class Synthetic(msgspec.Struct, frozen=True):
    """A synthetic workload for stress to write: `markets` markets from `seed`."""

    markets: int
    seed: int


async def run_stress(
    runtime: Runtime,
    limits: RiskLimits,
    inputs: InputLoader | Synthetic,
    as_of: datetime,
    *,
    clock: Callable[[], datetime],
    on_progress: Callable[[int, int], None] | None = None,
    repeat: int = 1,
) -> StressReport:
    """Start `runtime` (timed apart), write (or load) the workload, run `repeat` measured
    cycles, close the runtime."""
    with contextlib.ExitStack() as stack:
        # Made first, removed last: the pool's workers write the workload's blocks into it.
        scratch = stack.enter_context(_scratch_directory())
        started = time.perf_counter()
        stack.enter_context(runtime)
        pool_start_s = time.perf_counter() - started
        started = time.perf_counter()
        loader = await _workload(runtime, inputs, as_of, Path(scratch))
        generate_s = time.perf_counter() - started
        reports: list[CycleReport] = []
        for number in range(max(1, repeat)):
            ledger_dir = Path(scratch) / f"ledger-{number}"
            with Ledger(ledger_dir) as ledger:
                portfolio = Portfolio.recover(ledger)
                reports.append(await run_cycle(
                    runtime, loader, portfolio, ledger, limits,
                    as_of=as_of, clock=clock, on_progress=on_progress,
                ))
    walls = sorted(r.metrics.processing_time_ms / 1000.0 for r in reports)
    report = sorted(reports, key=lambda r: r.metrics.processing_time_ms)[(len(reports) - 1) // 2]
    m = report.metrics
    peak_mb = max(r.metrics.rss_mb for r in reports)
    wall_s = m.processing_time_ms / 1000.0
    checks = stress_checks(report, limits, peak_mb)
    return StressReport(
        markets=m.markets_total,
        wall_s=round(wall_s, 4),
        throughput_per_s=m.throughput_per_s,
        peak_rss_mb=peak_mb,
        cpu_percent=m.cpu_percent,
        avg_eval_us=m.avg_eval_us,
        opportunities=m.opportunities,
        selected=m.selected,
        markets_evaluated=m.markets_evaluated,
        markets_failed=m.markets_failed,
        markets_rejected=m.markets_rejected,
        workers=runtime.settings.workers,
        generate_s=round(generate_s, 4),
        pool_start_s=round(pool_start_s, 4),
        portfolio_risk_pct=m.portfolio_risk_pct,
        checks=checks,
        passed=all(check.passed for check in checks),
        wall_s_median=round(wall_s, 4),
        wall_s_min=round(min(walls), 4),
        repeats=len(walls),
        decoder=report.decoder,
        markets_native=report.markets_native,
    )


async def _workload(
    runtime: Runtime, inputs: InputLoader | Synthetic, as_of: datetime, scratch: Path
) -> InputLoader:
    """The loader of the cycles: the given one, or file sources on the synthetic workload
    written into `scratch` (its blocks made in parallel by the pool)."""
    if not isinstance(inputs, Synthetic):
        return inputs
    markets, signals = scratch / "markets.jsonl", scratch / "signals.jsonl"
    await generate_files(inputs.markets, inputs.seed, as_of, markets, signals, runtime.map)
    return Sources(JsonlMarkets(markets), [JsonlSignals(signals)])
