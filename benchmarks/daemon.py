"""The daemon's costs: a warm cycle against run-once, a soak, and idle CPU.

Run from a checkout with pomabotd installed:

    python benchmarks/daemon.py                  # all three parts
    python benchmarks/daemon.py --soak-cycles 100  # a shorter soak

1. Warm cycle vs run-once: the cycle of `pomabotd run-once` on the embedded default (1,000
   synthetic markets), as its metrics line times it (from after the pool start to the written
   lines), against the same cycle in a running daemon on its warm pool (its second and later
   cycles). Both are medians over alternating runs, so a slow spell of a shared machine hits
   both alike; the ratio is what matters.
2. Soak: a daemon at `interval_s = 0.05` for `--soak-cycles` cycles; memory (summed PSS of the
   daemon and its workers), open file descriptors and child processes (zombies included) are
   sampled every 50 cycles and must stay flat.
3. Idle: with `batch.enabled = false`, the daemon's CPU time over `--idle-seconds`.
Every figure printed is measured here, none is assumed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from pomabotd.engine.executor.meter import pss_bytes

ENV = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _start(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pomabotd", "run", "--status-addr", "", "--out", "out", *args],
        cwd=workdir, env={**ENV, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def _wait_cycles(out: Path, count: int, timeout: float = 600) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        metrics = _lines(out / "metrics.jsonl")
        if len(metrics) >= count:
            return metrics
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(metrics)} of {count} cycles in {timeout} s")
        time.sleep(0.05)


def warm_vs_run_once(rounds: int) -> None:
    """A daemon cycle on a warm pool against run-once's cycle, which starts after its pool."""
    once_s: list[float] = []
    daemon_s: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for index in range(rounds):
            result = subprocess.run(
                [sys.executable, "-m", "pomabotd", "run-once", "--json", "--out",
                 str(root / f"once-{index}")],
                env=ENV, check=True, capture_output=True, text=True,
            )
            once_s.append(json.loads(result.stdout)["processing_time_ms"] / 1000)
            workdir = root / f"daemon-{index}"
            workdir.mkdir()
            process = _start(workdir, "--interval", "0.2")
            try:
                metrics = _wait_cycles(workdir / "out", 6)
            finally:
                _stop(process)
            daemon_s.extend(m["processing_time_ms"] / 1000 for m in metrics[1:])
    once, warm = statistics.median(once_s), statistics.median(daemon_s)
    print(f"run-once cycle, pool start excluded (median of {rounds}): {once * 1000:8.1f} ms")
    print(f"warm daemon cycle (median of {len(daemon_s)}):                {warm * 1000:8.1f} ms")
    print(f"warm cycle / run-once cycle:                            {warm / once:8.2f}x")


def soak(cycles: int) -> None:
    """Memory, descriptors and children over `cycles` cycles at interval_s = 0.05."""
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        process = _start(workdir, "--interval", "0.05")
        root = psutil.Process(process.pid)
        rows = []
        try:
            for mark in range(50, cycles + 1, 50):
                _wait_cycles(workdir / "out", mark)
                procs = [root, *root.children(recursive=True)]
                memory = sum(pss_bytes(p.pid) or 0 for p in procs) / 1_048_576
                fds = root.num_fds()
                children = root.children(recursive=True)
                zombies = sum(1 for c in children if c.status() == psutil.STATUS_ZOMBIE)
                rows.append((mark, memory, fds, len(children), zombies))
        finally:
            _stop(process)
        metrics = _lines(workdir / "out" / "metrics.jsonl")
    print(f"soak: {len(metrics)} cycles at interval_s 0.05")
    print(f"{'cycle':>6} {'PSS MB':>8} {'fds':>5} {'children':>9} {'zombies':>8}")
    for mark, memory, fds, children, zombies in rows:
        print(f"{mark:>6} {memory:>8.1f} {fds:>5} {children:>9} {zombies:>8}")
    first, last = rows[0], rows[-1]
    print(f"memory {first[1]:.1f} -> {last[1]:.1f} MB ({last[1] - first[1]:+.1f}), "
          f"fds {first[2]} -> {last[2]}, children {first[3]} -> {last[3]}, "
          f"zombies at most {max(r[4] for r in rows)}")
    rss = [m["rss_mb"] for m in metrics]
    print(f"per-cycle rss_mb: first 50 median {statistics.median(rss[:50]):.1f}, "
          f"last 50 median {statistics.median(rss[-50:]):.1f}")


def idle(seconds: float) -> None:
    """CPU time of a daemon that runs no cycles, over `seconds`."""
    with tempfile.TemporaryDirectory() as scratch:
        process = _start(Path(scratch), env={"BATCH_MODE_ENABLED": "false"})
        try:
            time.sleep(3)  # pool started, loop asleep
            procs = [psutil.Process(process.pid),
                     *psutil.Process(process.pid).children(recursive=True)]
            before = sum(sum(p.cpu_times()[:2]) for p in procs)
            time.sleep(seconds)
            after = sum(sum(p.cpu_times()[:2]) for p in procs)
        finally:
            _stop(process)
    used = after - before
    print(f"idle: {used * 1000:.0f} ms of CPU in {seconds:.0f} s "
          f"({100 * used / seconds:.3f}% of one core), daemon and {len(procs) - 1} children")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--soak-cycles", type=int, default=400)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    warm_vs_run_once(args.rounds)
    soak(args.soak_cycles)
    idle(args.idle_seconds)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
