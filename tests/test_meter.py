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

from pomabotd.engine.meter import Meter, pss_bytes


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


@pytest.mark.slow
def test_cycle_memory_covers_loading_and_matches_an_outside_measure(tmp_path: Path) -> None:
    """run-once on 80,000 synthetic markets: the rss_mb it records is at least the peak
    summed PSS of its process tree as sampled from outside (loading the input included)."""
    config = tmp_path / "big.toml"
    config.write_text("[sources]\nsynthetic_markets = 80000\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "pomabotd", "run-once", "--config", str(config), "--out",
         str(tmp_path / "out"), "--json"],
        cwd=tmp_path, env=clean_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for proc in procs:
                    with contextlib.suppress(psutil.Error):
                        total += proc.memory_full_info().pss
            except psutil.Error:
                return
            peak = max(peak, total)
            done.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        stdout, stderr = process.communicate(timeout=240)
    finally:
        done.set()
        watcher.join()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    recorded_mb = json.loads(stdout)["rss_mb"]
    outside_mb = peak / 1_048_576
    assert 0.85 * outside_mb <= recorded_mb <= 1.6 * outside_mb, (recorded_mb, outside_mb)
    assert recorded_mb > 100  # the input alone is about 55 MB of JSON lines
