"""`pomabotd report` on the files of real `run-once` cycles, the run-file reader, and the plots."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path

import msgspec
import pytest
from research_helpers import TESTS, assert_png, finish_alone, run_alone, start_alone

from pomabotd.domain.models import CATEGORIES, Evaluation, RiskLimits
from pomabotd.domain.research import Graded, scorecard
from pomabotd.engine.runtime import BatchSettings, Runtime
from pomabotd.errors import InputError
from pomabotd.plots import (
    calibration_figure,
    closes_by_reason,
    cycles_figure,
    equity_figure,
    pnl_by_category_figure,
    positions_figure,
)
from pomabotd.replay.run import ReplayReport, replay
from pomabotd.replay.source import load_resolved
from pomabotd.report import (
    RunFiles,
    read_run,
    realized_by_cycle,
    realized_steps,
    run_warnings,
    starting_equity,
)

DATA = TESTS / "data"
CYCLE_MARKETS = DATA / "cycle_markets.jsonl"
AS_OF = "2026-06-01T12:00:00Z"
_UNIT = re.compile(r"\((%|USD|USD per USD|count|markets/s|id)\)$")


def _run_once(cwd: Path, config: Path, markets: Path) -> None:
    result = run_alone(cwd, "run-once", "--config", str(config), "--markets", str(markets),
                       "--signals", str(DATA / "cycle_signals.jsonl"), "--as-of", AS_OF)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_report_draws_a_real_run_without_touching_its_files(tmp_path: Path):
    """Two run-once cycles (two positions opened, one closed at its target; evaluated in-process
    to spare the machine a pool start) into the configured output directory; report, given the
    same config, draws three PNGs from them and leaves the run's files byte for byte as they
    were."""
    config = tmp_path / "pomabotd.toml"
    config.write_text('[batch]\nworkers = 0\n\n[daemon]\noutput_dir = "run"\n')
    _run_once(tmp_path, config, CYCLE_MARKETS)
    moved = tmp_path / "moved.jsonl"
    moved.write_text(CYCLE_MARKETS.read_text().replace('"price": 30', '"price": 34'))
    _run_once(tmp_path, config, moved)
    run = tmp_path / "run"
    before = {path.name: path.read_bytes() for path in run.iterdir()}

    result = run_alone(tmp_path, "report", "--config", str(config), "--plots", "plots")
    assert result.returncode == 0, result.stderr
    names = ["cycles.png", "positions.png", "equity.png"]
    assert result.stdout.splitlines() == [f"plot written to plots/{name}" for name in names]
    for name in names:
        assert_png(tmp_path / "plots" / name)
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_report_without_a_run_is_a_usage_error(tmp_path: Path):
    """A directory without metrics.jsonl is named, with exit status 2, and nothing is drawn."""
    result = run_alone(tmp_path, "report", "--out", "nothing-here", "--plots", "plots")
    assert result.returncode == 2
    assert "nothing-here has no metrics.jsonl" in result.stderr
    assert not (tmp_path / "plots").exists()


def test_plots_without_matplotlib_are_refused_before_any_work(tmp_path: Path):
    """With matplotlib unimportable, report and replay --plot exit 2 saying what to install,
    and replay does not run first."""
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("matplotlib is hidden here")\n')
    env = {"PYTHONPATH": str(shadow.parent)}
    report = run_alone(tmp_path, "report", "--out", ".", "--plots", "plots", env=env)
    replayed = run_alone(
        tmp_path, "replay", "--markets", str(DATA / "replay_markets.jsonl"),
        "--as-of-days-before", "7", "--plot", "plots", env=env,
    )
    for result in (report, replayed):
        assert result.returncode == 2
        assert "pip install 'pomabotd[plots]'" in result.stderr
        assert "Traceback" not in result.stderr
    assert replayed.stdout == ""
    assert not (tmp_path / "plots").exists()


def _metrics_line(
    cycle_id: int, realized: float, counts: tuple[int, int, int] = (0, 0, 0)
) -> bytes:
    """A metrics line; `counts` are the positions it opened, closed and left open."""
    selected, closed, open_positions = counts
    fields = {
        "cycle_id": cycle_id, "started_at": AS_OF, "finished_at": AS_OF, "markets_total": 5,
        "markets_evaluated": 5, "markets_failed": 0, "markets_rejected": 0, "retries": 0,
        "timeouts": 0, "worker_restarts": 0, "processing_time_ms": 1.0,
        "throughput_per_s": 5000.0, "avg_eval_us": 3.0, "rss_mb": 50.0, "cpu_percent": 90.0,
        "opportunities": 2, "selected": selected, "closed": closed,
        "open_positions": open_positions,
        "portfolio_risk_pct": 5.0, "equity_usd": 10000.0 + realized,
        "realized_pnl_usd": realized, "success_rate": 1.0,
    }
    return msgspec.json.encode(fields) + b"\n"


def _open_line(cycle_id: int, market_id: str) -> bytes:
    return msgspec.json.encode({
        "event": "open", "cycle_id": cycle_id, "position_id": f"{cycle_id}-{market_id}",
        "market_id": market_id, "question": "?", "category": "crypto", "side": "YES",
        "entry_price": 20.0, "size_usd": 100.0, "risk_usd": 100.0, "edge": 30.0,
        "belief_low": 50.0, "belief_high": 60.0, "confidence": 70.0, "stop_price": 19.0,
        "target_price": 22.0, "opened_at": AS_OF,
    }) + b"\n"


def _close_line(cycle_id: int, position_id: str, pnl: float) -> bytes:
    return msgspec.json.encode({
        "event": "close", "cycle_id": cycle_id, "position_id": position_id,
        "market_id": position_id.split("-", 1)[1], "exit_price": 22.0,
        "exit_reason": "profit_target", "pnl_usd": pnl, "closed_at": AS_OF,
    }) + b"\n"


def test_read_run_sees_finished_cycles_only(tmp_path: Path):
    """Cycles 1-3 are finished; the positions of cycle 4, which has no metrics line yet, and a
    torn last metrics line are left out. Realized P&L cumulates per cycle: 0, 10, 10 - 4."""
    (tmp_path / "metrics.jsonl").write_bytes(
        _metrics_line(1, 0.0, (2, 0, 2)) + _metrics_line(2, 10.0, (0, 1, 1))
        + _metrics_line(3, 6.0, (0, 1, 0)) + _metrics_line(4, 99.0)[:40]
    )
    (tmp_path / "positions.jsonl").write_bytes(
        _open_line(1, "a") + _open_line(1, "b") + _close_line(2, "1-a", 10.0)
        + _close_line(3, "1-b", -4.0) + _open_line(4, "c") + _close_line(4, "4-c", 50.0)
    )
    run = read_run(tmp_path)
    assert [m.cycle_id for m in run.metrics] == [1, 2, 3]
    assert len(run.events) == 4 and max(e.cycle_id for e in run.events) == 3
    assert realized_by_cycle(run) == [0.0, 10.0, 6.0]
    assert starting_equity(run) == 10000.0


def test_a_rotated_run_starts_its_curve_at_what_was_realized_before(tmp_path: Path):
    """After a rotation metrics.jsonl starts at cycle 5 with 100 USD realized (10 of it closed
    in cycle 5) and positions.jsonl still holds a close of cycle 2, already in that figure:
    the curve is 100, 110, 104 (not 10, 20, 14), each cycle's own closes 10, 10, -6, and the
    files agree, so nothing is said."""
    (tmp_path / "metrics.jsonl").write_bytes(
        _metrics_line(5, 100.0, (0, 1, 2)) + _metrics_line(6, 110.0, (0, 1, 1))
        + _metrics_line(7, 104.0, (0, 1, 0))
    )
    (tmp_path / "positions.jsonl").write_bytes(
        _open_line(1, "z") + _close_line(2, "1-z", 90.0)
        + _open_line(4, "a") + _open_line(4, "b") + _open_line(4, "c")
        + _close_line(5, "4-a", 10.0) + _close_line(6, "4-b", 10.0) + _close_line(7, "4-c", -6.0)
    )
    run = read_run(tmp_path)
    assert realized_by_cycle(run) == [100.0, 110.0, 104.0]
    assert realized_steps(run) == [10.0, 10.0, -6.0]
    assert starting_equity(run) == 10000.0
    assert run_warnings(run) == []


def test_positions_missing_or_rotated_apart_are_named(tmp_path: Path):
    """positions.jsonl starting after metrics.jsonl (rotated apart: cycle 2's +10 close gone
    with the lines before cycle 3) is named with the cycle where the two part; without
    positions.jsonl the curve is the metrics' own realized P&L and that is said too; `report`
    prints both on stderr as warnings."""
    (tmp_path / "metrics.jsonl").write_bytes(
        _metrics_line(1, 0.0, (2, 0, 2)) + _metrics_line(2, 10.0, (0, 1, 1))
        + _metrics_line(3, 6.0, (0, 1, 0))
    )
    (tmp_path / "positions.jsonl").write_bytes(_close_line(3, "1-b", -4.0))
    run = read_run(tmp_path)
    assert realized_by_cycle(run) == [0.0, 0.0, -4.0]
    [warning] = run_warnings(run)
    assert "the closes in positions.jsonl add up to 0.00 USD of realized P&L by cycle 2, " \
        "where metrics.jsonl says 10.00: positions.jsonl starts after metrics.jsonl" in warning

    (tmp_path / "positions.jsonl").unlink()
    run = read_run(tmp_path)
    assert realized_by_cycle(run) == [0.0, 10.0, 6.0]
    assert run_warnings(run) == [f"{tmp_path} has no positions.jsonl: the equity curve follows "
                                 "the realized_pnl_usd of metrics.jsonl, without the positions' "
                                 "detail"]
    result = run_alone(tmp_path, "report", "--out", str(tmp_path), "--plots", "plots")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"warning: {run_warnings(run)[0]}"]
    assert_png(tmp_path / "plots" / "equity.png")


def test_read_run_names_a_bad_line(tmp_path: Path):
    """A complete line that is not a metrics record is an input error naming file and line."""
    (tmp_path / "metrics.jsonl").write_bytes(_metrics_line(1, 0.0) + b'{"cycle_id": "x"}\n')
    with pytest.raises(InputError, match=r"metrics.jsonl line 2: .*cycle_id"):
        read_run(tmp_path)


def _replay_report(markets: Path = DATA / "replay_markets.jsonl",
                   signals: Path = DATA / "replay_signals.jsonl") -> ReplayReport:
    resolved = load_resolved(str(markets), str(signals), 7)
    settings = BatchSettings(workers=0, batch_size=100, max_concurrency=4, timeout_ms=5000,
                             retry_attempts=0)
    with Runtime(settings) as runtime:
        return asyncio.run(replay(runtime, resolved, 7, RiskLimits())).report


def test_every_axis_names_its_unit(tmp_path: Path):
    """Each plot's value axes end in a unit, any other axis says what it holds, and each
    figure's bottom axis says what x is."""
    (tmp_path / "metrics.jsonl").write_bytes(
        _metrics_line(1, 0.0, (1, 0, 1)) + _metrics_line(2, 10.0, (0, 1, 0)))
    (tmp_path / "positions.jsonl").write_bytes(_open_line(1, "a") + _close_line(2, "1-a", 10.0))
    run: RunFiles = read_run(tmp_path)
    report = _replay_report()
    figures = [calibration_figure(report), pnl_by_category_figure(report), cycles_figure(run),
               positions_figure(run), equity_figure(run)]
    for figure in figures:
        axes = figure.get_axes()
        for ax in axes:
            labels = [label for label in (ax.get_xlabel(), ax.get_ylabel()) if label]
            assert any(_UNIT.search(label) for label in labels), labels
            assert all(_UNIT.search(label) or label == "category" for label in labels), labels
        assert axes[-1].get_xlabel()
    assert _UNIT.search(figures[0].get_axes()[0].get_xlabel())


def _nine_categories(directory: Path) -> tuple[Path, Path]:
    """One tradeable market per category (YES at 20 against a belief of 57-67), winning and
    losing in turn, plus three untradeable markets at the prior that all resolved NO (a
    calibration bucket observed at 0%)."""
    markets, signals = [], []
    for index, category in enumerate(CATEGORIES):
        markets.append({"id": f"{category}-{index}", "question": "?", "category": category,
                        "price": 1, "price_7d": 20, "liquidity": 5000,
                        "closes_at": "2026-03-10T00:00:00Z",
                        "outcome": "YES" if index % 2 else "NO"})
        signals += [{"market_id": f"{category}-{index}", "type": "authoritative",
                     "direction": "up", "strength": 5, "timestamp": f"2026-03-02T2{hour}:00:00Z"}
                    for hour in (2, 3)]
    markets += [{"id": f"flat-{n}", "question": "?", "category": "other", "price": 1,
                 "price_7d": 50, "liquidity": 5000, "closes_at": "2026-03-10T00:00:00Z",
                 "outcome": "NO"} for n in range(3)]
    paths = directory / "markets.jsonl", directory / "signals.jsonl"
    for path, records in zip(paths, (markets, signals), strict=True):
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return paths


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_plots_read_with_nine_categories_and_losses(tmp_path: Path):
    """With all nine categories, losses and an empty-looking bucket: every category name is
    shown whole and none overlaps another; every count or note sits inside its plot, clear of
    the titles and of the tick labels; losses read -$500.00, never $-500.00; count axes
    carry whole numbers only."""
    report = _replay_report(*_nine_categories(tmp_path))
    assert report.tradeable == 9
    assert min(f.realized_pnl_usd for f in report.by_category.values()) == -500.0
    by_category, calibration = pnl_by_category_figure(report), calibration_figure(report)
    texts: list[str] = []
    for figure in (by_category, calibration):
        renderer = figure.canvas.get_renderer()
        figure.canvas.draw()
        titles = [ax.title.get_window_extent(renderer) for ax in figure.get_axes()]
        if figure.get_suptitle():
            titles.append(figure._suptitle.get_window_extent(renderer))
        for ax in figure.get_axes():
            frame = ax.get_window_extent(renderer)
            ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels()
                     + ax.get_yticklabels() if t.get_visible() and t.get_text()]
            for note in ax.texts:
                box = note.get_window_extent(renderer)
                texts.append(note.get_text())
                assert frame.x0 <= box.x0 and box.x1 <= frame.x1, note.get_text()
                assert frame.y0 <= box.y0 and box.y1 <= frame.y1, note.get_text()
                assert not any(_overlap(box, other) for other in titles + ticks), note.get_text()
    names = [t.get_text() for t in by_category.get_axes()[0].get_yticklabels()]
    assert names == list(CATEGORIES)
    renderer = by_category.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in by_category.get_axes()[0].get_yticklabels()]
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert "$-" not in by_category.get_suptitle()
    assert "-$500.00, 1 pos." in texts and not any("$-" in text for text in texts)
    assert "n=3" in texts  # the flat markets' bucket, observed at 0%
    counts_axis = calibration.get_axes()[1]
    assert all(float(tick).is_integer() for tick in counts_axis.get_yticks())


def test_halted_cycles_are_marked_on_the_run_plots(tmp_path: Path):
    """Cycles 2-3 written as halted are one shaded band, named in the legend, on each of the
    three run plots; cycle ids and position counts are whole numbers; the equity curve names
    its losses -$..."""
    lines = b"".join(_metrics_line(n, -250.0 * n) for n in range(1, 5))
    halted = [msgspec.json.decode(line) for line in lines.splitlines()]
    for record in halted[1:3]:
        record.update(halted=True, halt_reason="invalidation_streak: 3 invalidated exits")
    (tmp_path / "metrics.jsonl").write_bytes(
        b"".join(msgspec.json.encode(record) + b"\n" for record in halted)
    )
    run = read_run(tmp_path)
    for figure in (cycles_figure(run), positions_figure(run), equity_figure(run)):
        figure.canvas.draw()
        legend = figure.get_axes()[0].get_legend()
        assert "halted: no position opened" in [t.get_text() for t in legend.get_texts()]
        for ax in figure.get_axes():
            bands = [patch for patch in ax.patches if patch.get_x() == 1.5]
            assert len(bands) == 1 and bands[0].get_width() == 2.0  # cycles 2 and 3
            assert all(float(tick).is_integer() for tick in ax.get_xticks())
    positions = positions_figure(run).get_axes()[0]
    assert all(float(tick).is_integer() for tick in positions.get_yticks())
    assert equity_figure(run).get_axes()[0].get_title() == \
        "Equity curve: realized P&L -$1,000.00 after 4 cycles"


def test_a_signal_stops_a_report_with_128_plus_its_number(tmp_path: Path):
    """SIGTERM while report reads its input (a metrics.jsonl of 1 TB, one line followed by a
    hole that reads as NUL bytes for as long as a stalled network file system would hold a
    read): exit 143, one line saying so, no plot directory."""
    run = tmp_path / "run"
    run.mkdir()
    with (run / "metrics.jsonl").open("wb") as metrics:
        metrics.write(_metrics_line(1, 0.0))
        metrics.truncate(1 << 40)
    process = start_alone(tmp_path, "report", "--out", "run", "--plots", "plots")
    try:
        deadline = time.monotonic() + 60
        while _bytes_read(process.pid) < 256 << 20:  # report is now reading the hole
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGTERM)
    finally:
        result = finish_alone(process)
    assert result.returncode == 143, result.stderr
    assert result.stderr.splitlines() == [
        "stopped by SIGTERM: the report was abandoned; no plot is left half-written"
    ]
    assert not (tmp_path / "plots").exists()


def _tick_labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]


def test_a_flat_equity_curve_has_ticks_that_read_apart(tmp_path: Path):
    """With no P&L at all, the equity and P&L axes are not five ticks reading "$0": the axes
    span a few dollars and every tick reads differently."""
    (tmp_path / "metrics.jsonl").write_bytes(b"".join(_metrics_line(n, 0.0) for n in range(1, 4)))
    (tmp_path / "positions.jsonl").write_bytes(b"")
    figure = equity_figure(read_run(tmp_path))
    figure.canvas.draw()
    for axes in figure.get_axes():
        labels = _tick_labels(axes.yaxis)
        assert len(labels) >= 3 and len(set(labels)) == len(labels), labels


def test_counts_on_the_cycles_plot_have_thousands_separators(tmp_path: Path):
    """80,000 markets a cycle read 80,000 on the axis, never 80000 or 8e4."""
    lines = b"".join(_metrics_line(n, 0.0) for n in range(1, 3))
    records = [msgspec.json.decode(line) for line in lines.splitlines()]
    for record in records:
        record.update(markets_total=80_000, markets_evaluated=80_000, throughput_per_s=21_768.0)
    (tmp_path / "metrics.jsonl").write_bytes(
        b"".join(msgspec.json.encode(record) + b"\n" for record in records))
    figure = cycles_figure(read_run(tmp_path))
    figure.canvas.draw()
    for axes in figure.get_axes():
        labels = _tick_labels(axes.yaxis)
        assert any("," in label for label in labels), labels
        assert all(len(label.replace(",", "")) < 4 or "," in label for label in labels), labels
        assert not axes.yaxis.get_offset_text().get_text()


def test_the_positions_plot_shows_opens_and_closes_apart(tmp_path: Path):
    """A cycle that closes four positions and opens four shows four up and four down (by exit
    reason), not a flat line."""
    (tmp_path / "metrics.jsonl").write_bytes(
        _metrics_line(1, 0.0, (4, 0, 4)) + _metrics_line(2, 40.0, (4, 4, 4)))
    opens = b"".join(_open_line(1, m) for m in "abcd") + b"".join(_open_line(2, m) for m in "efgh")
    closes = b"".join(_close_line(2, f"1-{m}", 10.0) for m in "abcd")
    (tmp_path / "positions.jsonl").write_bytes(opens + closes)
    run = read_run(tmp_path)
    assert closes_by_reason(run) == {"profit_target": [0, 4]}
    axes = positions_figure(run).get_axes()[0]
    heights = {container.get_label(): [bar.get_height() for bar in container]
               for container in axes.containers}
    assert heights == {"opened": [4, 4], "closed: profit_target": [0, -4]}
    assert axes.get_title() == "Positions opened and closed per cycle: 8 opened, 4 closed"
    assert not any(label.startswith(("-", "\u2212")) for label in _tick_labels(axes.yaxis))


def _graded(midpoint: float, price: float, yes: bool) -> Graded:
    return Graded(
        evaluation=Evaluation(
            market_id="m", category="other", price=price, belief_low=midpoint - 5,
            belief_high=midpoint + 5, confidence=50.0, side="NONE", edge=0.0,
            expected_edge=0.0, failed_check="confidence", reason="", signals_applied=0,
            signals_rejected=0,
        ),
        outcome="YES" if yes else "NO",
    )


def test_calibration_draws_each_buckets_interval_and_the_crowds_curve():
    """A bucket of 9 markets is drawn with a far wider 95% interval than one of 4,557, and the
    crowd's own calibration (its price as the forecast) is drawn beside the beliefs'."""
    graded = [_graded(15.0, 12.0, n < 2) for n in range(9)]
    graded += [_graded(55.0, 62.0, n % 5 < 3) for n in range(4557)]
    card = scorecard(graded, [], 10_000.0)
    small, big = card.calibration[1], card.calibration[5]
    assert (small.count, big.count) == (9, 4557)
    assert small.observed_high - small.observed_low > 10 * (big.observed_high - big.observed_low)
    assert [b.count for b in card.crowd_calibration if b.count] == [9, 4557]
    report = msgspec.structs.replace(
        _replay_report(), markets=4566, brier=card.brier, calibration=card.calibration,
        crowd_brier=card.crowd_brier, crowd_calibration=card.crowd_calibration)
    curve = calibration_figure(report).get_axes()[0]
    bars = {container.get_label(): container for container in curve.containers}
    beliefs = next(c for label, c in bars.items() if label.startswith("beliefs"))
    crowd = next(c for label, c in bars.items() if label.startswith("crowd (market price)"))
    spans = [segment[1][1] - segment[0][1] for segment in beliefs.lines[2][0].get_segments()]
    assert spans == pytest.approx([(small.observed_high - small.observed_low) * 100,
                                   (big.observed_high - big.observed_low) * 100])
    assert list(crowd.lines[0].get_xdata()) == pytest.approx([12.0, 62.0])
    assert "n=9" in [text.get_text() for text in curve.texts]


def _bytes_read(pid: int) -> int:
    """What process `pid` has read so far (`rchar` of /proc/PID/io), 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return 0
    return int(re.search(r"^rchar: (\d+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]


def test_a_ledger_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path):
    """positions.jsonl a FIFO nobody writes to: report refuses it at once (exit 2), naming
    the file, instead of waiting for a line forever."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(_metrics_line(1, 0.0))
    os.mkfifo(run / "positions.jsonl")
    result = run_alone(tmp_path, "report", "--out", "run", "--plots", "plots")
    assert result.returncode == 2, result.stderr
    assert f"{Path('run') / 'positions.jsonl'} is not a regular file" in result.stderr
