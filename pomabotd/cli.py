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
from typing import Any, BinaryIO, TypeVar

import click
import httpx
import msgspec
from tqdm import tqdm

from pomabotd._version import __version__
from pomabotd.config import Config, load
from pomabotd.cycle import (
    ConfiguredInputs,
    CycleReport,
    LedgerOnDemand,
    batch_settings,
    run_cycle,
)
from pomabotd.daemon.loop import Daemon
from pomabotd.daemon.signals import STOP_SIGNALS
from pomabotd.engine.runtime import Runtime
from pomabotd.errors import ConfigError, PomabotdError
from pomabotd.log import configure_logging, logger
from pomabotd.output import output_dir_problem
from pomabotd.sources.inputs import SYNTHETIC, load_inputs
from pomabotd.sources.jsonl import Rejected
from pomabotd.stress import PRESETS, StressReport, run_stress

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
def _errors_as_exit_codes() -> Iterator[None]:
    """Turn pomabotd's typed errors into one-line messages with the SPEC's exit codes."""
    try:
        yield
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    except PomabotdError as exc:
        raise CycleFailure(str(exc)) from None


def _load_config(config_path: Path | None, flags: dict[str, Any]) -> Config:
    with _errors_as_exit_codes():
        config = load(config_path, os.environ, flags)
    try:
        configure_logging(config.log.level, config.log.format, config.log.file)
    except OSError as exc:
        source = config.provenance["log.file"]
        raise UsageFailure(f"log.file {config.log.file!r} cannot be opened (from {source}): "
                           f"{exc.strerror}") from None
    for warning in config.warnings:
        logger.warning("{}", warning)
    return config


def _output_dir(config: Config) -> Path:
    """The configured output directory, refused (exit 2) if it cannot be one."""
    out = Path(config.daemon.output_dir)
    problem = output_dir_problem(out)
    if problem is not None:
        source = config.provenance["daemon.output_dir"].replace(":", " ", 1)
        raise UsageFailure(f"output directory {str(out)!r} {problem} (from {source})")
    return out


def _until_signal(work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run `work()` on a new event loop; SIGTERM or SIGINT abandons it, and the command then
    exits with 128 + the signal's number (SPEC section 9)."""
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
        name = signal.Signals(received[0]).name
        click.echo(f"stopped by {name}: the cycle was abandoned, nothing of it written",
                   err=True)
        raise SystemExit(128 + received[0]) from None


def _report_rejected(rejected: tuple[Rejected, ...] | list[Rejected]) -> None:
    for record in rejected[:_REJECTED_SHOWN]:
        click.echo(f"rejected: {record}", err=True)
    if len(rejected) > _REJECTED_SHOWN:
        click.echo(f"rejected: ... and {len(rejected) - _REJECTED_SHOWN} more records", err=True)


def _common_options(function: Callable[..., Any]) -> Callable[..., Any]:
    options = (
        click.option("--config", "config_path", type=click.Path(path_type=Path),
                     help="TOML configuration file (default: none, or $POMABOTD_CONFIG)."),
        click.option("--markets", help="Markets: a JSON-lines file, or 'synthetic'."),
        click.option("--signals", help="Signals: a JSON-lines file."),
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
             as_of: str | None) -> None:
    """Write one evaluation per market, in input order, as JSON lines on stdout."""
    if markets is None:
        raise UsageFailure("evaluate needs --markets FILE (or --markets synthetic)")
    when = _parse_as_of(as_of) or _now()
    config = _load_config(config_path, {"sources.markets": markets, "sources.signals": signals})
    out: BinaryIO = sys.stdout.buffer

    def write(lines: bytes) -> None:
        out.write(lines)

    with _errors_as_exit_codes(), Runtime(batch_settings(config)) as runtime:
        sources = config.sources
        cycle_input = load_inputs(sources.markets, sources.signals, when,
                                  synthetic_markets=sources.synthetic_markets, seed=sources.seed)
        result = runtime.evaluate_sync(
            cycle_input.markets, cycle_input.markets_source,
            cycle_input.signals, cycle_input.signals_source,
            when, on_lines=write,
        )
        out.flush()
    _report_rejected([*cycle_input.rejected, *result.rejected])


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
             as_of: str | None, out_dir: Path | None, as_json: bool) -> None:
    """Run one cycle, append its lines to the output directory, print a summary."""
    when = _parse_as_of(as_of)
    config = _load_config(config_path, {
        "sources.markets": markets,
        "sources.signals": signals,
        "daemon.output_dir": str(out_dir) if out_dir is not None else None,
    })
    out = _output_dir(config)
    if not config.batch.enabled:
        source = config.provenance["batch.enabled"].replace(":", " ", 1)
        click.echo(f"batch.enabled is false (from {source}): no cycle run, nothing written",
                   err=True)
        return

    async def one_cycle() -> CycleReport:
        inputs = ConfiguredInputs(config.sources)
        with Runtime(batch_settings(config)) as runtime, LedgerOnDemand(out) as ledger:
            try:
                return await run_cycle(runtime, inputs, ledger.portfolio(), ledger,
                                       config.risk_limits(), as_of=when, clock=_now)
            finally:
                await inputs.aclose()

    with _errors_as_exit_codes():
        report = _until_signal(one_cycle)
    _report_rejected(report.rejected)
    if as_json:
        summary = msgspec.structs.asdict(report.metrics)
        summary["output_dir"] = report.output_dir
        click.echo(msgspec.json.encode(summary).decode())
    else:
        click.echo(_summary(report))


@main.command()
@_common_options
@_out_option
@click.option("--interval", "interval_s", type=float, metavar="SECONDS",
              help="Seconds between cycle starts (default: daemon.interval_s).")
@click.option("--status-addr", "status_addr", metavar="HOST:PORT",
              help="Status endpoint address; '' switches it off (default: daemon.status_addr).")
def run(config_path: Path | None, markets: str | None, signals: str | None, as_of: str | None,
        out_dir: Path | None, interval_s: float | None, status_addr: str | None) -> None:
    """Run the daemon: a cycle every interval until SIGTERM; SIGHUP reloads."""
    when = _parse_as_of(as_of)
    flags: dict[str, Any] = {
        "sources.markets": markets,
        "sources.signals": signals,
        "daemon.output_dir": str(out_dir) if out_dir is not None else None,
        "daemon.interval_s": interval_s,
        "daemon.status_addr": status_addr,
    }
    config = _load_config(config_path, flags)
    _output_dir(config)

    def reload() -> Config:
        return load(config_path, os.environ, flags)

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
        f"  equity ${m.equity_usd:,.2f}, realized P&L ${m.realized_pnl_usd:,.2f}",
    ]
    lines += [
        f"  open  {p.side:<3} {p.market_id} edge {p.edge:.1f} size ${p.size_usd:,.2f}: {p.question}"
        for p in report.opened
    ]
    lines += [
        f"  close {c.market_id} {c.exit_reason} P&L ${c.pnl_usd:,.2f}" for c in report.closed
    ]
    lines.append(f"  lines appended to {report.output_dir}/positions.jsonl and metrics.jsonl")
    return "\n".join(lines)


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
@click.option("--as-of", "as_of", metavar="ISO8601", help="Evaluate as of this UTC time.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stress(size: str | None, count: int | None, real: bool, config_path: Path | None,
           as_of: str | None, as_json: bool) -> None:
    """Run one measured cycle on a large workload and check the results (exit 1 on failure)."""
    chosen = [name for name, given in (("SIZE", size), ("--markets", count), ("--real", real))
              if given]
    if len(chosen) > 1:
        raise UsageFailure(f"give one of SIZE, --markets N or --real, not {' and '.join(chosen)}")
    when = _parse_as_of(as_of) or _now()
    config = _load_config(config_path, {})
    markets = count if count is not None else PRESETS[size or "small"]
    sources = config.sources if real else msgspec.structs.replace(
        config.sources, markets=SYNTHETIC, signals="", synthetic_markets=markets
    )

    async def measured() -> StressReport:
        with _progress_bar(markets) as on_progress:
            return await run_stress(batch_settings(config), config.risk_limits(),
                                    ConfiguredInputs(sources), when, clock=_now,
                                    on_progress=on_progress)

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
        f"pool start {report.pool_start_s:.3f} s, not included)",
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
