"""No silent options: an option that would do nothing, or whose value would be dropped, is bad
usage (exit 2, naming the option), and nothing is created."""

from __future__ import annotations

from pathlib import Path

from conftest import DATA, RunCli


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


# --- options that would do nothing ---------------------------------------------------------


def test_polymarket_url_without_the_polymarket_source_is_refused(
    run_cli: RunCli, tmp_path: Path
):
    """`run-once --polymarket-url` on the synthetic default exits 2 naming the option and the
    source in force, and creates no output directory."""
    result = run_cli("run-once", "--polymarket-url", "http://127.0.0.1:9/", "--out",
                     str(tmp_path / "o"))
    assert result.returncode == 2
    assert "--polymarket-url would do nothing" in result.stderr
    assert "'synthetic', from the default" in result.stderr
    assert not (tmp_path / "o").exists()


def test_save_snapshot_on_a_source_that_fetches_nothing_is_refused(
    run_cli: RunCli, tmp_path: Path
):
    """`evaluate --markets gamma:FILE --save-snapshot F` exits 2 naming --save-snapshot (a
    saved file is read, nothing fetched), writes no snapshot and prints no evaluation."""
    markets = f"gamma:{DATA / 'gamma' / 'markets_sample_50.json'}"
    result = run_cli("evaluate", "--markets", markets, "--save-snapshot", "snap.json")
    assert result.returncode == 2
    assert "--save-snapshot would do nothing" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "snap.json").exists()


def test_the_daemon_refuses_an_option_no_source_reads(run_cli: RunCli, tmp_path: Path):
    """`run --polymarket-url` with a JSON-lines market file exits 2 naming the option before
    it starts (no output directory, no status address taken)."""
    result = run_cli("run", "--markets", str(DATA / "cycle_markets.jsonl"), "--polymarket-url",
                     "http://127.0.0.1:9/", "--status-addr", "127.0.0.1:0", "--out",
                     str(tmp_path / "o"), timeout=60)
    assert result.returncode == 2
    assert "--polymarket-url would do nothing" in result.stderr
    assert not (tmp_path / "o").exists()


def test_stress_polymarket_url_needs_real(run_cli: RunCli):
    """`stress --polymarket-url` without `--real` exits 2 naming both options; with `--real`
    on the synthetic source it is refused as doing nothing too."""
    alone = run_cli("stress", "small", "--polymarket-url", "http://127.0.0.1:9/")
    assert alone.returncode == 2
    assert "--polymarket-url would do nothing without --real" in alone.stderr
    real = run_cli("stress", "--real", "--polymarket-url", "http://127.0.0.1:9/")
    assert real.returncode == 2
    assert "--polymarket-url would do nothing: no configured source reads" in real.stderr


# --- report: --plots for the plots, --out for the run --------------------------------------


def test_report_from_is_refused_with_its_new_name(run_cli: RunCli, tmp_path: Path):
    """The old `report --from RUN` exits 2 saying it is now --out; nothing is drawn."""
    result = run_cli("report", "--from", "run", "--plots", "plots")
    assert result.returncode == 2
    assert "report --from is now --out" in result.stderr
    assert not (tmp_path / "plots").exists()


def test_report_from_given_twice_is_refused(run_cli: RunCli):
    """`report --from A --from B` exits 2 naming --from."""
    result = run_cli("report", "--from", "a", "--from", "b", "--plots", "plots")
    assert result.returncode == 2
    assert "--from is given 2 times" in result.stderr


def test_report_with_out_but_no_plots_says_what_out_means_now(run_cli: RunCli, tmp_path: Path):
    """The old `report --out PLOTS` (no --plots) exits 2 asking for --plots and saying --out
    names the run's output directory; nothing is created."""
    result = run_cli("report", "--out", "plots")
    assert result.returncode == 2
    assert "report needs --plots DIR" in result.stderr
    assert "--out names the run's output directory" in result.stderr
    assert not (tmp_path / "plots").exists()


def test_report_out_given_twice_is_refused(run_cli: RunCli, tmp_path: Path):
    """`report --out A --out B --plots P` exits 2 naming --out; nothing is drawn."""
    result = run_cli("report", "--out", "a", "--out", "b", "--plots", "plots")
    assert result.returncode == 2
    assert "--out is given 2 times" in result.stderr
    assert not (tmp_path / "plots").exists()
