"""What a cycle costs, read from the OS while it runs: peak memory and CPU time.

Memory is the sum of the proportional set sizes (PSS, `/proc/PID/smaps_rollup`) of pomabotd and
every process it started (fork server, resource tracker, workers). PSS splits each page among
the processes that map it, so a page shared by the fork server and its workers counts once in
the total, which is what the machine really spends; resident set sizes would count it in each.

A background thread samples from `start` to `stop`, whatever the event loop is doing (decoding
a big input holds the loop for seconds, and that is when memory peaks). Reading PSS walks the
page tables, so its cost grows with the memory measured: the thread spaces full samples to
spend about 5% of one core of its own CPU time on them (at least every half second). Between
them it reads each process's resident size every 50 ms (`/proc/PID/statm`, a constant cost),
and takes a full sample at once when their sum climbs past the last full sample's. A peak of
pomabotd itself too brief for either (building a big input) is still counted: each full sample
also reads the kernel's high-water mark of its resident size (`VmHWM`, reset after every sample
through `/proc/PID/clear_refs`) and adds how far it rose above the present size. Workers are
left out of this: their peaks need not coincide with pomabotd's, and summing them would
overstate the total. Such short-lived peaks are private memory (buffers and
objects being built), which PSS counts whole, so the sum stays a PSS figure.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final

import psutil

__all__ = ["Meter", "descendant_pids", "pss_bytes", "rss_bytes"]

_TICK_S: Final = 0.05
_MAX_PERIOD_S: Final = 0.5
#: A full sample may cost this share of the period that follows it.
_COST_SHARE: Final = 20
#: A rise of the summed RSS past the last full sample's by this fraction triggers one.
_RISE: Final = 1.03
_PSS: Final = b"\nPss:"
_HWM: Final = b"VmHWM:"
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def _transient_bytes(pid: int, rss: int) -> int:
    """How far the process's resident size rose above `rss` since the last reset, and reset
    the high-water mark for the next sample; 0 where the kernel does not allow it."""
    try:
        with open(f"/proc/{pid}/status", "rb") as file:
            status = file.read()
        start = status.find(_HWM)
        if start < 0:
            return 0
        hwm = int(status[start + len(_HWM) : status.find(b"\n", start)].split()[0]) * 1024
        with open(f"/proc/{pid}/clear_refs", "wb") as refs:
            refs.write(b"5")
    except (OSError, IndexError, ValueError):
        return 0
    return max(0, hwm - rss)


def descendant_pids(pid: int) -> list[int]:
    """Every living descendant of `pid`, parents before their children.

    Read from `/proc/PID/task/TID/children`, which lives inside each process's own directory:
    it stays readable under systemd's `ProcSubset=pid`, which hides `/proc/stat` (and with it
    psutil's `children()`, which needs the boot time). A kernel without that file falls back
    to the parent pid in each `/proc/PID/stat`.
    """
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop(0)
        children = _children(parent)
        found += children
        queue += children
    return found


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as file:
                found += [int(child) for child in file.read().split()]
        except FileNotFoundError:
            if os.path.exists(f"/proc/{pid}/task/{task}"):
                return _children_by_stat(pid)
        except (OSError, ValueError):
            continue
    return found


def _children_by_stat(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
            if int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


def rss_bytes(pid: int) -> int:
    """The resident set size of one process from `/proc/PID/statm` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as file:
            return int(file.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int | None:
    """The proportional set size of one process, or None if it is gone or unreadable.

    Where `smaps_rollup` is missing (kernels before 4.14) the resident set size stands in.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as file:
            data = file.read()
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            return None
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None
    except OSError:
        return None
    start = data.find(_PSS)
    if start < 0:
        return None
    fields = data[start + len(_PSS) : data.find(b"\n", start + 1)].split()
    return int(fields[0]) * 1024 if fields else None


class Meter:
    """Peak summed PSS and CPU time of `pids()` between `start` and `stop`.

    `pids` is called at every sample, so processes started or replaced meanwhile (a rebuilt
    pool) are measured too; it must include this process. Usable as a context manager.
    """

    def __init__(self, pids: Callable[[], Sequence[int]]) -> None:
        self._pids = pids
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._own_pid = os.getpid()
        self._procs: dict[int, psutil.Process] = {}
        self._first_cpu: dict[int, float] = {}
        self._last_cpu: dict[int, float] = {}
        self._own_cpu = 0.0
        self._own_cpu_end = 0.0
        self._started = 0.0
        self._ended = 0.0
        self._next_full = 0.0
        self._rss_at_full = 0
        self._samples = 0
        self.peak_bytes = 0

    def __enter__(self) -> Meter:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def peak_mb(self) -> float:
        """The highest summed PSS seen so far, in MiB."""
        return self.peak_bytes / 1_048_576

    @property
    def samples(self) -> int:
        """How many samples were taken."""
        return self._samples

    def start(self) -> None:
        """Take the first sample and start sampling in the background."""
        self._started = time.perf_counter()
        self._own_cpu = time.process_time()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background sampling after one last sample; safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopped.set()
        thread.join()
        self.sample()

    def sample(self) -> None:
        """Measure now (any thread may call it)."""
        with self._lock:
            began = time.thread_time()
            total = 0
            rss = 0
            for pid in self._pids():
                size = pss_bytes(pid)
                if size is None:
                    continue
                resident = rss_bytes(pid)
                rss += resident
                total += size
                if pid == self._own_pid:
                    total += _transient_bytes(pid, resident)
                else:
                    self._child_cpu(pid)
            self.peak_bytes = max(self.peak_bytes, total)
            self._own_cpu_end = time.process_time()
            self._ended = time.perf_counter()
            self._samples += 1
            self._rss_at_full = rss
            cost = time.thread_time() - began
            period = min(max(cost * _COST_SHARE, _TICK_S), _MAX_PERIOD_S)
            self._next_full = self._ended + period

    def cpu_percent(self) -> float:
        """CPU time of every measured process over the wall time, in % of one core."""
        with self._lock:
            wall = self._ended - self._started
            used = self._own_cpu_end - self._own_cpu
            used += sum(self._last_cpu[pid] - self._first_cpu[pid] for pid in self._last_cpu)
        return 100.0 * used / wall if wall > 0 else 0.0

    def _child_cpu(self, pid: int) -> None:
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            times = proc.cpu_times()
        except psutil.Error:
            return
        cpu = times.user + times.system
        # A process first seen after the start began within the span: all its time counts.
        self._first_cpu.setdefault(pid, cpu if self._samples == 0 else 0.0)
        self._last_cpu[pid] = cpu

    def _run(self) -> None:
        while not self._stopped.wait(_TICK_S):
            if time.perf_counter() >= self._next_full or self._rising():
                self.sample()

    def _rising(self) -> bool:
        rss = sum(rss_bytes(pid) for pid in self._pids())
        return rss > self._rss_at_full * _RISE
