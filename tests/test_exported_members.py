"""The public API is exactly what `__all__` promises, in every public module."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import pomabotd

MODULES = sorted(
    name
    for _, name, is_package in pkgutil.walk_packages(pomabotd.__path__, "pomabotd.")
    if not is_package and not name.rsplit(".", 1)[-1].startswith("_")
)


def test_package_exports_the_evaluator_and_value_types():
    """`from pomabotd import *` gives the evaluator and the Structs of its files and API."""
    assert set(pomabotd.__all__) == {
        "CloseEvent", "Evaluation", "Market", "Position", "RiskLimits", "Signal",
        "__version__", "evaluate_market",
    }
    from pomabotd.domain.evaluate import evaluate_market

    assert pomabotd.evaluate_market is evaluate_market


@pytest.mark.parametrize("module_name", MODULES)
def test_every_name_in_all_exists(module_name: str):
    """Each module declares `__all__`, listing only names it defines, without duplicates."""
    module = importlib.import_module(module_name)
    exported = module.__all__
    assert len(exported) == len(set(exported))
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == []
