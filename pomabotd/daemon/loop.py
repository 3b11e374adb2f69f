"""The daemon's loop: one event loop and one warm worker pool for the process's whole life.

A cycle starts every `daemon.interval_s` seconds; one that runs longer delays the next, which
then starts as soon as it ends, so cycles never overlap. Between cycles the loop sleeps on an
event (signals and timers wake it; nothing polls), so an idle daemon costs no CPU. The sources
(`pomabotd.app.sources`) are built once too and keep their feed cache, ETags and news
memory from cycle to cycle; a source that yields nothing usable fails that cycle only (one
error line, `/healthz` unhealthy with the reason), and the next interval tries again.

- SIGHUP: a whole new configuration is built and checked (TOML, env file, environment, the
  flags given at start, the strategy plugin) in a thread of its own, within
  `RELOAD_DEADLINE_S` and abandoned at once by a stop signal (a file that hangs, as one on a
  network file system that stopped answering would, holds neither the loop nor the stop),
  the files it names are reopened (rename-based rotation; a new ledger when the output
  directory changed or was removed; the ledger's history checked as at start), and it is
  swapped in between cycles, the pool rebuilt only when `batch.workers` or
  `batch.evaluator` changed, the sources rebuilt (and the old ones closed) only when the
  `[sources]` section changed. Anything wrong keeps the running configuration and logs one
  error.
- A broken output directory: when the reload's check of the ledger the daemon writes finds
  a history that does not add up, no cycle runs into it (lines appended after damage would
  bury it), `/healthz` answers 503 naming the file and line and how to repair it, and the
  daemon waits, still holding the directory's lock and serving its status; the next reload
  that finds the ledger sound (after a repair, `pomabotd verify`, then SIGHUP) rebuilds the
  portfolio from the repaired files and cycles resume. Only a reload checks again: a ledger
  being repaired is never taken up half-edited.
- Start: the soft limit on open files is raised to the hard limit
  (`pomabotd.daemon.descriptors`), and a status address other machines may reach is warned
  about, at start and after every reload.
- SIGTERM/SIGINT: no new cycle; the cycle in flight gets `daemon.stop_timeout_s` to finish,
  else it is cancelled before it writes anything; a second signal cancels it at once. Then the
  workers stop and `run` returns.
- A cycle still loading or evaluating `daemon.cycle_timeout_s` after it started is abandoned
  like one a stop signal abandons (nothing of it written), counted as failed and logged at
  ERROR with where it was; the next cycle starts on schedule.
- systemd: READY=1 once the pool is warm and the ledger recovered; RELOADING=1 and READY=1
  around a reload; STATUS= after each cycle; STOPPING=1; WATCHDOG=1 only while the daemon makes
  progress (`DaemonState.stall`): the watchdog task itself runs (so the loop is not blocked),
  no cycle has outrun its deadline, and no cycle is overdue by as long (the loop stuck
  elsewhere, in a reload that cannot end). A failing cycle is progress: it says so in
  `/healthz`, and a restart would not mend a source that is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from pomabotd import app
from pomabotd._version import __version__
from pomabotd.config import Config
from pomabotd.cycle import Portfolio, run_cycle
from pomabotd.daemon.descriptors import raise_open_file_limit
from pomabotd.daemon.notifications import Notifications
from pomabotd.daemon.notify import Notifier, monotonic_usec, watchdog_period
from pomabotd.daemon.signals import SignalFlags
from pomabotd.daemon.state import RECENT_CYCLES, DaemonState
from pomabotd.daemon.status import StatusServer, bind_status, exposure_warning
from pomabotd.errors import (
    ConfigError,
    CycleTimeoutError,
    LedgerHistoryError,
    PomabotdError,
    SourceError,
)
from pomabotd.log import configure_logging, logger
from pomabotd.output import CycleMetrics, Ledger, read_recent_cycles
from pomabotd.progress import CycleProgress
from pomabotd.sources import Sources
from pomabotd.sources.offload import off_loop
from pomabotd.words import plural

__all__ = ["RELOAD_DEADLINE_S", "Daemon"]

#: Seconds a reload may take to read and check the new configuration before it is given up.
RELOAD_DEADLINE_S: Final = 30.0

#: How long past its deadline a cycle may take to be abandoned, or a cycle be overdue beyond
#: its deadline, before the watchdog stops vouching for the daemon: abandoning takes moments,
#: and a single WATCHDOG=1 skipped while it does could let systemd's WatchdogSec= run out.
_WATCHDOG_GRACE_S: Final = 2.0


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _now() -> datetime:
    return datetime.now(UTC)


def _bind_status(config: Config) -> socket.socket | None:
    """The status endpoint's listening socket (None when switched off); ConfigError names
    `daemon.status_addr`, where it came from and why the address cannot be served."""
    endpoint = config.daemon.status_endpoint()
    if endpoint is None:
        return None
    try:
        return bind_status(*endpoint)
    except OSError as exc:
        raise ConfigError(
            f"daemon.status_addr {config.daemon.status_addr!r} (from "
            f"{config.source_phrase('daemon.status_addr')}) cannot be served: "
            f"{exc.strerror or exc}"
        ) from None


def _warn_if_exposed(config: Config) -> None:
    warning = exposure_warning(config)
    if warning is not None:
        logger.bind(event="status_exposed", status_addr=config.daemon.status_addr).warning(
            "{}", warning
        )


class Daemon:
    """`pomabotd run`: build with the loaded configuration, then `await run()`.

    `reload` builds a fresh `Config` from the same file, env file, environment and flags;
    `as_of`, when given, fixes the market time of every cycle.
    """

    def __init__(
        self,
        config: Config,
        *,
        reload: Callable[[], Config],
        as_of: datetime | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self._config = config
        self._reload_config = reload
        self._as_of = as_of
        env = dict(os.environ if environ is None else environ)
        self._notifier = Notifier.from_environ(env)
        self._watchdog_s = watchdog_period(env)
        self._flags = SignalFlags()
        self._runtime = app.runtime(config)
        self._ledger: Ledger | None = None
        self._sources: Sources | None = None
        self._status: StatusServer | None = None
        self._state: DaemonState | None = None
        self._notifications: Notifications | None = None
        self._open_files: int | None = None

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT; raises PomabotdError or OSError if it cannot start."""
        loop = asyncio.get_running_loop()
        self._flags.install(loop)
        watchdog: asyncio.Task[None] | None = None
        try:
            config = self._config
            self._open_files = raise_open_file_limit()  # before the workers, who inherit it
            # What a bad setting can refuse is refused before anything starts or is created.
            self._sources = app.sources(config)
            sock = _bind_status(config)
            try:
                await asyncio.to_thread(self._runtime.start)  # warm before data is loaded
            except BaseException:
                if sock is not None:
                    sock.close()
                raise
            self._ledger = app.ledger(config)
            portfolio = Portfolio.recover(self._ledger)
            recent = read_recent_cycles(self._ledger.directory, RECENT_CYCLES)
            state = self._state = DaemonState(config, portfolio, recent)
            self._notifications = Notifications(state)
            self._notifications.start()
            state.executor = await asyncio.to_thread(self._runtime.info)
            await self._start_status(state, sock)
            self._log_start(state)
            self._notifier.send("READY=1", "STATUS=" + state.summary())
            if self._watchdog_s is not None:
                watchdog = asyncio.create_task(self._watchdog(self._watchdog_s, state))
            await self._loop(state)
        finally:
            if self._state is not None:
                self._state.stopping = True
            self._notifier.send("STOPPING=1")
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            await self._shutdown()
            self._flags.remove()

    async def _loop(self, state: DaemonState) -> None:
        flags = self._flags
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not flags.stop.is_set():
            # No cycle is due while batch is off, nor into a ledger that failed its check.
            runs = state.config.batch.enabled and state.ledger_problem is None
            state.next_cycle_at = next_at if runs else None
            if flags.reload:
                state.busy_with = "reloading its configuration"
                try:
                    await self._reload(state)
                finally:
                    state.busy_with = None
                continue
            delay = next_at - loop.time() if runs else None
            if delay is None or delay > 0:
                flags.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(flags.wake.wait(), delay)
                if not runs:
                    next_at = loop.time()
                continue
            started = loop.time()
            state.next_cycle_at = None
            await self._cycle(state)
            next_at = max(started + state.config.daemon.interval_s, loop.time())
        signum = flags.stop_signal
        name = signal.Signals(signum).name if signum is not None else "request"
        logger.bind(event="stop", signal=name, cycles_ok=state.cycles_ok,
                    cycles_failed=state.cycles_failed).info(
            "pomabotd stopping on {} after {} ({} failed)",
            name, plural(state.cycles_ok + state.cycles_failed, "cycle"), state.cycles_failed,
        )

    async def _cycle(self, state: DaemonState) -> None:
        """Run one cycle; a stop signal gives it `stop_timeout_s`, a second one none."""
        assert self._ledger is not None and self._sources is not None
        config = state.config
        cycle_id = state.portfolio.last_cycle_id + 1
        held = {position.position_id: position for position in state.portfolio.open_positions}
        progress = state.cycle_progress = CycleProgress()
        task = asyncio.create_task(run_cycle(
            self._runtime, self._sources, state.portfolio, self._ledger, config.risk_limits(),
            as_of=self._as_of, clock=_now, halt=app.halt_policy(config),
            deadline_s=config.daemon.cycle_timeout_s, progress=progress,
        ))
        state.cycle_started = time.monotonic()
        try:
            await self._await_cycle(task, config.daemon.stop_timeout_s)
        finally:
            state.cycle_started = None
            state.cycle_progress = None
        if task.cancelled():
            logger.bind(event="cycle_abandoned", cycle_id=cycle_id).warning(
                "cycle {} abandoned on stop: nothing of it was written", cycle_id
            )
            return
        error = task.exception()
        if error is None:
            state.cycle_finished(task.result())
            if self._notifications is not None:
                self._notifications.cycle(task.result(), held)
        else:
            message = _one_line(str(error)) or type(error).__name__
            failed = logger.bind(event="cycle_failed", cycle_id=cycle_id)
            if isinstance(error, CycleTimeoutError):
                failed = failed.bind(timed_out=True, phase=error.phase)
            if not isinstance(error, PomabotdError):
                message = f"{type(error).__name__}: {message}"
                failed = failed.opt(exception=error)
            failed.error("cycle {} failed: {}", cycle_id, message)
            if isinstance(error, SourceError):
                state.cycle_failed(cycle_id, message, error.stats, error.source)
            else:
                state.cycle_failed(cycle_id, message)
            if self._notifications is not None:
                self._notifications.check_health()
        self._notifier.status(state.summary())

    async def _await_cycle(self, task: asyncio.Task[object], stop_timeout_s: float) -> None:
        flags = self._flags
        stop = asyncio.ensure_future(flags.stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return
            self._notifier.send("STOPPING=1")
            hurry = asyncio.ensure_future(flags.hurry.wait())
            try:
                await asyncio.wait({task, hurry}, timeout=stop_timeout_s,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                hurry.cancel()
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task})
        finally:
            stop.cancel()

    async def _reload(self, state: DaemonState) -> None:
        """Build and check a new configuration, then reopen the files and swap it in."""
        self._flags.reload = False
        self._notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")
        old = state.config
        try:
            new = await self._load_config()
            if new is None:
                return  # a stop signal came first
            await self._swap(state, old, new)
        except (PomabotdError, OSError) as exc:
            state.reloads_failed += 1
            logger.bind(event="reload_failed").error(
                "reload failed, still running the previous configuration: {}",
                _one_line(str(exc)),
            )
        else:
            state.reloads_ok += 1
            if state.ledger_problem is not None:
                state.ledger_problem = None
                logger.bind(event="ledger_sound", output_dir=new.daemon.output_dir).info(
                    "the output directory {} is sound again: cycles resume",
                    new.daemon.output_dir,
                )
            changed = [key for key in new.provenance
                       if new.value(key) != old.value(key)]
            for warning in new.warnings:
                logger.bind(event="config_warning").warning("{}", warning)
            logger.bind(event="reload", changed=changed, config_path=new.path).info(
                "reloaded the configuration from {}: {}",
                new.path or "defaults and environment",
                ", ".join(changed) if changed else "nothing changed",
            )
            _warn_if_exposed(new)
        if self._notifications is not None:
            self._notifications.check_health()  # a directory broken, or sound again
        self._notifier.send("READY=1", "STATUS=" + state.summary())

    async def _load_config(self) -> Config | None:
        """The configuration a reload builds, loaded in a thread of its own (not the loop's
        executor, which `asyncio.run` would wait for at exit) within `RELOAD_DEADLINE_S`;
        None when a stop signal comes first. A load stuck in a read is left behind."""
        loading = asyncio.ensure_future(off_loop(self._reload_config))
        stopping = asyncio.ensure_future(self._flags.stop.wait())
        try:
            done, _ = await asyncio.wait({loading, stopping}, timeout=RELOAD_DEADLINE_S,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if loading in done:
            return loading.result()
        loading.cancel()
        if stopping in done:
            logger.bind(event="reload_abandoned").warning(
                "reload abandoned: a stop signal came while the configuration was being read"
            )
            return None
        raise ConfigError(
            f"the configuration was not read and checked within {RELOAD_DEADLINE_S:g} s (a "
            "file on a network file system that stopped answering, a plugin whose import "
            "hangs?)"
        )

    async def _swap(self, state: DaemonState, old: Config, new: Config) -> None:
        """Put `new` in force piece by piece, undoing the pieces already swapped if one fails.

        The files are reopened per the new configuration (rename-based rotation): the log file
        by `new`'s `log.file`, the ledger's files by name, or a new ledger when
        `daemon.output_dir` changed or its directory was removed or replaced meanwhile; either
        way the ledger's history is checked (`pomabotd.history`) as at start, and the portfolio
        is the one the files hold. A ledger in the same directory that fails its check breaks
        the directory (`_ledger_broken`) as well as failing the reload.
        """
        undo: list[Callable[[], object]] = []
        status = self._status
        sources = self._sources
        current = self._ledger
        assert current is not None
        try:
            configure_logging(new.log.level, new.log.format, new.log.file,
                              origin=new.source_phrase("log.file"),
                              repeat_window_s=new.log.repeat_window_s)
            undo.append(lambda: configure_logging(old.log.level, old.log.format, old.log.file,
                                                  repeat_window_s=old.log.repeat_window_s))
            ledger = current
            recent: tuple[CycleMetrics, ...] = ()
            if new.daemon.output_dir != old.daemon.output_dir or not current.intact():
                ledger = app.ledger(new)
                undo.append(ledger.close)
            else:
                app.reopen_ledger(current, new)
            # The files may have been edited while they were held (repaired, or damaged): a
            # reload checks their history as a start would and takes the portfolio they hold.
            try:
                portfolio = await asyncio.to_thread(Portfolio.recover, ledger)
            except LedgerHistoryError as exc:
                if new.daemon.output_dir == old.daemon.output_dir:
                    self._ledger_broken(state, new, exc)
                raise
            if ledger is not current:
                recent = await asyncio.to_thread(read_recent_cycles, ledger.directory,
                                                 RECENT_CYCLES)
            held = {position.market_id for position in portfolio.open_positions}
            portfolio.missing_since = {market: since for market, since
                                       in state.portfolio.missing_since.items() if market in held}
            if new.daemon.status_addr != old.daemon.status_addr:
                status = await self._serve(state, _bind_status(new))
            if new.sources != old.sources:
                sources = app.sources(new)  # keeps the old cache when [sources] is unchanged
            await asyncio.to_thread(app.reconfigure_runtime, self._runtime, new)
            state.executor = await asyncio.to_thread(self._runtime.info)
        except BaseException:
            for step in reversed(undo):
                step()
            if status is not None and status is not self._status:
                await status.stop()
            if sources is not None and sources is not self._sources:
                await sources.aclose()
            raise
        if ledger is not current:
            current.close()
            self._ledger = ledger
            state.ledger_replaced(portfolio, recent)
        if status is not self._status:
            if self._status is not None:
                await self._status.stop()
            self._status = status
            state.status_addr = status.address if status is not None else None
        if sources is not self._sources:
            if self._sources is not None:
                await self._sources.aclose()
            self._sources = sources
        state.portfolio = portfolio
        state.config = new
        state.changes.bump()

    def _ledger_broken(self, state: DaemonState, config: Config,
                       exc: LedgerHistoryError) -> None:
        """The ledger the daemon writes failed its check: no cycle runs into it until a
        reload finds it sound."""
        directory = config.daemon.output_dir
        state.ledger_problem = (
            f"output directory {directory} is broken, no cycle runs into it: "
            f"{_one_line(str(exc))}; then reload (SIGHUP) to resume"
        )
        logger.bind(event="ledger_broken", output_dir=directory).error(
            "{}", state.ledger_problem
        )

    async def _start_status(
        self, state: DaemonState, sock: socket.socket | None
    ) -> None:
        self._status = await self._serve(state, sock)
        state.status_addr = self._status.address if self._status is not None else None

    async def _serve(
        self, state: DaemonState, sock: socket.socket | None
    ) -> StatusServer | None:
        if sock is None:
            return None
        server = StatusServer(state, open_files=self._open_files)
        try:
            await server.start(sock)
        except BaseException:
            await server.stop()
            sock.close()
            raise
        return server

    def _log_start(self, state: DaemonState) -> None:
        config = state.config
        logger.bind(
            event="start",
            pid=state.pid,
            version=__version__,
            config_path=config.path,
            output_dir=config.daemon.output_dir,
            interval_s=config.daemon.interval_s,
            workers=state.executor.workers,
            executor=state.executor.name,
            status_addr=state.status_addr,
            open_files=self._open_files,
            batch_enabled=config.batch.enabled,
            last_cycle_id=state.portfolio.last_cycle_id,
        ).info(
            "pomabotd {} started: pid {}, a cycle every {} s into {}, {} ({}), status {}{}",
            __version__, state.pid, config.daemon.interval_s, config.daemon.output_dir,
            plural(state.executor.workers, "worker"), state.executor.name,
            f"http://{state.status_addr}" if state.status_addr else "off",
            "" if config.batch.enabled else " (batch disabled: no cycles until a reload)",
        )
        _warn_if_exposed(config)

    async def _watchdog(self, period: float, state: DaemonState) -> None:
        """WATCHDOG=1 every `period` while the daemon makes progress; one WARNING when it
        stops (systemd then restarts the daemon once `WatchdogSec=` runs out)."""
        withheld = False
        while True:
            await asyncio.sleep(period)
            stall = state.stall(grace_s=_WATCHDOG_GRACE_S)
            if stall is None:
                self._notifier.send("WATCHDOG=1")
                withheld = False
            elif not withheld:
                withheld = True
                logger.bind(event="watchdog_withheld", reason=stall).warning(
                    "not telling systemd's watchdog that pomabotd is alive: {}", stall
                )

    async def _shutdown(self) -> None:
        if self._notifications is not None:
            await self._notifications.aclose()
            self._notifications = None
        if self._status is not None:
            await self._status.stop()
            self._status = None
        if self._sources is not None:
            await self._sources.aclose()
            self._sources = None
        await asyncio.to_thread(self._runtime.close)
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        self._notifier.close()
