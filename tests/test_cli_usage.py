"""No silent options: an option that would do nothing, or whose value would be dropped, is bad
usage (exit 2, naming the option), and nothing is created."""

from __future__ import annotations

from pathlib import Path

from conftest import RunCli


def test_an_option_given_twice_is_refused_naming_it(run_cli: RunCli, tmp_path: Path):
    """`run-once --out A --out B` exits 2 naming --out, and creates neither directory."""
    result = run_cli("run-once", "--out", str(tmp_path / "a"), "--out", str(tmp_path / "b"))
    assert result.returncode == 2
    assert "--out is given 2 times" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_repeated_flag_is_not_refused(run_cli: RunCli):
    """A flag given twice means what it means once: `status --json --json` goes on to its
    own check (here: no status address)."""
    result = run_cli("status", "--json", "--json", "--addr", "")
    assert result.returncode == 2
    assert "given 2 times" not in result.stderr and "no status address" in result.stderr
