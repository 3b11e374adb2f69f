"""What runs a cycle's tasks: one protocol (`base.py`) and a table of backends, one line each.

A backend is a class taking the batch settings; it is imported only when chosen, so an
optional dependency of one backend costs nothing to the others. `batch.workers = 0` runs in
this process whatever `batch.executor` says.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from pomabotd.engine.executor.base import Capabilities, Executor, Gauge, Sharing, WorkerLost

if TYPE_CHECKING:
    from pomabotd.engine.schedule import BatchSettings

__all__ = [
    "BACKENDS",
    "Capabilities",
    "Executor",
    "Gauge",
    "Sharing",
    "WorkerLost",
    "backend_name",
    "open_executor",
]

#: Backend name -> `module:class`; the class is built with the batch settings.
BACKENDS: Final[dict[str, str]] = {
    "inline": "pomabotd.engine.executor.inline:InlineExecutor.from_settings",
    "local": "pomabotd.engine.executor.local:LocalExecutor.from_settings",
    "dask": "pomabotd.engine.executor.dask:DaskExecutor.from_settings",
}


def backend_name(settings: BatchSettings) -> str:
    """The backend the settings choose."""
    return "inline" if settings.workers == 0 else settings.executor


def open_executor(settings: BatchSettings) -> Executor:
    """A new, unstarted executor of the backend the settings choose."""
    module, _, attribute = BACKENDS[backend_name(settings)].partition(":")
    factory: object = importlib.import_module(module)
    for part in attribute.split("."):
        factory = getattr(factory, part)
    executor: Executor = factory(settings)  # type: ignore[operator]
    return executor
