"""Plot directories for `replay --plot` and `report`: refused before any work when they cannot
hold plots, and a failure to write one named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pomabotd.cli.common import UsageFailure
from pomabotd.errors import MissingExtraError
from pomabotd.plots import require_matplotlib

__all__ = ["check_plot_directory", "write_plots"]


def check_plot_directory(option: str, directory: Path | None) -> None:
    """Refuse, before any work, a directory that cannot hold plots, or plots without matplotlib."""
    if directory is None:
        return
    if directory.exists() and not directory.is_dir():
        raise UsageFailure(f"{option} {str(directory)!r} is not a directory")
    try:
        require_matplotlib()
    except MissingExtraError as exc:
        raise UsageFailure(str(exc)) from None


def write_plots(directory: Path, draw: Callable[[], list[Path]]) -> list[Path]:
    """Run `draw` (it writes the PNGs into `directory`); exit 2 when they cannot be written."""
    try:
        return draw()
    except MissingExtraError as exc:
        raise UsageFailure(str(exc)) from None
    except OSError as exc:
        raise UsageFailure(f"cannot write plots to {directory}: {exc.strerror or exc}") from None
