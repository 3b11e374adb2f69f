"""The composition root: a cycle's parts, built from one `Config`.

Every command and the daemon ask here for their sources, their runtime, their ledger and their
halt policy instead of wiring them themselves, so that how a part is put together from the
configuration is decided once: a new source, a new executor under the runtime or a new ledger
changes this module, not five commands. Nothing here runs a cycle (`pomabotd.cycle` does) or
knows which command asked.

Every builder refuses a setting it cannot use with `ConfigError` (exit 2) naming the key and
where its value came from, before anything is started or created; a builder that only builds
(`sources`, `runtime`) does no I/O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pomabotd.config import Config
from pomabotd.cycle import HaltPolicy, LedgerOnDemand
from pomabotd.engine.runtime import BatchSettings, Runtime
from pomabotd.errors import ConfigError, LedgerError
from pomabotd.output import Ledger, output_dir_problem
from pomabotd.sources import Sources, open_sources

__all__ = [
    "batch_settings",
    "halt_policy",
    "ledger",
    "ledger_on_demand",
    "output_dir",
    "reconfigure_runtime",
    "reopen_ledger",
    "runtime",
    "sources",
]

#: The settings that choose the sources (rather than being read by one).
_CHOOSING_SOURCES: Final = frozenset({"sources.markets", "sources.signals"})


def sources(config: Config) -> Sources:
    """The configured market and signal sources, built once and kept across cycles; nothing
    is read or fetched until a cycle loads them.

    ConfigError when `sources.markets` names no source, or when a flag sets a `sources.*`
    setting that none of them reads (`--polymarket-url` with the synthetic source): it would
    do nothing, silently.
    """
    built = open_sources(config)
    read = frozenset().union(*(source.reads for source in (built.markets, *built.signals)))
    for key, origin in config.provenance.items():
        if (origin.startswith("flag:") and key.startswith("sources.")
                and key not in _CHOOSING_SOURCES and key not in read):
            raise ConfigError(
                f"{origin.removeprefix('flag:')} would do nothing: no configured source reads "
                f"{key} (the market source is {config.sources.markets!r}, from "
                f"{config.source_phrase('sources.markets')})"
            )
    return built


def batch_settings(config: Config) -> BatchSettings:
    """The runtime's settings: the `batch.*` section and the strategy's prior."""
    batch = config.batch
    return BatchSettings(
        workers=batch.workers,
        batch_size=batch.batch_size,
        max_concurrency=batch.max_concurrency,
        timeout_ms=batch.timeout_ms,
        retry_attempts=batch.retry_attempts,
        evaluator=batch.evaluator,
        kernel=batch.kernel,
        decoder=batch.decoder,
        prior=config.strategy.prior,
        executor=batch.executor,
        dask_scheduler=batch.dask_scheduler,
        dask_shared_files=batch.dask_shared_files,
    )


def runtime(config: Config) -> Runtime:
    """The evaluation runtime the configuration asks for, not yet started (`start` it, or use
    it as a context manager, before loading a cycle's data)."""
    return Runtime(batch_settings(config))


def reconfigure_runtime(running: Runtime, config: Config) -> None:
    """Put a reloaded configuration's settings in force on a running runtime (its workers are
    rebuilt only when what they load changed)."""
    running.reconfigure(batch_settings(config))


def halt_policy(config: Config) -> HaltPolicy:
    """The `[halt]` thresholds, and the decision settings whose change lifts a halt."""
    return HaltPolicy(rules=config.halt, settings=config.decision_settings())


def output_dir(config: Config) -> Path:
    """`daemon.output_dir`, checked without creating anything: ConfigError when it cannot be
    an output directory (a file, read-only, or impossible to create where it would be)."""
    directory = Path(config.daemon.output_dir)
    problem = output_dir_problem(directory)
    if problem is not None:
        raise ConfigError(f"daemon.output_dir {str(directory)!r} (from "
                          f"{config.source_phrase('daemon.output_dir')}) {problem}")
    return directory


def ledger(config: Config) -> Ledger:
    """The ledger of `daemon.output_dir`, created if needed and locked (the daemon's: open for
    the life of the process); LedgerError names the key and where its value came from."""
    try:
        return Ledger(Path(config.daemon.output_dir))
    except LedgerError as exc:
        raise LedgerError(_output_dir_failure(config, exc)) from None


def reopen_ledger(current: Ledger, config: Config) -> None:
    """Reopen the ledger's files by name (after a rename-based rotation)."""
    try:
        current.reopen()
    except LedgerError as exc:
        raise LedgerError(_output_dir_failure(config, exc)) from None


def ledger_on_demand(config: Config) -> LedgerOnDemand:
    """The ledger of `daemon.output_dir` for one cycle (`run-once`): created and locked only
    once the cycle has something to write, so a cycle that fails leaves no trace. The
    directory is checked first (`output_dir`)."""
    return LedgerOnDemand(output_dir(config))


def _output_dir_failure(config: Config, exc: LedgerError) -> str:
    return (f"daemon.output_dir {config.daemon.output_dir!r} (from "
            f"{config.source_phrase('daemon.output_dir')}): {exc}")
