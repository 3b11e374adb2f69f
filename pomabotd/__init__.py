"""pomabotd: prediction-market research and paper trading.

The public library API is the pure evaluator and the value types it speaks; everything else
(sources, the worker pool, the daemon) is reached through the `pomabotd` command. The names
are imported on first use, so that starting the command (`python -m pomabotd --version`)
does not pay for the domain's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from pomabotd._version import __version__

if TYPE_CHECKING:
    from pomabotd.domain.evaluate import evaluate_market
    from pomabotd.domain.models import (
        CloseEvent,
        Evaluation,
        Market,
        Position,
        RiskLimits,
        Signal,
    )

__all__ = [
    "CloseEvent",
    "Evaluation",
    "Market",
    "Position",
    "RiskLimits",
    "Signal",
    "__version__",
    "evaluate_market",
]

#: Each public name -> the module that defines it.
_LAZY: Final = {
    "evaluate_market": "pomabotd.domain.evaluate",
    **dict.fromkeys(
        ("CloseEvent", "Evaluation", "Market", "Position", "RiskLimits", "Signal"),
        "pomabotd.domain.models",
    ),
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562) and keep it."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pomabotd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
