"""The `pomabotd` command line: parse arguments, call into the package, print. No logic here."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TypeVar

import click
import httpx
import msgspec
from tqdm import tqdm

from pomabotd._version import __version__
from pomabotd.config import Config, environ_for_reload, load
from pomabotd.cycle import (
    CycleReport,
    LedgerOnDemand,
    batch_settings,
    halt_policy,
    run_cycle,
)
from pomabotd.daemon.loop import Daemon
from pomabotd.daemon.signals import STOP_SIGNALS
from pomabotd.engine.runtime import Runtime
from pomabotd.errors import (
    ConfigError,
    CycleError,
    InputError,
    MissingExtraError,
    PomabotdError,
)
from pomabotd.log import configure_logging, logger
from pomabotd.money import usd
from pomabotd.output import output_dir_problem
from pomabotd.plots import replay_plots, require_matplotlib, run_plots
from pomabotd.replay.run import (
    ReplayReport,
    ReplayResult,
    nothing_scored,
    report_json,
    require_scorable,
)
from pomabotd.replay.run import replay as run_replay
from pomabotd.replay.source import load_resolved
from pomabotd.report import read_run, run_warnings
from pomabotd.resume import request_resume
from pomabotd.sources import SourceStats, open_sources
from pomabotd.stress import PRESETS, StressReport, Synthetic, run_stress
from pomabotd.wire import Rejected

__all__ = ["main"]

#: `--as-of` years pomabotd accepts: far enough from datetime's limits for day arithmetic.
_EARLIEST_AS_OF = 1970
_LATEST_AS_OF = 9000
#: How many rejected records are listed one by one before the rest are only counted.
_REJECTED_SHOWN = 20
_STATUS_TIMEOUT_S = 5.0

_T = TypeVar("_T")


class UsageFailure(click.ClickException):
    """Bad usage or configuration: exit status 2 (SPEC section 9)."""

    exit_code = 2


class CycleFailure(click.ClickException):
    """A cycle or a check failed: exit status 1."""

    exit_code = 1


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_as_of(value: str | None) -> datetime | None:
    """The `--as-of` time, or None to let each cycle run as of its own start."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageFailure(
            f"--as-of {value!r} is not an ISO 8601 time, e.g. 2026-06-01T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        suggestion = parsed.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        raise UsageFailure(f"--as-of {value!r} needs a UTC offset, e.g. {suggestion}")
    if not _EARLIEST_AS_OF <= parsed.year <= _LATEST_AS_OF:
        raise UsageFailure(
            f"--as-of {value!r} is outside the years {_EARLIEST_AS_OF}-{_LATEST_AS_OF}"
        )
    return parsed.astimezone(UTC)


@contextmanager
def _errors_as_exit_codes(*, input_is_usage: bool = False) -> Iterator[None]:
    """Turn pomabotd's typed errors into one-line messages with the SPEC's exit codes.

    An input that cannot be read fails a cycle (exit 1); for `replay` and `report`, whose
    input is the file the command line names, it is bad usage (exit 2).
    """
    try:
        yield
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    except InputError as exc:
        if input_is_usage:
            raise UsageFailure(str(exc)) from None
        raise CycleFailure(str(exc)) from None
    except PomabotdError as exc:
        raise CycleFailure(str(exc)) from None


def _load_config(config_path: Path | None, flags: dict[str, Any]) -> Config:
    with _errors_as_exit_codes():
        config = load(config_path, os.environ, flags)
        configure_logging(config.log.level, config.log.format, config.log.file,
                          origin=config.source_phrase("log.file"))
    for warning in config.warnings:
        logger.bind(event="config_warning").warning("{}", warning)
    return config


def _output_dir(config: Config) -> Path:
    """The configured output directory, refused (exit 2) if it cannot be one."""
    out = Path(config.daemon.output_dir)
    problem = output_dir_problem(out)
    if problem is not None:
        raise UsageFailure(f"daemon.output_dir {str(out)!r} (from "
                           f"{config.source_phrase('daemon.output_dir')}) {problem}")
    return out


def _until_signal(
    work: Callable[[], Coroutine[Any, Any, _T]],
    abandoned: str = "the cycle was abandoned, nothing of it written",
) -> _T:
    """Run `work()` on a new event loop; SIGTERM or SIGINT abandons it, and the command then
    exits with 128 + the signal's number (SPEC section 9), saying what was `abandoned`."""
    received: list[int] = []

    async def guarded() -> _T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            received.append(signum)
            task.cancel()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await work()
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if not received:
            raise
        _exit_stopped(received[0], abandoned)


class _Stopped(Exception):
    """A stop signal arrived during synchronous work guarded by `_stop_on_signal`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _stop_on_signal(abandoned: str) -> Iterator[None]:
    """`_until_signal` for synchronous work (reading input files, drawing plots): SIGTERM or
    SIGINT raises inside the work, whose own clean-up runs (no half-written file stays), and
    the command exits with 128 + the signal's number, saying what was `abandoned`."""

    def stop(signum: int, frame: object) -> None:
        raise _Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    except _Stopped as stopped:
        _exit_stopped(stopped.signum, abandoned)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_stopped(signum: int, abandoned: str) -> NoReturn:
    click.echo(f"stopped by {signal.Signals(signum).name}: {abandoned}", err=True)
    raise SystemExit(128 + signum) from None


def _report_rejected(rejected: tuple[Rejected, ...] | list[Rejected]) -> None:
    for record in rejected[:_REJECTED_SHOWN]:
        click.echo(f"rejected: {record}", err=True)
    if len(rejected) > _REJECTED_SHOWN:
        click.echo(f"rejected: ... and {len(rejected) - _REJECTED_SHOWN} more records", err=True)


def _common_options(function: Callable[..., Any]) -> Callable[..., Any]:
    options = (
        click.option("--config", "config_path", type=click.Path(path_type=Path),
                     help="TOML configuration file (default: none, or $POMABOTD_CONFIG)."),
        click.option("--markets", help="Markets: a JSON-lines file, 'synthetic', 'polymarket' "
                     "or 'gamma:PATH' (a saved Gamma JSON array)."),
        click.option("--signals", help="Signals: a JSON-lines file (feeds in the config add "
                     "theirs)."),
        click.option("--polymarket-url", "polymarket_url", metavar="URL",
                     help="Base URL of the Polymarket Gamma API (sources.polymarket_url)."),
        click.option("--save-snapshot", "save_snapshot", metavar="PATH",
                     help="Save the fetched Polymarket objects to PATH as a JSON array."),
        click.option("--as-of", "as_of", metavar="ISO8601",
                     help="Evaluate as of this UTC time (default: now)."),
    )
    for option in reversed(options):
        function = option(function)
    return function


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pomabotd")
def main() -> None:
    """Prediction-market research and paper trading. It never places real orders."""


@main.command()
@_common_options
def evaluate(config_path: Path | None, markets: str | None, signals: str | None,
             polymarket_url: str | None, save_snapshot: str | None, as_of: str | None) -> None:
    """Write one evaluation per market, in input order, as JSON lines on stdout."""
    if markets is None:
        raise UsageFailure("evaluate needs --markets FILE (or --markets synthetic)")
    when = _parse_as_of(as_of) or _now()
    config = _load_config(config_path, {
        "sources.markets": markets,
        "sources.signals": signals,
        "sources.polymarket_url": polymarket_url,
        "sources.save_snapshot": save_snapshot,
    })
    out: BinaryIO = sys.stdout.buffer

    def write(lines: bytes) -> None:
        out.write(lines)

    async def evaluate_all() -> tuple[Rejected, ...]:
        sources = open_sources(config)  # a setting naming no source is refused before the pool
        with Runtime(batch_settings(config)) as runtime:
            async with sources:
                cycle_input = await sources.load(when)
            result = await runtime.evaluate(
                cycle_input.markets, cycle_input.markets_source,
                cycle_input.signals, cycle_input.signals_source,
                when, on_lines=write,
            )
        return (*cycle_input.rejected, *result.rejected)

    with _errors_as_exit_codes():
        try:
            rejected = _until_signal(evaluate_all, "the evaluation was abandoned")
        finally:
            out.flush()
    _report_rejected(rejected)


def _out_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--out", "out_dir", type=click.Path(path_type=Path),
        help="Directory for positions.jsonl, metrics.jsonl and state.json "
             "(default: daemon.output_dir).",
    )(function)


@main.command("run-once")
@_common_options
@_out_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a summary.")
def run_once(config_path: Path | None, markets: str | None, signals: str | None,
             polymarket_url: str | None, save_snapshot: str | None, as_of: str | None,
             out_dir: Path | None, as_json: bool) -> None:
    """Run one cycle, append its lines to the output directory, print a summary."""
    when = _parse_as_of(as_of)
    config = _load_config(config_path, {
        "sources.markets": markets,
        "sources.signals": signals,
        "sources.polymarket_url": polymarket_url,
        "sources.save_snapshot": save_snapshot,
        "daemon.output_dir": str(out_dir) if out_dir is not None else None,
    })
    out = _output_dir(config)
    if not config.batch.enabled:
        source = config.provenance["batch.enabled"].replace(":", " ", 1)
        click.echo(f"batch.enabled is false (from {source}): no cycle run, nothing written",
                   err=True)
        return

    async def one_cycle() -> CycleReport:
        sources = open_sources(config)  # a setting naming no source is refused before the pool
        with Runtime(batch_settings(config)) as runtime, LedgerOnDemand(out) as ledger:
            async with sources:
                return await run_cycle(runtime, sources, ledger.portfolio(), ledger,
                                       config.risk_limits(), as_of=when, clock=_now,
                                       halt=halt_policy(config))

    with _errors_as_exit_codes():
        report = _until_signal(one_cycle)
    _report_rejected(report.rejected)
    if as_json:
        summary = msgspec.structs.asdict(report.metrics)
        summary["output_dir"] = report.output_dir
        click.echo(msgspec.json.encode(summary).decode())
    else:
        click.echo(_summary(report))
        click.echo(_sources_summary(report.metrics.sources))


def _sources_summary(stats: SourceStats) -> str:
    failed = sum(stats.fetch_errors.values())
    text = f"  sources: {stats.records_refused} records refused, {failed} fetches failed"
    if stats.feeds_ok or stats.feeds_failed or stats.feeds_unchanged:
        text += (
            f"; feeds {stats.feeds_ok} read, {stats.feeds_unchanged} unchanged, "
            f"{stats.feeds_failed} failed; {stats.news_items} new items, "
            f"{stats.news_signals} news signals"
        )
    return text


@main.command()
@_common_options
@_out_option
@click.option("--interval", "interval_s", type=float, metavar="SECONDS",
              help="Seconds between cycle starts (default: daemon.interval_s).")
@click.option("--status-addr", "status_addr", metavar="HOST:PORT",
              help="Status endpoint address; '' switches it off (default: daemon.status_addr).")
@click.option("--env-file", "env_file", metavar="PATH",
              help="BATCH_NAME=value lines read at start and on every reload "
                   "(default: daemon.env_file).")
def run(config_path: Path | None, markets: str | None, signals: str | None,
        polymarket_url: str | None, save_snapshot: str | None, as_of: str | None,
        out_dir: Path | None, interval_s: float | None, status_addr: str | None,
        env_file: str | None) -> None:
    """Run the daemon: a cycle every interval until SIGTERM; SIGHUP reloads."""
    when = _parse_as_of(as_of)
    flags: dict[str, Any] = {
        "sources.markets": markets,
        "sources.signals": signals,
        "sources.polymarket_url": polymarket_url,
        "sources.save_snapshot": save_snapshot,
        "daemon.output_dir": str(out_dir) if out_dir is not None else None,
        "daemon.interval_s": interval_s,
        "daemon.status_addr": status_addr,
        "daemon.env_file": env_file,
    }
    config = _load_config(config_path, flags)
    _output_dir(config)
    environ = environ_for_reload(config, os.environ)

    def reload() -> Config:
        return load(config_path, environ, flags)

    daemon = Daemon(config, reload=reload, as_of=when)
    try:
        with _errors_as_exit_codes():
            asyncio.run(daemon.run())
    except OSError as exc:
        raise CycleFailure(exc.strerror or str(exc)) from None


@main.command()
@click.option("--addr", metavar="HOST:PORT",
              help="The daemon's status address (default: daemon.status_addr).")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML configuration file (default: none, or $POMABOTD_CONFIG).")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's health as JSON.")
def status(addr: str | None, config_path: Path | None, as_json: bool) -> None:
    """Ask a running daemon how it is: exit 0 healthy, 1 unhealthy, 2 unreachable."""
    config = _load_config(config_path, {"daemon.status_addr": addr})
    endpoint = config.daemon.status_endpoint()
    if endpoint is None:
        raise UsageFailure("no status address: give --addr HOST:PORT or set daemon.status_addr")
    host, port = endpoint
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    try:
        response = httpx.get(url, timeout=_STATUS_TIMEOUT_S)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        click.echo(f"unreachable: {url}: {exc}", err=True)
        raise SystemExit(2) from None
    healthy = response.status_code == 200
    if as_json:
        click.echo(msgspec.json.encode(body).decode())
    else:
        state = "healthy" if healthy else f"unhealthy: {body.get('reason')}"
        click.echo(f"{state} (pid {body.get('pid')}, up {body.get('uptime_s')} s, "
                   f"{body.get('cycles_ok')} cycles ok, {body.get('cycles_failed')} failed)")
        click.echo(str(body.get("summary", "")))
        if body.get("halted"):
            pending = "; a resume request waits for the next cycle" \
                if body.get("resume_pending") else ""
            click.echo(f"halted since cycle {body.get('halted_since_cycle')}: "
                       f"{body.get('halt_reason')}{pending}")
    if not healthy:
        raise SystemExit(1)


def _summary(report: CycleReport) -> str:
    m = report.metrics
    lines = [
        f"cycle {m.cycle_id}: {m.markets_total} markets in {m.processing_time_ms / 1000:.2f} s "
        f"({m.markets_evaluated} evaluated, {m.markets_failed} failed, "
        f"{m.markets_rejected} rejected; {m.throughput_per_s:,.0f} markets/s)",
        f"  {m.opportunities} opportunities, {m.selected} opened, {m.closed} closed, "
        f"{m.open_positions} open; portfolio risk {m.portfolio_risk_pct:.2f}% of equity",
        f"  equity {usd(m.equity_usd)}, realized P&L {usd(m.realized_pnl_usd)}",
    ]
    lines += [
        f"  open  {p.side:<3} {p.market_id} edge {p.edge:.1f} size {usd(p.size_usd)}: {p.question}"
        for p in report.opened
    ]
    lines += [
        f"  close {c.market_id} {c.exit_reason} P&L {usd(c.pnl_usd)}" for c in report.closed
    ]
    lines += _halt_summary(report)
    lines.append(f"  lines appended to {report.output_dir}/positions.jsonl and metrics.jsonl")
    return "\n".join(lines)


def _halt_summary(report: CycleReport) -> list[str]:
    step = report.halt
    lines = []
    if step.lifted == "resume":
        lines.append("  halt lifted by `pomabotd resume`")
    elif step.lifted == "configuration":
        lines.append(f"  halt lifted by a configuration change ({', '.join(step.changed)})")
    if step.state.halted:
        lines.append(
            f"  HALTED since cycle {step.state.since_cycle}, no position opened: "
            f"{step.state.reason}"
        )
        lines.append(f"  lift it with `pomabotd resume --out {report.output_dir}` or a change of "
                     "[risk], [strategy] or batch.evaluator")
    return lines


@main.command("config")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML configuration file (default: none, or $POMABOTD_CONFIG).")
def show_config(config_path: Path | None) -> None:
    """Print the effective configuration as JSON, with where each value came from."""
    config = _load_config(config_path, {})
    click.echo(msgspec.json.format(msgspec.json.encode(config.describe()), indent=2).decode())


@main.command()
@click.argument("size", required=False, type=click.Choice(list(PRESETS)))
@click.option("--markets", "count", type=click.IntRange(min=1),
              help="Number of synthetic markets (instead of a named size).")
@click.option("--real", is_flag=True,
              help="Use the configured market and signal sources instead of synthetic data.")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML configuration file (default: none, or $POMABOTD_CONFIG).")
@click.option("--polymarket-url", "polymarket_url", metavar="URL",
              help="Base URL of the Polymarket Gamma API, for --real.")
@click.option("--as-of", "as_of", metavar="ISO8601", help="Evaluate as of this UTC time.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cycles to run on the same warm pool; wall time is their median.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stress(size: str | None, count: int | None, real: bool, config_path: Path | None,
           polymarket_url: str | None, as_of: str | None, repeat: int, as_json: bool) -> None:
    """Run measured cycles on a large workload and check the results (exit 1 on failure)."""
    chosen = [name for name, given in (("SIZE", size), ("--markets", count), ("--real", real))
              if given]
    if len(chosen) > 1:
        raise UsageFailure(f"give one of SIZE, --markets N or --real, not {' and '.join(chosen)}")
    when = _parse_as_of(as_of) or _now()
    config = _load_config(config_path, {"sources.polymarket_url": polymarket_url})
    markets = count if count is not None else PRESETS[size or "small"]

    async def measured() -> StressReport:
        settings, limits = batch_settings(config), config.risk_limits()
        with _progress_bar(markets) as on_progress:
            if not real:
                workload = Synthetic(markets, config.sources.seed)
                return await run_stress(settings, limits, workload, when, clock=_now,
                                        on_progress=on_progress, repeat=repeat)
            async with open_sources(config) as loader:
                return await run_stress(settings, limits, loader, when, clock=_now,
                                        on_progress=on_progress, repeat=repeat)

    with _errors_as_exit_codes():
        report = _until_signal(measured)
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    else:
        click.echo(_stress_summary(report))
    if not report.passed:
        raise click.exceptions.Exit(1)


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal; nothing at all otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    with tqdm(total=total, unit=" markets", file=sys.stderr, leave=False) as bar:

        def advance(done: int, of: int) -> None:
            bar.total = of
            bar.update(done - bar.n)

        yield advance


def _stress_summary(report: StressReport) -> str:
    lines = [
        f"markets        {report.markets:,} ({report.workers} workers)",
        f"wall time      {report.wall_s:.3f} s (generation {report.generate_s:.3f} s, "
        f"pool start {report.pool_start_s:.3f} s, not included)"
        + (f"; median of {report.repeats} cycles, least {report.wall_s_min:.3f} s"
           if report.repeats > 1 else ""),
        f"throughput     {report.throughput_per_s:,.0f} markets/s",
        f"peak memory    {report.peak_rss_mb:,.1f} MB (daemon + workers)",
        f"opportunities  {report.opportunities:,}",
        f"selected       {report.selected}",
        "checks:",
    ]
    lines += [
        f"  [{'PASS' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in report.checks
    ]
    return "\n".join(lines)


# --- Research: replay and report ---------------------------------------------------------------

_NO_PROMISE = "Past replay results promise nothing about markets to come."


def _plot_directory(option: str, directory: Path | None) -> None:
    """Refuse, before any work, a directory that cannot hold plots, or plots without matplotlib."""
    if directory is None:
        return
    if directory.exists() and not directory.is_dir():
        raise UsageFailure(f"{option} {str(directory)!r} is not a directory")
    try:
        require_matplotlib()
    except MissingExtraError as exc:
        raise UsageFailure(str(exc)) from None


def _write_plots(directory: Path, draw: Callable[[], list[Path]]) -> list[Path]:
    try:
        return draw()
    except MissingExtraError as exc:
        raise UsageFailure(str(exc)) from None
    except OSError as exc:
        raise UsageFailure(f"cannot write plots to {directory}: {exc.strerror or exc}") from None


@main.command()
@click.option("--markets", required=True, metavar="RESOLVED",
              help="Resolved markets with their price D days before closing (price_<D>d): a "
                   "JSON-lines file of markets with outcome and closes_at, or gamma:PATH (a "
                   "saved Gamma JSON array whose closed markets are priced 1/0).")
@click.option("--signals", help="Signals: a JSON-lines file (default: sources.signals).")
@click.option("--as-of-days-before", "days", required=True, type=click.IntRange(1, 3650),
              metavar="D", help="Evaluate each market D whole days before its closes_at.")
@click.option("--price-fallback", "price_fallback", is_flag=True,
              help="Evaluate a JSON-lines record without price_<D>d at its price: only when "
                   "the file's prices were recorded D days before closing, not at resolution.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", "plot_dir", type=click.Path(path_type=Path),
              help="Also write calibration and P&L-by-category PNGs to this directory.")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML configuration file (default: none, or $POMABOTD_CONFIG).")
def replay(markets: str, signals: str | None, days: int, price_fallback: bool, as_json: bool,
           plot_dir: Path | None, config_path: Path | None) -> None:
    """Evaluate resolved markets as they stood D days before closing, and score the decisions."""
    config = _load_config(config_path, {"sources.markets": markets, "sources.signals": signals})
    _plot_directory("--plot", plot_dir)
    abandoned = "the replay was abandoned, nothing printed"
    with _errors_as_exit_codes(input_is_usage=True), _stop_on_signal(abandoned):
        resolved = load_resolved(config.sources.markets, config.sources.signals, days,
                                 price_fallback=price_fallback)
    for warning in resolved.warnings:
        click.echo(f"warning: {warning}", err=True)
    with _errors_as_exit_codes():
        try:
            require_scorable(resolved)
        except CycleError:
            _report_rejected(resolved.rejected)
            raise

    async def replayed() -> ReplayResult:
        with Runtime(batch_settings(config)) as runtime:
            return await run_replay(runtime, resolved, days, config.risk_limits())

    with _errors_as_exit_codes(input_is_usage=True):
        result = _until_signal(replayed, abandoned)
    _report_rejected(result.rejected)
    for market_id, error in result.failures[:_REJECTED_SHOWN]:
        click.echo(f"failed: {market_id}: {error}", err=True)
    failure = nothing_scored(result)
    if failure is not None:
        raise CycleFailure(failure)
    plots: list[Path] = []
    if plot_dir is not None:
        with _stop_on_signal("the plots were abandoned (none is left half-written), nothing "
                             "printed"):
            plots = _write_plots(plot_dir, lambda: replay_plots(result.report, plot_dir))
    if as_json:
        click.echo(report_json(result.report).decode())
        return
    click.echo(_replay_summary(result.report))
    for path in plots:
        click.echo(f"  plot written to {path}")


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _fixed(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _settings_summary(report: ReplayReport) -> list[str]:
    """What decided: the evaluator (with its prior and kernel when built in) and the limits."""
    settings = report.settings
    evaluator = (
        f"{settings.evaluator} (built-in: {settings.prior} prior, {settings.kernel} kernel)"
        if settings.builtin
        else f"{settings.evaluator} (a plugin: strategy.prior and batch.kernel do not apply)"
    )
    limits = ", ".join(
        f"{name} {str(value).lower() if isinstance(value, bool) else format(value, 'g')}"
        for name, value in msgspec.structs.asdict(settings.risk).items()
    )
    return [f"  decided by {evaluator}", f"  risk: {limits}"]


def _replay_summary(report: ReplayReport) -> str:
    r = report
    field = f"price_{r.as_of_days_before}d"
    no_price = f"{r.skipped_no_horizon_price} without {field}, " \
        if r.skipped_no_horizon_price else ""
    no_price += f"{r.price_fallbacks} at their price for want of {field}, " \
        if r.price_fallbacks else ""
    lines = [
        f"replay of {r.markets:,} resolved markets as of {r.as_of_days_before} days before "
        f"closing ({r.records:,} market records: {r.skipped_no_closes_at} without closes_at, "
        f"{r.skipped_unresolved} unresolved, {no_price}{r.failed} failed; "
        f"{r.rejected_markets} rejected)",
        f"  {r.signal_records:,} signal records ({r.rejected_signals} rejected): "
        f"{r.signals:,} used, {r.signals_after_evaluation:,} stamped too late",
        *_settings_summary(r),
        f"  all markets: Brier {_fixed(r.brier, 4)}, range coverage {_share(r.coverage)} "
        f"(expected {_share(r.expected_coverage)})",
        f"  tradeable {r.tradeable:,}: hit rate {_share(r.hit_rate)}, mean edge "
        f"{_fixed(r.mean_edge, 1)} points, P&L per unit stake {_fixed(r.pnl_per_unit, 3)}",
        f"  selected {r.selected} positions: realized P&L {usd(r.realized_pnl_usd)}, "
        f"return on equity {r.return_on_equity_pct:.2f}%"
        + (f", worst {r.worst_position.market_id} {usd(r.worst_position.pnl_usd)}"
           if r.worst_position is not None else ""),
        "  confidence  markets   Brier  coverage  expected  tradeable  hit rate",
    ]
    lines += [
        f"  {b.low:>4.0f}-{b.high:<5.0f} {b.count:>8,} {_fixed(b.brier, 4):>7} "
        f"{_share(b.coverage):>9} {_share(b.expected_coverage):>9} {b.tradeable:>10,} "
        f"{_share(b.hit_rate):>9}"
        for b in r.confidence_buckets
    ]
    lines.append("  category       markets   Brier  coverage  tradeable  hit rate  P&L/unit"
                 "  selected  realized P&L   return")
    lines += [
        f"  {name:<13} {f.markets:>8,} {_fixed(f.brier, 4):>7} {_share(f.coverage):>9} "
        f"{f.tradeable:>10,} {_share(f.hit_rate):>9} {_fixed(f.pnl_per_unit, 3):>9} "
        f"{f.selected:>9} {usd(f.realized_pnl_usd):>13} {f.return_on_equity_pct:>+7.2f}%"
        for name, f in r.by_category.items()
    ]
    lines.append(f"  {_NO_PROMISE}")
    return "\n".join(lines)


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Directory to write the PNG plots to.")
@click.option("--from", "run_dir", type=click.Path(path_type=Path),
              help="The run's output directory (default: daemon.output_dir of the configuration).")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML configuration file (default: none, or $POMABOTD_CONFIG).")
def report(out_dir: Path, run_dir: Path | None, config_path: Path | None) -> None:
    """Draw PNG plots from a run's metrics.jsonl and positions.jsonl."""
    config = _load_config(config_path, {})
    _plot_directory("--out", out_dir)
    source = run_dir if run_dir is not None else Path(config.daemon.output_dir)
    with _stop_on_signal("the report was abandoned; no plot is left half-written"):
        with _errors_as_exit_codes(input_is_usage=True):
            run = read_run(source)
        for warning in run_warnings(run):
            click.echo(f"warning: {warning}", err=True)
        for path in _write_plots(out_dir, lambda: run_plots(run, out_dir)):
            click.echo(f"plot written to {path}")


# --- Halt rules: resume ------------------------------------------------------------------------


@main.command()
@_out_option
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML configuration file (default: none, or $POMABOTD_CONFIG).")
def resume(out_dir: Path | None, config_path: Path | None) -> None:
    """Lift the halt of an output directory at its next cycle, daemon running or not."""
    config = _load_config(config_path, {
        "daemon.output_dir": str(out_dir) if out_dir is not None else None,
    })
    out = Path(config.daemon.output_dir)
    with _errors_as_exit_codes(input_is_usage=True):
        outcome = request_resume(out, _now())
    if not outcome.halted:
        click.echo(f"{out} is not halted: nothing to resume")
        return
    click.echo(
        f"resume requested for {out}: the halt of cycle {outcome.since_cycle} "
        f"({outcome.reason}) is lifted at the start of the next cycle (a running daemon's, or "
        "the next run or run-once), and the halt rules then judge only what closes after it"
    )
