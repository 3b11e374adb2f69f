"""What a cycle costs, read from the OS while it runs: peak memory and CPU time.

Memory is the sum of the proportional set sizes (PSS, `/proc/PID/smaps_rollup`) of pomabotd and
every process it started (fork server, resource tracker, workers), plus the memory files holding
inputs for the workers (`shared.memory_file_bytes`), which no process maps and PSS would miss.
PSS splits each page among the processes that map it, so a page shared by the fork server and
its workers counts once in the total, which is what the machine really spends; resident set
sizes would count it in each.

Reading PSS walks the page tables, so it costs about a millisecond per process and grows with
the memory measured; a cycle of a few milliseconds cannot afford it at its start and end. So:

- **Short spans** (the first full sample is due `_FIRST_FULL_S` after the start): each process's
  PSS is the one last read (kept across cycles, read again when its resident size moved by more
  than `_DRIFT`), plus how far its resident size rose above its size at that reading, up to the
  kernel's high-water mark of the span (`VmHWM`, reset at the start through
  `/proc/PID/clear_refs`). Memory a process takes is private, which PSS counts whole, so this
  is a PSS figure; it adds each process's own peak, so it is at most a little high.
- **Longer spans**: a background thread takes full samples (summed PSS at one moment) spaced
  so that they cost about 5% of one core (at least every half second), and one at once when the
  summed resident size climbs past the last full sample's; between them it reads resident sizes
  every 50 ms, a constant cost. A peak of pomabotd itself too brief for either (building a big
  input) is still counted: each full sample adds how far pomabotd's high-water mark rose above
  its present size. Workers' peaks are left out there: they need not coincide.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final

import psutil

from pomabotd.engine.executor.shared import memory_file_bytes

__all__ = ["Meter", "descendant_pids", "pss_bytes", "rss_bytes"]

_TICK_S: Final = 0.05
_MAX_PERIOD_S: Final = 0.5
#: A span shorter than this takes no full sample: the cached PSS figures serve.
_FIRST_FULL_S: Final = 0.1
#: A full sample may cost this share of the period that follows it.
_COST_SHARE: Final = 20
#: A rise of the summed RSS past the last full sample's by this fraction triggers one.
_RISE: Final = 1.03
#: A cached PSS is read again once the process's resident size moved by this fraction.
_DRIFT: Final = 0.05
_PSS: Final = b"\nPss:"
_HWM: Final = b"VmHWM:"
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
#: pid -> (PSS, resident size) when PSS was last read, across meters and cycles.
_KNOWN: dict[int, tuple[int, int]] = {}


def _high_water(pid: int, reset: bool) -> int | None:
    """The process's peak resident size since the last reset (then reset it, if `reset`);
    None where the kernel does not tell."""
    try:
        with open(f"/proc/{pid}/status", "rb") as file:
            status = file.read()
        start = status.find(_HWM)
        if start < 0:
            return None
        hwm = int(status[start + len(_HWM) : status.find(b"\n", start)].split()[0]) * 1024
        if reset:
            with open(f"/proc/{pid}/clear_refs", "wb") as refs:
                refs.write(b"5")
    except (OSError, IndexError, ValueError):
        return None
    return hwm


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


def _known_pss(pid: int, rss: int) -> int | None:
    """The PSS last read for `pid`, read again if its resident size drifted since."""
    known = _KNOWN.get(pid)
    if known is not None and abs(rss - known[1]) <= _DRIFT * max(known[1], 1):
        return known[0]
    pss = pss_bytes(pid)
    if pss is not None:
        _KNOWN[pid] = (pss, rss)
    return pss


class Meter:
    """Peak memory and CPU time of `pids()` between `start` and `stop`.

    `pids` is called at every sample, so processes started or replaced meanwhile (a rebuilt
    pool) are measured too; it must include this process. Usable as a context manager.
    """

    #: Every process that works for the cycle is measured (`Gauge.covers_workers`).
    covers_workers = True

    def __init__(self, pids: Callable[[], Sequence[int]]) -> None:
        self._pids = pids
        self._lock = threading.Lock()
        self._running = False
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
        self._cpu_reads = 0
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
        """The highest memory figure seen so far, in MiB."""
        return self.peak_bytes / 1_048_576

    @property
    def samples(self) -> int:
        """How many measurements were taken (full or cheap)."""
        return self._samples

    def start(self) -> None:
        """Note where every process stands, and start sampling in the background."""
        self._started = self._ended = time.perf_counter()
        self._own_cpu = self._own_cpu_end = time.process_time()
        with self._lock:
            for pid in self._pids():
                _high_water(pid, reset=True)
                if pid != self._own_pid:
                    self._child_cpu(pid)
            self._next_full = self._started + _FIRST_FULL_S
            self._cpu_reads = 1
            self._running = True
        _sampler().add(self)

    def stop(self) -> None:
        """Stop the background sampling after one last measurement; safe to call twice."""
        with self._lock:
            if not self._running:
                return
            self._running = False
        _sampler().remove(self)
        if self._samples:
            self.sample()
        else:
            self._estimate()

    def sample(self) -> None:
        """Take a full sample now (any thread may call it)."""
        with self._lock:
            began = time.thread_time()
            total = memory_file_bytes()
            rss = 0
            for pid in self._pids():
                size = pss_bytes(pid)
                if size is None:
                    continue
                resident = rss_bytes(pid)
                _KNOWN[pid] = (size, resident)
                rss += resident
                total += size
                if pid == self._own_pid:
                    high = _high_water(pid, reset=True)
                    total += max(0, (high or 0) - resident)
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

    def _estimate(self) -> None:
        """The short span's figure: known PSS plus each process's rise above it."""
        with self._lock:
            total = memory_file_bytes()
            pids = self._pids()
            for pid in pids:
                resident = rss_bytes(pid)
                if not resident:
                    continue
                pss = _known_pss(pid, resident)
                if pss is None:
                    continue
                high = _high_water(pid, reset=False) or resident
                total += pss + max(0, high - _KNOWN[pid][1])
                if pid != self._own_pid:
                    self._child_cpu(pid)
            for gone in set(_KNOWN) - set(pids):
                if not os.path.exists(f"/proc/{gone}"):
                    del _KNOWN[gone]
            self.peak_bytes = max(self.peak_bytes, total)
            self._own_cpu_end = time.process_time()
            self._ended = time.perf_counter()
            self._samples += 1

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
        self._first_cpu.setdefault(pid, cpu if self._cpu_reads == 0 else 0.0)
        self._last_cpu[pid] = cpu

    def tick(self) -> None:
        """The background thread's look: a full sample when one is due."""
        if not self._running or (time.perf_counter() < self._next_full and not self._rising()):
            return
        with self._lock:
            running = self._running
        if running:
            self.sample()

    def _rising(self) -> bool:
        if not self._samples:
            return False  # before the first full sample, only time brings one
        rss = sum(rss_bytes(pid) for pid in self._pids())
        return rss > self._rss_at_full * _RISE


class _Sampler:
    """One background thread for every running meter (a thread started per cycle would cost a
    short cycle much of its time on a busy machine); asleep while no meter runs."""

    def __init__(self) -> None:
        self._meters: list[Meter] = []
        self._lock = threading.Lock()
        self._busy = threading.Event()
        threading.Thread(target=self._run, name="meter", daemon=True).start()

    def add(self, meter: Meter) -> None:
        with self._lock:
            self._meters.append(meter)
            self._busy.set()

    def remove(self, meter: Meter) -> None:
        with self._lock:
            if meter in self._meters:
                self._meters.remove(meter)
            if not self._meters:
                self._busy.clear()

    def _run(self) -> None:
        while True:
            self._busy.wait()
            time.sleep(_TICK_S)
            with self._lock:
                meters = list(self._meters)
            for meter in meters:
                meter.tick()


_SAMPLER: _Sampler | None = None
_SAMPLER_LOCK = threading.Lock()


def _sampler() -> _Sampler:
    global _SAMPLER
    with _SAMPLER_LOCK:
        if _SAMPLER is None:
            _SAMPLER = _Sampler()
        return _SAMPLER
