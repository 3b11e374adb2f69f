"""Every log line pomabotd writes names its event: checked in the code that writes them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pomabotd"
_LEVELS = {"trace", "debug", "info", "success", "warning", "error", "critical", "exception",
           "log", "opt"}


def _violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        receiver = node.func.value
        if not (isinstance(receiver, ast.Name) and receiver.id == "logger"):
            continue
        where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        if node.func.attr in _LEVELS:
            found.append(f"{where}: logger.{node.func.attr}() without bind(event=...)")
        elif node.func.attr == "bind" and "event" not in {k.arg for k in node.keywords}:
            found.append(f"{where}: logger.bind() without event=")
    return found


def test_every_log_call_binds_an_event() -> None:
    """No module logs through the bare logger or binds fields without `event`, so every JSON
    line can be told apart by its `event` field (log.py, which sets loguru up, aside)."""
    violations = [
        problem
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "log.py" or path.parent != PACKAGE
        for problem in _violations(path)
    ]
    assert violations == []
