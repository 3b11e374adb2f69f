"""pomabotd: prediction-market research and paper trading.

The public library API is the pure evaluator and the value types it speaks; everything else
(sources, the worker pool, the daemon) is reached through the `pomabotd` command.
"""

from __future__ import annotations

from pomabotd._version import __version__
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
