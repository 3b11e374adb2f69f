"""The Dask backend: the same cycles on Dask's distributed scheduler (`batch.executor = "dask"`).

`batch.dask_scheduler = "local"` starts a `LocalCluster` here, `batch.workers` worker processes
of one thread each; an address (`tcp://host:port`, `tls://host:port`) joins a running
scheduler and its workers. One client is kept for the runtime's life.

Every Dask worker runs its submissions under pomabotd's own guard (`dask_worker.py`): a warm
local pool of as many processes as the worker has threads, with the evaluator imported, each
market timed by the watchdog and a stuck process killed, exactly as on the local backend. A Dask
task runs in a thread of its worker, where no signal can interrupt a market; the guard's
processes can be. A crash or a kill there fails the submission with `WorkerLost` (saying
whether it was killed for its time), and the supervisor here replays what was lost alone, as
on any backend. A Dask worker process that dies outright has its tasks run again elsewhere by
the scheduler: each submission's answer is taken once, so nothing is lost or counted twice.

Inputs: a local cluster opens this process's descriptors like the local pool
(`shared.ON_THIS_MACHINE`). Workers elsewhere get the bytes each submission needs with it
(`carry.py`), except input files on storage every worker mounts at the same path
(`batch.dask_shared_files`), which they open themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from pomabotd.engine.executor.base import Capabilities, Gauge, Sharing, WorkerLost
from pomabotd.engine.executor.carry import carry, needs_carrying
from pomabotd.engine.executor.meter import Meter, descendant_pids
from pomabotd.engine.executor.pool import release_helpers, use_helpers
from pomabotd.engine.executor.shared import HERE, ON_SHARED_STORAGE, ON_THIS_MACHINE
from pomabotd.engine.protocol import ChunkOut, Job, Task
from pomabotd.errors import ConfigError, CycleError
from pomabotd.log import take_library_logs

if TYPE_CHECKING:
    from pomabotd.engine.schedule import BatchSettings

__all__ = ["INSTALL_HINT", "DaskExecutor"]

_R = TypeVar("_R")
#: How to install what this backend needs.
INSTALL_HINT: Final = "pip install 'pomabotd[dask]'"
#: How long joining a scheduler, and then finding a worker there, may take.
_CONNECT_TIMEOUT_S: Final = 5.0
_WORKERS_TIMEOUT_S: Final = 5.0
#: This process's descendants are looked up again at most this often (a walk costs ms).
_PIDS_EVERY_S: Final = 1.0
#: The cluster's size is asked for again at most this often (a round trip to the scheduler).
_INFO_EVERY_S: Final = 1.0
#: The workers' memory is asked for this often while a cycle runs on a remote cluster.
_USAGE_EVERY_S: Final = 0.5
#: A local cluster's own bookkeeping, slowed down: sampling the task threads' stacks every
#: 10 ms, the system and memory monitors and the event loop's tick cost its idle processes
#: about 7% of a core (measured: 1.7% each worker, 4.2% the scheduler and nannies here; 0.3%
#: and 0.65% so), and its task threads only wait for the guards, which pomabotd measures.
_QUIET: Final = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.tick.interval": "1s",
}
#: The loggers `distributed` gives stderr handlers of their own when it is imported.
_LIBRARY_LOGGERS: Final = ("distributed", "distributed.client", "distributed.gc", "bokeh",
                           "tornado", "tornado.application")
_OUTS: Final = msgspec.msgpack.Decoder(list[ChunkOut])
_PACK: Final = msgspec.msgpack.Encoder()


def _distributed() -> Any:
    """The `distributed` package; ConfigError naming the extra when it is not installed."""
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(
            f'batch.executor = "dask" needs the dask extra, which is not installed ({exc}): '
            f"{INSTALL_HINT}"
        ) from None
    take_library_logs(*_LIBRARY_LOGGERS)
    return distributed


def _guard() -> Any:
    """The module that runs on the Dask workers (it needs `distributed` to import)."""
    _distributed()
    from pomabotd.engine.executor import dask_worker

    return dask_worker


class DaskExecutor:
    """Submissions run on a Dask cluster, each under pomabotd's guard on its worker."""

    name = "dask"

    def __init__(self, settings: BatchSettings) -> None:
        self.evaluator = settings.evaluator
        self._scheduler = settings.dask_scheduler
        self._local_cluster = settings.dask_scheduler == "local"
        self._shared_files = settings.dask_shared_files
        self._requested = settings.workers
        self.capabilities = Capabilities(
            interrupts=True, kills=False, shares_files=self._local_cluster
        )
        #: `distributed`'s LocalCluster and Client (typed loosely: the package is optional).
        self._cluster: Any = None
        self._client: Any = None
        self._helpers = False
        self._abandoned = False
        self._plugin = f"pomabotd-guard:{self.evaluator}"
        self._guard_restarts = 0
        self._known: set[str] = set()
        self._departed = 0
        self._pids: list[int] = []
        self._pids_at = 0.0
        self._threads = 0
        self._looked_at = -_INFO_EVERY_S

    @classmethod
    def from_settings(cls, settings: BatchSettings) -> DaskExecutor:
        """The executor `batch.dask_scheduler` names."""
        return cls(settings)

    @property
    def client(self) -> Any:
        """The client, once started."""
        if self._client is None:
            raise CycleError("the Dask executor is not started")
        return self._client

    @property
    def workers(self) -> int:
        """Tasks the cluster runs at once: its workers' threads (at least 1), as the
        scheduler said at most a second ago."""
        if self._client is None:
            return max(1, self._requested)
        self._look()
        return max(1, self._threads)

    @property
    def restarts(self) -> int:
        """Guard processes replaced after a crash or a kill, plus Dask workers that left
        (as the scheduler said at most a second ago)."""
        if self._client is not None:
            self._look()
        return self._guard_restarts + self._departed

    def _look(self, *, now: bool = False) -> None:
        """Ask the scheduler which workers it has, unless it was asked within a second (each
        question is a round trip)."""
        if not now and time.monotonic() - self._looked_at <= _INFO_EVERY_S:
            return
        info = self._client.scheduler_info()["workers"]
        present = set(info)
        self._departed += len(self._known - present)
        self._known = present
        self._threads = sum(int(worker.get("nthreads", 1)) for worker in info.values())
        self._looked_at = time.monotonic()

    def start(self) -> None:
        """Start or join the cluster, and set the guard up on every worker (it imports the
        evaluator there, so a plugin missing on a worker is found now)."""
        if self._client is not None:
            return
        distributed = _distributed()
        try:
            if self._local_cluster:
                use_helpers()
                self._helpers = True
                import dask

                with dask.config.set(_QUIET):
                    self._cluster = distributed.LocalCluster(
                        n_workers=max(1, self._requested), threads_per_worker=1,
                        processes=True,
                        # Its HTTP server (metrics, a dashboard if bokeh is there) on a free
                        # port of this machine only, never one another cluster may hold.
                        host="127.0.0.1", dashboard_address="127.0.0.1:0",
                        silence_logs=logging.ERROR,
                    )
                self._client = distributed.Client(self._cluster, set_as_default=False)
            else:
                self._client = _connect(distributed, self._scheduler)
            self._register()
            self._look(now=True)
        except BaseException:
            self.close()
            raise

    def _register(self) -> None:
        client = self.client
        try:
            guard = _guard()
            client.register_plugin(guard.Guard(self.evaluator), name=self._plugin)
        except (ImportError, AttributeError, ConfigError) as exc:
            raise ConfigError(
                f"batch.evaluator {self.evaluator!r} cannot be loaded on the Dask workers "
                f"({exc}): install pomabotd and the strategy plugin where every worker can "
                "import them"
            ) from None

    def close(self) -> None:
        """Stop the guards on the workers and leave (a local cluster is shut down)."""
        client, self._client = self._client, None
        cluster, self._cluster = self._cluster, None
        if client is not None:
            if cluster is None:
                # The scheduler may be gone: leaving is then all there is left to do.
                with contextlib.suppress(Exception):
                    client.unregister_worker_plugin(self._plugin)
            client.close()
        if cluster is not None:
            cluster.close()
        del cluster, client  # its semaphores must be gone before the helpers stop
        if self._helpers:
            self._helpers = False
            release_helpers()

    def submit(self, tasks: list[Task], job: Job) -> asyncio.Future[bytes]:
        """Send the submission to the cluster (with the bytes its workers cannot open). If a
        submission was abandoned while a worker may have run it, the guards first drop the
        work nobody waits for, so that it does not hold a worker into this run."""
        client = self.client
        if self._abandoned:
            self._abandoned = False
            client.run(_guard().drop_abandoned)
        return asyncio.ensure_future(self._run(tasks, job))

    async def _run(self, tasks: list[Task], job: Job) -> bytes:
        if not needs_carrying(job):
            return await self._remote(tasks, job)
        if len(tasks) > 1 and any(task.search or task.stray for task in tasks):
            answers = await asyncio.gather(*(self._carried([task], job) for task in tasks))
            return _PACK.encode([out for answer in answers for out in _OUTS.decode(answer)])
        return await self._carried(tasks, job)

    async def _carried(self, tasks: list[Task], job: Job) -> bytes:
        """Run with the bytes carried; a search task whose run went past them is sent again
        with more, and the run it reports is moved back to the input's offsets."""
        for widen in itertools.count():
            parcel = carry(tasks, job, widen)
            answer = await self._remote(parcel.tasks, parcel.job)
            if not parcel.shifts:
                return answer
            outs = _OUTS.decode(answer)
            if any(out.short for out in outs):
                continue
            for out in outs:
                shift = parcel.shifts.get(out.index)
                if shift is not None and out.run is not None:
                    out.run = (out.run[0] + shift, out.run[1] + shift)
            return _PACK.encode(outs)
        raise AssertionError("unreachable")

    async def _remote(self, tasks: list[Task], job: Job) -> bytes:
        distributed = _distributed()
        future = self.client.submit(
            _guard().run_submission, self.evaluator, tasks, job,
            key=f"pomabotd-{uuid.uuid4().hex}", pure=False,
        )
        try:
            answer: bytes = await _awaitable(future)
        except asyncio.CancelledError:
            self._abandoned = True  # Dask cancels it if queued; a worker may run it still
            raise
        except distributed.KilledWorker:
            raise WorkerLost("the Dask workers running it kept dying") from None
        except WorkerLost:
            self._guard_restarts += 1
            raise
        except OSError as exc:  # the scheduler went away
            raise CycleError(f"the Dask scheduler was lost: {exc}") from exc
        return answer

    async def recover(self) -> None:
        """Nothing to do here: each guard replaced its own processes before answering."""

    def busy(self) -> list[tuple[int, int]]:
        """Stuck markets are the guards' to kill, where they run."""
        return []

    def kill(self, worker: int) -> bool:
        """Not from here: each guard kills its own stuck processes."""
        return False

    def stalled(self, after_ns: int) -> list[tuple[int, str]]:
        """Not from here: each guard replaces its own processes that stand still."""
        return []

    def worker_names(self) -> list[str]:
        """The Dask workers' addresses."""
        if self._client is None:
            return []
        return sorted(self._client.scheduler_info()["workers"])

    def sharing(self) -> Sharing:
        """A local cluster opens this process's descriptors; workers elsewhere open input
        files on shared storage, or are carried the bytes."""
        if self._local_cluster:
            return ON_THIS_MACHINE
        return ON_SHARED_STORAGE if self._shared_files else HERE

    def gauge(self) -> Gauge:
        """A local cluster's processes descend from this one and are measured like a pool's;
        a remote cluster's workers report their own figures while the cycle runs."""
        if self._local_cluster:
            return Meter(self._process_ids)
        return _ClusterGauge(self.client)

    def _process_ids(self) -> list[int]:
        """This process and every process of the local cluster (looked up again at most once
        a second: workers restart and guards replace their processes)."""
        now = time.monotonic()
        if not self._pids or now - self._pids_at > _PIDS_EVERY_S:
            me = os.getpid()
            self._pids = [me, *descendant_pids(me)]
            self._pids_at = now
        return self._pids

    async def map(self, fn: Callable[..., _R], calls: Sequence[tuple[Any, ...]]) -> list[_R]:
        """`fn(*args)` for each of `calls`, on the workers, in order."""
        futures = [self.client.submit(_guard().run_call, fn, *args, pure=False)
                   for args in calls]
        return list(await asyncio.gather(*(_awaitable(future) for future in futures)))


def _connect(distributed: Any, address: str) -> Any:
    """A client of the scheduler at `address` that has at least one worker; ConfigError
    naming `batch.dask_scheduler` when there is none to be had within about 15 s."""
    try:
        client = distributed.Client(address, timeout=_CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as exc:  # refused, timed out, a TLS setting the scheduler does not take
        raise ConfigError(
            f"batch.dask_scheduler {address!r}: no Dask scheduler answered there within "
            f"{_CONNECT_TIMEOUT_S:.0f} s ({exc})"
        ) from None
    try:
        client.wait_for_workers(1, timeout=_WORKERS_TIMEOUT_S)
    except (OSError, TimeoutError):
        client.close()
        raise ConfigError(
            f"batch.dask_scheduler {address!r}: the Dask scheduler there has no worker "
            f"(none joined within {_WORKERS_TIMEOUT_S:.0f} s): start some with "
            f"`dask worker {address} --nthreads 1`"
        ) from None
    return client


def _awaitable(future: Any) -> asyncio.Future[Any]:
    """A Dask future as an asyncio one of the running loop. Its result is fetched in Dask's
    callback thread, never on this loop; cancelling the asyncio future cancels the task."""
    loop = asyncio.get_running_loop()
    outer: asyncio.Future[Any] = loop.create_future()

    def settle(done: Any) -> None:
        try:
            value = done.result()
        except BaseException as exc:  # handed to the awaiting coroutine, whatever it is
            loop.call_soon_threadsafe(_fail, outer, exc)
        else:
            loop.call_soon_threadsafe(_succeed, outer, value)

    future.add_done_callback(settle)
    outer.add_done_callback(lambda settled: future.cancel() if settled.cancelled() else None)
    return outer


def _succeed(outer: asyncio.Future[Any], value: Any) -> None:
    if not outer.done():
        outer.set_result(value)


def _fail(outer: asyncio.Future[Any], exc: BaseException) -> None:
    if outer.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        outer.cancel()
    else:
        outer.set_exception(exc)


class _ClusterGauge:
    """This process measured as always, plus what the cluster's workers (and their guards'
    processes) report, asked every half second while the cycle runs: their summed PSS and
    their CPU time. The two peaks are added, so the figure is at most a little high."""

    covers_workers = True

    def __init__(self, client: Any) -> None:
        self._client = client
        me = [os.getpid()]
        self._own = Meter(lambda: me)
        self._peak = 0
        self._cpu_first: dict[str, float] = {}
        self._cpu_last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._ended = 0.0

    @property
    def peak_mb(self) -> float:
        """This process's peak plus the workers' peak, in MiB."""
        return self._own.peak_mb + self._peak / 1_048_576

    def cpu_percent(self) -> float:
        """This process's and the workers' CPU time over the wall time, in % of one core."""
        wall = self._ended - self._started
        own = self._own.cpu_percent()
        used = sum(self._cpu_last[name] - self._cpu_first.get(name, 0.0)
                   for name in self._cpu_last)
        return own + (100.0 * used / wall if wall > 0 else 0.0)

    def start(self) -> None:
        """Measure from now on."""
        self._started = self._ended = time.perf_counter()
        self._own.start()
        self._ask(first=True)
        self._thread = threading.Thread(target=self._run, name="cluster-gauge", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """One last look, then stop."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._own.stop()
        self._ask(first=False)

    def _run(self) -> None:
        while not self._stop.wait(_USAGE_EVERY_S):
            self._ask(first=False)

    def _ask(self, *, first: bool) -> None:
        try:
            usage = self._client.run(_guard().usage, wait=True)
        except Exception:  # a worker leaving, a scheduler refusing `run`: no figure this time
            self.covers_workers = False
            return
        self._peak = max(self._peak, sum(pss for pss, _ in usage.values()))
        for name, (_, cpu) in usage.items():
            if first:
                self._cpu_first[name] = cpu
            self._cpu_last[name] = cpu
        self._ended = time.perf_counter()

    def __enter__(self) -> _ClusterGauge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
