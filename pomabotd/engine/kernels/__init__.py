"""How the built-in evaluator runs: market by market, or as a batch over columns.

An evaluator is either per market, with `pomabotd.evaluate_market`'s signature (every strategy
plugin, and the built-in one on the scalar path), or batch: columns in, columns out
(`BatchEvaluator`). The built-in evaluator is both; `batch_form` gives the batch form of an
evaluator that has one, and `batch.kernel` says whether the engine uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pomabotd.domain.belief import Prior
from pomabotd.domain.evaluate import evaluate_market
from pomabotd.engine.kernels.columnar import Verdicts, evaluate_columns
from pomabotd.engine.kernels.columns import MarketColumns, SignalColumns

__all__ = ["BatchEvaluator", "batch_form"]

BatchEvaluator = Callable[[MarketColumns, SignalColumns, datetime, Prior], Verdicts]
"""Columns in, columns out: a chunk's markets and signals to their verdicts."""


def batch_form(evaluator: Callable[..., Any]) -> BatchEvaluator | None:
    """The batch form of `evaluator`, or None for a per-market-only one (a plugin)."""
    return evaluate_columns if evaluator is evaluate_market else None
