"""Memory figures cover the whole cycle, input loading included, with shared pages once."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from conftest import clean_environ

from pomabotd.engine.executor.meter import Meter, pss_bytes


def test_pss_of_this_process_is_read_and_below_its_rss() -> None:
    """PSS is read for a live process (at most its RSS) and None for a pid that is gone."""
    me = psutil.Process()
    pss = pss_bytes(me.pid)
    assert pss is not None and 0 < pss <= me.memory_info().rss
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    assert pss_bytes(finished.pid) is None


def test_meter_sees_memory_taken_between_its_samples() -> None:
    """A peak reached and released while the meter runs in the background is recorded."""
    with Meter(lambda: [psutil.Process().pid]) as meter:
        baseline = meter.peak_bytes
        block = bytearray(200 * 1_048_576)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        meter.sample()
        del block
    assert meter.peak_bytes - baseline > 150 * 1_048_576
    assert meter.samples >= 2 and meter.cpu_percent() > 0


class _OutsidePeak:
    """The peak summed PSS of a process tree, sampled from outside every 50 ms."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.peak = 0
        self._root = psutil.Process(process.pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.is_set():
            try:
                procs = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_full_info().pss
            self.peak = max(self.peak, total)
            self._done.wait(0.05)

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._done.set()
        self._thread.join()
        return self.peak / 1_048_576


def _measured(tmp_path: Path, *args: str) -> tuple[dict[str, object], float]:
    """Run pomabotd with `args` (printing JSON), watched from outside: its output and the
    peak summed PSS of its process tree."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pomabotd", *args], cwd=tmp_path, env=clean_environ(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    outside = _OutsidePeak(process)
    try:
        stdout, stderr = process.communicate(timeout=240)
    finally:
        peak = outside.stop()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    return json.loads(stdout), peak


@pytest.mark.slow
def test_cycle_memory_covers_loading_and_matches_an_outside_measure(tmp_path: Path) -> None:
    """run-once on 80,000 synthetic markets: the rss_mb it records is at least the peak
    summed PSS of its process tree as sampled from outside (loading the input included)."""
    config = tmp_path / "big.toml"
    config.write_text("[sources]\nsynthetic_markets = 80000\n")
    report, outside_mb = _measured(
        tmp_path, "run-once", "--config", str(config), "--out", str(tmp_path / "out"), "--json"
    )
    recorded_mb = report["rss_mb"]
    assert isinstance(recorded_mb, float)
    assert 0.85 * outside_mb <= recorded_mb <= 1.6 * outside_mb, (recorded_mb, outside_mb)
    assert recorded_mb > 100  # the input alone is about 55 MB of JSON lines


#: The documented bound on a 200,000-market stress run, generation included (docs/engine.md).
STRESS_200K_MB = 400


@pytest.mark.slow
def test_a_200k_stress_run_stays_within_its_memory_bound(tmp_path: Path) -> None:
    """stress on 200,000 markets (about 140 MB of JSON lines, read from files by the workers)
    never takes more than the documented bound, measured from outside as summed PSS, and the
    peak it reports is not below what was seen outside during its cycle."""
    report, outside_mb = _measured(tmp_path, "stress", "--markets", "200000", "--json")
    assert report["markets_evaluated"] == 200_000
    assert outside_mb <= STRESS_200K_MB, outside_mb
    assert isinstance(report["peak_rss_mb"], float)
    assert report["peak_rss_mb"] <= STRESS_200K_MB
