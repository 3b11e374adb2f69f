"""The Dask executor: the same cycles on a `LocalCluster` and on a scheduler with two workers
started by the `dask` command line as separate processes (as on separate machines), on
127.0.0.1. Results equal the local pool's, faults stay isolated, a worker killed mid-cycle
loses nothing, and a scheduler that cannot be reached is bad configuration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psutil
import pytest
from conftest import AS_OF_TEXT, RunCli, clean_environ
from daemon_process import DaemonProcess, wait_for

from pomabotd.engine.runtime import BatchSettings, RunResult, Runtime
from pomabotd.wire import LinesFile

from .plugins import faults
from .test_runtime import (
    AS_OF,
    MARKET_LINES,
    MARKETS,
    ORDER_CASES,
    SIGNAL_LINES,
    _digest,
    _plugin,
    _run,
    _settings,
    _timeless,
)

#: One xdist worker runs the module, so that its clusters are started once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dask")]

ROOT = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).with_name("dask")
KEEP = ("m0001", "m0050", "m0119")


def _dask(workers: int, scheduler: str, **changes: object) -> BatchSettings:
    return _settings(workers, executor="dask", dask_scheduler=scheduler, **changes)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _worker_env(directory: Path) -> dict[str, str]:
    """The test's plugins must be importable on every worker, as a user's must; they find
    the module's scratch directory in `POMABOTD_TEST_DIR`."""
    environ = clean_environ()
    environ["POMABOTD_TEST_DIR"] = str(directory)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"),
                                                           environ.get("PYTHONPATH")]))
    return environ


class _Cluster:
    """`dask scheduler` and `dask worker --nworkers 2 --nthreads 1` on 127.0.0.1, each in its
    own session so that the test can end them and everything they started."""

    def __init__(self, directory: Path) -> None:
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.seen: dict[int, psutil.Process] = {}
        self.directory = directory

    def start(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        self._spawn("scheduler", "scheduler", "--host", "127.0.0.1", "--port", port,
                    "--no-dashboard")
        wait_for("the scheduler", self._listening, timeout=60)
        self._spawn("workers", "worker", self.address, "--nthreads", "1", "--nworkers", "2",
                    "--no-dashboard", "--host", "127.0.0.1")
        wait_for("two workers", lambda: len(self.worker_pids()) == 2, timeout=90)

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115 (the child holds it)
        with log:
            self.processes.append(subprocess.Popen(
                [str(DASK), *args], env=_worker_env(self.directory), stdout=log, stderr=log,
                start_new_session=True,
            ))

    def _listening(self) -> bool:
        host, port = self.address.removeprefix("tcp://").rsplit(":", 1)
        with socket.socket() as sock:
            return sock.connect_ex((host, int(port))) == 0

    def worker_pids(self) -> dict[str, int]:
        """Each worker's address and process id, as the scheduler knows them."""
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            return dict(client.run(os.getpid))

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(process.pid).children(recursive=True):
                    self.seen.setdefault(child.pid, child)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
        for proc in self.seen.values():
            with contextlib.suppress(psutil.Error):
                proc.kill()

    def leftovers(self) -> list[psutil.Process]:
        """Processes of the cluster still alive (zombies count as gone)."""
        alive = []
        for proc in self.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        return alive


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Cluster]:
    """One scheduler and two workers for the module; none of their processes outlives it."""
    started = _Cluster(tmp_path_factory.mktemp("dask"))
    try:
        started.start()
        yield started
    finally:
        started.stop()
    wait_for("the cluster's processes to end", lambda: not started.leftovers(), timeout=20)


@pytest.fixture(scope="module")
def reference() -> tuple[RunResult, list, RunResult]:
    """The in-process run (the local pool's results equal it: `test_runtime`), with lines
    and without."""
    with Runtime(_settings(0)) as runtime:
        with_lines, lines = _run(runtime, keep=KEEP)
        plain = runtime.evaluate_sync(MARKET_LINES, "m", SIGNAL_LINES, "s", AS_OF, keep=KEEP)
    return with_lines, lines, plain


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[Runtime]:
    """A runtime on a two-worker LocalCluster started here, shared by the module; none of
    the cluster's processes outlives it."""
    before = {proc.pid for proc in psutil.Process().children(recursive=True)}
    with Runtime(_dask(2, "local")) as runtime:
        started = [proc for proc in psutil.Process().children(recursive=True)
                   if proc.pid not in before]
        assert len(started) >= 4  # two workers, each with its guard's processes
        yield runtime
    gone, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [] and gone


def test_a_local_cluster_evaluates_as_the_local_pool_does(
    local_cluster: Runtime, reference: tuple[RunResult, list, RunResult], tmp_path: Path
) -> None:
    """On a LocalCluster a cycle gives the same evaluations, candidates, held markets and
    counts, per-market lines or not, from memory or from files, in market order or not."""
    expected, expected_lines, expected_plain = reference
    assert local_cluster.info().name == "dask" and local_cluster.info().workers == 2
    result, lines = _run(local_cluster, keep=KEEP)
    assert _timeless(lines) == _timeless(expected_lines) and _digest(result) == _digest(expected)
    markets, signals = tmp_path / "markets.jsonl", tmp_path / "signals.jsonl"
    markets.write_bytes(MARKET_LINES)
    signals.write_bytes(SIGNAL_LINES)
    plain = local_cluster.evaluate_sync(LinesFile(str(markets)), "m", LinesFile(str(signals)),
                                        "s", AS_OF, keep=KEEP)
    assert _digest(plain) == _digest(expected_plain)
    for case in ("newest first", "one stray ahead", "bad lines in order"):
        with Runtime(_settings(0)) as here:
            wanted = here.evaluate_sync(MARKET_LINES, "m", ORDER_CASES[case], "s", AS_OF,
                                        keep=KEEP)
        got = local_cluster.evaluate_sync(MARKET_LINES, "m", ORDER_CASES[case], "s", AS_OF,
                                          keep=KEEP)
        assert _digest(got) == _digest(wanted) and got.rejected == wanted.rejected, case
    assert result.worker_restarts == 0


def test_a_local_clusters_peak_memory_includes_its_workers(
    local_cluster: Runtime, reference: tuple[RunResult, list, RunResult]
) -> None:
    """A cycle's peak memory on a LocalCluster counts the cluster's processes: two Dask
    workers and their guards' processes weigh far more than this process alone."""
    _, _, alone = reference
    result = local_cluster.evaluate_sync(MARKET_LINES, "m", SIGNAL_LINES, "s", AS_OF)
    assert local_cluster.gauge().covers_workers
    assert result.peak_rss_mb > alone.peak_rss_mb + 100


def test_separate_workers_open_no_descriptor_of_pomabotd_and_agree(
    cluster: _Cluster, reference: tuple[RunResult, list, RunResult], tmp_path: Path
) -> None:
    """Workers started on their own get each piece's bytes with it (or read shared files
    themselves): the same results as the local pool, pieces whose run reaches past what was
    sent included (a window made to miss), and their memory counted."""
    expected, expected_lines, expected_plain = reference
    markets, signals = tmp_path / "markets.jsonl", tmp_path / "signals.jsonl"
    markets.write_bytes(MARKET_LINES)
    signals.write_bytes(ORDER_CASES["one stray ahead"])
    with Runtime(_settings(0)) as here:
        stray = here.evaluate_sync(MARKET_LINES, "m", ORDER_CASES["one stray ahead"], "s",
                                   AS_OF, keep=KEEP)
    for shared in (False, True):
        with Runtime(_dask(2, cluster.address, dask_shared_files=shared)) as runtime:
            result, lines = _run(runtime, keep=KEEP)
            assert _timeless(lines) == _timeless(expected_lines)
            assert _digest(result) == _digest(expected)
            plain = runtime.evaluate_sync(MARKET_LINES, "m", SIGNAL_LINES, "s", AS_OF, keep=KEEP)
            assert _digest(plain) == _digest(expected_plain)
            files = runtime.evaluate_sync(LinesFile(str(markets)), "m", LinesFile(str(signals)),
                                          "s", AS_OF, keep=KEEP)
            assert _digest(files) == _digest(stray) and files.rejected == stray.rejected
            assert runtime.gauge().covers_workers and plain.peak_rss_mb > 100


def test_fault_plugins_markets_are_isolated_as_on_the_local_pool(cluster: _Cluster) -> None:
    """A market that kills its worker process, one hanging where no signal reaches, one
    raising and one hanging in Python each fail alone with the local pool's error; every
    other market is evaluated."""
    runs = {}
    for name, settings in (("local", _settings(2)), ("dask", _dask(2, cluster.address))):
        changed = msgspec.structs.replace(settings, evaluator=_plugin("mixed"), retry_attempts=1)
        with Runtime(changed) as runtime:
            runs[name] = _run(runtime)
    (local, local_lines), (dask, dask_lines) = runs["local"], runs["dask"]
    assert sorted(dask.failures) == sorted(local.failures) == [
        ("m0003", "worker crashed"), ("m0005", "timeout"), ("m0007", "ValueError: boom"),
        ("m0009", "timeout"),
    ]
    assert _timeless(dask_lines) == _timeless(local_lines)
    assert dask.markets_evaluated == local.markets_evaluated == 116
    assert dask.timeouts >= 3 and dask.worker_restarts >= 2
    assert set(faults.MIXED) == {"m0003", "m0005", "m0007", "m0009"}


def test_a_worker_killed_mid_cycle_loses_and_doubles_nothing(
    cluster: _Cluster, reference: tuple[RunResult, list, RunResult]
) -> None:
    """SIGKILL of a Dask worker process while a cycle runs on it: its tasks run on the other
    worker, every market is evaluated once, and the results are the local pool's."""
    _, expected_lines, _ = reference
    victims = cluster.worker_pids()
    killed: list[int] = []

    def kill_once(done: int, total: int) -> None:
        if done and not killed:
            killed.append(next(iter(victims.values())))
            os.kill(killed[0], signal.SIGKILL)

    settings = _dask(2, cluster.address, evaluator=_plugin("slow"), batch_size=7)
    with Runtime(settings) as runtime:
        chunks: list[bytes] = []
        result = runtime.evaluate_sync(MARKET_LINES, "m", SIGNAL_LINES, "s", AS_OF, keep=KEEP,
                                       on_lines=chunks.append, on_progress=kill_once)
    lines = [json.loads(line) for line in b"".join(chunks).splitlines()]
    assert killed and not psutil.pid_exists(killed[0])
    assert [line["market_id"] for line in lines] == [e.market_id for e in expected_lines]
    assert result.markets_evaluated == 120 and result.failures == []
    assert result.worker_restarts >= 1
    wait_for("the killed worker's replacement", lambda: len(cluster.worker_pids()) == 2,
             timeout=60)


def test_a_cycle_abandoned_on_the_cluster_leaves_no_work_holding_a_worker(
    cluster: _Cluster,
) -> None:
    """A run cancelled while a worker still evaluates one of its markets (held there): the
    next run does not wait behind that work, which is dropped, and completes."""
    hold, started = cluster.directory / "hold", cluster.directory / "started"
    hold.touch()
    started.unlink(missing_ok=True)
    without_held = b"".join(line + b"\n" for line in MARKET_LINES.splitlines()
                            if b'"m0003"' not in line)
    settings = _dask(2, cluster.address, evaluator=_plugin("held"), timeout_ms=60_000)

    async def cancel_then_run(runtime: Runtime) -> RunResult:
        first = asyncio.create_task(runtime.evaluate(MARKET_LINES, "m", SIGNAL_LINES, "s", AS_OF))
        while not started.exists():
            await asyncio.sleep(0.02)
        first.cancel()
        await asyncio.wait({first})
        return await asyncio.wait_for(
            runtime.evaluate(without_held, "m", SIGNAL_LINES, "s", AS_OF), timeout=60)

    try:
        with Runtime(settings) as runtime:
            second = asyncio.run(cancel_then_run(runtime))
    finally:
        hold.unlink(missing_ok=True)
    assert second.markets_evaluated == len(MARKETS) - 1 and second.failures == []


def _run_once(run_cli: RunCli, out: Path, env: dict[str, str]) -> dict:
    result = run_cli("run-once", "--as-of", AS_OF_TEXT, "--out", str(out), "--json", env=env,
                     timeout=120)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_run_once_on_the_cluster_opens_the_local_pools_positions(
    run_cli: RunCli, cluster: _Cluster, tmp_path: Path
) -> None:
    """`run-once` with `BATCH_EXECUTOR=dask` writes the positions the local pool writes, from
    the synthetic source (lines made in memory, carried to the workers), and its cycle's log
    line says it ran on Dask with two workers, their memory included."""
    local = _run_once(run_cli, tmp_path / "local", env={"BATCH_WORKERS": "2"})
    result = run_cli("run-once", "--as-of", AS_OF_TEXT, "--out", str(tmp_path / "dask"),
                     "--json", env={
                         "BATCH_WORKERS": "2", "BATCH_EXECUTOR": "dask",
                         "BATCH_DASK_SCHEDULER": cluster.address, "POMABOTD_LOG_FORMAT": "json",
                     }, timeout=120)
    assert result.returncode == 0, result.stderr
    dask = json.loads(result.stdout)
    positions = [(tmp_path / name / "positions.jsonl").read_text() for name in ("local", "dask")]
    assert positions[0] == positions[1] and positions[0].count('"event":"open"') > 0
    assert dask["markets_evaluated"] == local["markets_evaluated"] > 0
    lines = [json.loads(raw) for raw in result.stderr.splitlines() if raw.startswith("{")]
    (cycle,) = [line for line in lines if line.get("event") == "cycle"]
    assert (cycle["executor"], cycle["workers"], cycle["peak_covers_workers"]) == (
        "dask", 2, True)
    assert "on dask with 2 workers" in cycle["message"]


def test_an_unreachable_scheduler_is_refused_fast_before_anything_is_created(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """A scheduler address nothing answers at: exit 2 within 15 s, naming
    batch.dask_scheduler, with no output directory created."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    result = run_cli("run-once", "--out", str(tmp_path / "out"), env={
        "BATCH_EXECUTOR": "dask", "BATCH_DASK_SCHEDULER": address}, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert "batch.dask_scheduler" in result.stderr and address in result.stderr
    assert took < 15
    assert not (tmp_path / "out").exists()


def test_a_plugin_the_workers_cannot_import_is_refused_at_start(
    run_cli: RunCli, cluster: _Cluster, tmp_path: Path
) -> None:
    """A strategy plugin pomabotd can import but the cluster's workers cannot: exit 2 naming
    batch.evaluator and the workers, before any cycle or output directory."""
    plugins = tmp_path / "only_here"
    plugins.mkdir()
    (plugins / "here_only.py").write_text("from pomabotd import evaluate_market\n")
    result = run_cli("run-once", "--out", str(tmp_path / "out"), env={
        "BATCH_EXECUTOR": "dask", "BATCH_DASK_SCHEDULER": cluster.address,
        "BATCH_EVALUATOR": "here_only:evaluate_market", "PYTHONPATH": str(plugins)},
        timeout=120)
    assert result.returncode == 2, result.stderr
    assert "batch.evaluator 'here_only:evaluate_market'" in result.stderr
    assert "Dask workers" in result.stderr and "here_only" in result.stderr
    assert not (tmp_path / "out").exists()


def test_choosing_dask_without_the_extra_is_bad_configuration(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """Where `distributed` cannot be imported, `batch.executor = "dask"` is refused with exit
    2, naming the key, where it came from and the extra to install."""
    hidden = tmp_path / "hidden" / "distributed"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        'raise ImportError("No module named \'distributed\' (hidden by the test)")\n')
    result = run_cli("run-once", "--out", str(tmp_path / "out"), env={
        "BATCH_EXECUTOR": "dask", "PYTHONPATH": str(hidden.parent)})
    assert result.returncode == 2
    assert "batch.executor" in result.stderr and "env BATCH_EXECUTOR" in result.stderr
    assert "pip install 'pomabotd[dask]'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_daemon_reports_its_executor_and_switches_it_on_reload(
    cluster: _Cluster, tmp_path: Path
) -> None:
    """A daemon on the cluster names it in /healthz and /metrics; a reload naming a scheduler
    nothing answers at fails, naming batch.dask_scheduler, and the cycles go on on the
    cluster; a reload to the local pool starts the pool first, then leaves the cluster, and
    the next cycles run on the pool; every line it logged is JSON, Dask's included."""
    config = tmp_path / "pomabotd.toml"
    config.write_text(f'[batch]\nworkers = 2\nexecutor = "dask"\n'
                      f'dask_scheduler = "{cluster.address}"\n')
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--out", "out", "--interval",
                           "0.2", env={"POMABOTD_LOG_FORMAT": "json"})
    try:
        assert daemon.wait_log(event="start")["executor"] == "dask"
        daemon.wait_log(event="cycle", executor="dask", workers=2)
        health = daemon.get("/healthz").json()
        assert health["executor"] == {"name": "dask", "workers": 2}
        exposition = daemon.get("/metrics").text
        assert 'pomabotd_executor_workers{executor="dask"} 2.0' in exposition
        assert "pomabotd_last_cycle_peak_memory_covers_workers 1.0" in exposition
        daemon.remember_descendants()

        nowhere = f"tcp://127.0.0.1:{_free_port()}"
        config.write_text(f'[batch]\nworkers = 2\nexecutor = "dask"\n'
                          f'dask_scheduler = "{nowhere}"\n')
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_log(event="reload_failed", timeout=30)
        assert "batch.dask_scheduler" in failed["message"] and nowhere in failed["message"]
        before = len(_cycles(daemon))
        wait_for("a cycle after the failed reload", lambda: len(_cycles(daemon)) > before,
                 timeout=30)
        assert _cycles(daemon)[-1]["executor"] == "dask"
        assert daemon.get("/healthz").json()["executor"] == {"name": "dask", "workers": 2}

        config.write_text('[batch]\nworkers = 1\nexecutor = "local"\n')
        daemon.signal(signal.SIGHUP)
        daemon.wait_log(event="reload")
        daemon.wait_log(event="cycle", executor="local", workers=1)
        assert daemon.get("/healthz").json()["executor"] == {"name": "local", "workers": 1}
        daemon.remember_descendants()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        assert daemon.leftovers() == []
        lines = [line for line in daemon.log_path.read_text().splitlines() if line.strip()]
        assert all(line.startswith("{") for line in lines)  # Dask's own logs too
    finally:
        daemon.finish()


def _cycles(daemon: DaemonProcess) -> list[dict]:
    """The daemon's cycle log lines so far."""
    return [line for line in daemon.logs() if line.get("event") == "cycle"]
