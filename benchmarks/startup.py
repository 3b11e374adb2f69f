"""How long the command line takes to start: `pomabotd --version` and `--help` against Python's
own start (`python -c pass`), measured in the same run.

Run from a checkout with pomabotd installed:

    python benchmarks/startup.py             # 20 runs of each
    python benchmarks/startup.py --runs 50

The commands are run in turn (one of each, then again), so that a slow spell of a shared
machine hits them alike; each figure is the median wall time of `--runs` fresh processes. The
target: `pomabotd --version` within Python's start + 0.1 s. The load average is printed with
the figures, since other work on the machine moves them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_OVER_PYTHON_S = 0.1


def _commands() -> dict[str, list[str]]:
    python = sys.executable
    script = shutil.which("pomabotd", path=str(Path(python).parent)) or "pomabotd"
    return {
        "python -c pass": [python, "-c", "pass"],
        "pomabotd --version": [script, "--version"],
        "python -m pomabotd --version": [python, "-m", "pomabotd", "--version"],
        "pomabotd --help": [script, "--help"],
    }


def _time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    runs = parser.parse_args().runs
    commands = _commands()
    for command in commands.values():  # warm the file cache and the bytecode
        _time(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(_time(command))
    base = statistics.median(times["python -c pass"])
    print(f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"median of {runs} runs each")
    for name, samples in times.items():
        median = statistics.median(samples)
        over = "" if name == "python -c pass" else f"  (+{median - base:.3f} s over Python)"
        print(f"  {name:<30} {median:.3f} s  least {min(samples):.3f} s{over}")
    over = statistics.median(times["pomabotd --version"]) - base
    verdict = "met" if over <= TARGET_OVER_PYTHON_S else "missed"
    print(f"target: --version within Python's start + {TARGET_OVER_PYTHON_S} s: {verdict} "
          f"(+{over:.3f} s)")


if __name__ == "__main__":
    main()
