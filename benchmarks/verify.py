"""What checking a ledger's history costs, per GB of ledger (target: about 1 s/GB at most).

Run from a checkout with pomabotd installed:

    python benchmarks/verify.py              # a ledger of about 400 MB
    python benchmarks/verify.py --mb 800     # a bigger one

It writes a sound ledger into a scratch directory, as pomabotd writes one: `--cycles-per-open`
metrics lines per cycle that opens positions (most cycles open nothing, as a real portfolio at
its limits does; a daemon on the default settings writes one positions line for tens of
metrics lines, `--cycles-per-open 60` comes near it, the default 8 is a busy portfolio), each
opening cycle closing the positions the last one opened and opening `--opens` new ones, with
`state.json` after the last cycle; the lines are real records with the fields and sizes of
pomabotd's own (a metrics line is about 0.9 KB, an open 0.35 KB, a close 0.2 KB). Then the
median of `--repeat` rounds in the same process, the four taking turns in each round, so that
a busy spell of a shared machine hits all alike:

1. `read`: reading both files into memory;
2. `decode keys`: decoding the fields the check needs from every line, one call per file
   (both files in memory): the floor of a check that decodes every line with msgspec;
3. `verify`: `pomabotd.output.verify_ledger`, what `pomabotd verify`, `run-once`, and `run` at
   start and on reload pay (reading included);
4. `full decode`: decoding every line into its full record, one line at a time, as recovery
   did before the history was checked (for the ratio only).

It prints wall and CPU seconds, and per GB, for each, verify's CPU ratios to the others, and
verify's peak memory above what the process held before it.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from loguru import logger

from pomabotd.domain.models import CloseEvent, Position
from pomabotd.domain.portfolio import LedgerState
from pomabotd.history import EVENT_KEYS, METRICS_KEYS
from pomabotd.output import METRICS_FILE, POSITIONS_FILE, CycleMetrics, Ledger, verify_ledger
from pomabotd.sources.base import SourceStats

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _metrics(cycle: int, selected: int, closed: int, open_positions: int) -> CycleMetrics:
    at = T0 + timedelta(minutes=cycle)
    return CycleMetrics(
        cycle_id=cycle, started_at=at, finished_at=at + timedelta(seconds=0.8123),
        markets_total=1000, markets_evaluated=1000, markets_failed=0, markets_rejected=0,
        retries=0, timeouts=0, worker_restarts=0, processing_time_ms=812.345,
        throughput_per_s=1231.2, avg_eval_us=2.545, rss_mb=170.4, cpu_percent=42.3,
        opportunities=64, selected=selected, closed=closed, open_positions=open_positions,
        portfolio_risk_pct=20.0, equity_usd=10000.0, realized_pnl_usd=0.0, success_rate=1.0,
        sources=SourceStats(), halted=False, halt_reason=None, held_missing=0,
    )


def _open(cycle: int, n: int) -> Position:
    return Position(
        cycle_id=cycle, position_id=f"{cycle}-syn-{n:07d}", market_id=f"syn-{n:07d}",
        question=f"Will summit #{n} end with a signed accord?", category="world", side="YES",
        entry_price=20.9, size_usd=500.0, risk_usd=500.0, edge=43.3, belief_low=25.8,
        belief_high=35.8, confidence=69.256944, stop_price=19.855, target_price=22.99,
        opened_at=T0 + timedelta(minutes=cycle),
    )


def _close(cycle: int, opened: Position) -> CloseEvent:
    return CloseEvent(
        cycle_id=cycle, position_id=opened.position_id, market_id=opened.market_id,
        exit_price=22.99, exit_reason="profit_target", pnl_usd=50.0,
        closed_at=T0 + timedelta(minutes=cycle),
    )


def write_ledger(directory: Path, target_bytes: int, opens: int, cycles_per_open: int) -> int:
    """A sound ledger of about `target_bytes`; returns its size in bytes."""
    encoder = msgspec.json.Encoder()
    held: list[Position] = []
    cycle = 0
    written = 0
    with (directory / METRICS_FILE).open("wb") as metrics, \
            (directory / POSITIONS_FILE).open("wb") as positions:
        while written < target_bytes:
            cycle += 1
            if cycle % cycles_per_open == 1 or cycles_per_open == 1:
                closes = [_close(cycle, position) for position in held]
                held = [_open(cycle, cycle * opens + k) for k in range(opens)]
                events: list[Position | CloseEvent] = [*closes, *held]
                record = _metrics(cycle, len(held), len(closes), len(held))
            else:
                events = []
                record = _metrics(cycle, 0, 0, len(held))
            lines = b"".join(encoder.encode(event) + b"\n" for event in events)
            line = encoder.encode(record) + b"\n"
            positions.write(lines)
            metrics.write(line)
            written += len(lines) + len(line)
    with Ledger(directory) as ledger:
        ledger.recover()
        ledger.save_state(LedgerState(tuple(held), 0.0, cycle))
    return written


def _read(directory: Path) -> None:
    for name in (METRICS_FILE, POSITIONS_FILE):
        (directory / name).read_bytes()


def _decode_keys(directory: Path) -> None:
    metrics = (directory / METRICS_FILE).read_bytes()
    positions = (directory / POSITIONS_FILE).read_bytes()
    started = time.process_time()
    METRICS_KEYS.decode_lines(metrics)
    EVENT_KEYS.decode_lines(positions)
    _excluded.append(time.process_time() - started)


#: The CPU seconds of `decode keys` spent decoding, the reading left out.
_excluded: list[float] = []


def _full_decode(directory: Path) -> None:
    metrics = msgspec.json.Decoder(CycleMetrics)
    events = msgspec.json.Decoder(Position | CloseEvent)
    for line in (directory / METRICS_FILE).read_bytes().split(b"\n")[:-1]:
        metrics.decode(line)
    for line in (directory / POSITIONS_FILE).read_bytes().split(b"\n")[:-1]:
        events.decode(line)


def _resident_mb(*, reset_peak: bool = False) -> float:
    """This process's resident memory now (VmRSS), after resetting its peak (VmHWM) to it."""
    if reset_peak:
        Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM) since the last reset."""
    return _status_mb("VmHWM")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def _medians(
    work: dict[str, Callable[[], object]], repeat: int
) -> dict[str, tuple[float, float]]:
    """Each piece of work's median wall time and median CPU time (this process's) over
    `repeat` rounds, the pieces taking turns within a round, so that a busy spell of the
    machine hits them alike. On a shared machine the CPU time is the cost; the wall time also
    holds the waits for a CPU."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in work}
    for _ in range(repeat):
        for name, run in work.items():
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (statistics.median(w for w, _ in spent), statistics.median(c for _, c in spent))
        for name, spent in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=400, help="ledger size in MB (default 400)")
    parser.add_argument("--opens", type=int, default=4, help="positions per opening cycle")
    parser.add_argument("--cycles-per-open", type=int, default=8,
                        help="cycles per cycle that opens positions (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (median)")
    args = parser.parse_args()
    logger.remove()  # the check's own log line, once per measure, is no figure
    with tempfile.TemporaryDirectory(prefix="pomabotd-verify-") as scratch:
        directory = Path(scratch)
        size = write_ledger(directory, args.mb << 20, args.opens, args.cycles_per_open)
        gc.collect()
        before = _resident_mb(reset_peak=True)
        verdict = verify_ledger(directory)
        peak = _peak_mb() - before
        gb = size / 1e9
        print(f"ledger: {size / 1e6:,.0f} MB, {verdict.cycles:,} metrics lines, "
              f"{verdict.positions_lines:,} positions lines (load {os.getloadavg()[0]:.2f}); "
              f"verify's peak memory {peak:,.0f} MB above the process's")
        figures = _medians({
            "read": lambda: _read(directory),
            "decode keys": lambda: _decode_keys(directory),
            "verify": lambda: verify_ledger(directory),
            "full decode": lambda: _full_decode(directory),
        }, args.repeat)
        wall, _ = figures["decode keys"]
        figures["decode keys"] = (wall, statistics.median(_excluded))
        for name, (wall, cpu) in figures.items():
            print(f"{name:12} wall {wall:7.3f} s {wall / gb:6.2f} s/GB   "
                  f"cpu {cpu:7.3f} s {cpu / gb:6.2f} s/GB")
        verify, keys, full = (figures[name][1] for name in ("verify", "decode keys",
                                                            "full decode"))
        print(f"cpu: verify / decode keys {verify / keys:.2f}x; verify / full decode "
              f"{verify / full:.2f}x (load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
