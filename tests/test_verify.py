"""A ledger whose history does not add up is refused, naming the file and line, before
anything is written: when `run-once` or `run` opens it, on reload, and by `pomabotd verify`."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from conftest import RunCli
from daemon_process import DaemonProcess, wait_for

from pomabotd.cycle import LedgerOnDemand
from pomabotd.domain.models import CloseEvent, Position
from pomabotd.domain.portfolio import LedgerState
from pomabotd.errors import LedgerHistoryError
from pomabotd.history import METRICS_KEYS, LineReader
from pomabotd.output import (
    METRICS_FILE,
    POSITIONS_FILE,
    STATE_FILE,
    CycleMetrics,
    Ledger,
    read_ledger,
    verify_ledger,
)

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
#: Cycles `_history` writes: each closes the two positions the last one opened and opens two.
CYCLES = 6


def _open(cycle: int, n: int) -> Position:
    return Position(
        cycle_id=cycle, position_id=f"{cycle}-m{n}", market_id=f"m{n}", question="?",
        category="crypto", side="YES", entry_price=20.0, size_usd=100.0, risk_usd=100.0,
        edge=30.0, belief_low=50.0, belief_high=60.0, confidence=70.0, stop_price=19.0,
        target_price=22.0, opened_at=T0 + timedelta(hours=cycle),
    )


def _close(cycle: int, opened: Position) -> CloseEvent:
    return CloseEvent(
        cycle_id=cycle, position_id=opened.position_id, market_id=opened.market_id,
        exit_price=22.0, exit_reason="profit_target", pnl_usd=10.0,
        closed_at=T0 + timedelta(hours=cycle),
    )


def _metrics(cycle: int, selected: int, closed: int, open_positions: int) -> CycleMetrics:
    return CycleMetrics(
        cycle_id=cycle, started_at=T0 + timedelta(hours=cycle),
        finished_at=T0 + timedelta(hours=cycle, seconds=1), markets_total=10,
        markets_evaluated=10, markets_failed=0, markets_rejected=0, retries=0, timeouts=0,
        worker_restarts=0, processing_time_ms=1000.0, throughput_per_s=10.0, avg_eval_us=5.0,
        rss_mb=50.0, cpu_percent=10.0, opportunities=2, selected=selected, closed=closed,
        open_positions=open_positions, portfolio_risk_pct=2.0, equity_usd=10000.0,
        realized_pnl_usd=0.0, success_rate=1.0,
    )


def _history(directory: Path, cycles: int = CYCLES, *, first: int = 1) -> None:
    """A sound ledger written as pomabotd writes one, with state.json after each cycle."""
    with Ledger(directory) as ledger:
        ledger.recover()
        held = [] if first == 1 else [_open(first - 1, 2 * first - 2),
                                      _open(first - 1, 2 * first - 1)]
        for cycle in range(first, first + cycles):
            closes = [_close(cycle, position) for position in held]
            held = [_open(cycle, 2 * cycle), _open(cycle, 2 * cycle + 1)]
            ledger.append_cycle([*closes, *held], _metrics(cycle, 2, len(closes), 2))
            ledger.save_state(LedgerState(tuple(held), 10.0 * len(closes), cycle))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _edit(path: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    path.write_bytes(b"".join(change(_lines(path))))


def _close_of_a_later_position(lines: list[bytes]) -> list[bytes]:
    """Line 3 (cycle 2's first close) closes position 5-m10 instead, opened three cycles on."""
    record = msgspec.json.decode(lines[2])
    record.update(position_id="5-m10", market_id="m10")
    return [*lines[:2], msgspec.json.encode(record) + b"\n", *lines[3:]]


#: Damage done to a sound ledger: the file, the edit, and what the refusal must name.
ATTACKS = {
    "position line duplicated": (POSITIONS_FILE, lambda ls: [*ls[:6], ls[5], *ls[6:]],
                                 "line 7: position 2-m5 is opened again (it was opened at line 6)"),
    "position line deleted": (METRICS_FILE, lambda ls: ls,
                              "line 3: cycle 3 records 2 positions opened and 2 closed, but "),
    "line of NUL bytes": (POSITIONS_FILE, lambda ls: [*ls[:4], b"\0" * (len(ls[4]) - 1) + b"\n",
                                                      *ls[5:]], "line 5: JSON is malformed"),
    "closed before it opened": (POSITIONS_FILE, _close_of_a_later_position,
                                "line 17: position 5-m10 opens after it was closed at line 3"),
    "lines out of order": (POSITIONS_FILE, lambda ls: [*ls[:2], ls[6], *ls[2:6], *ls[7:]],
                           "line 4: a line of cycle 2 after lines of cycle 3"),
    "metrics line deleted": (METRICS_FILE, lambda ls: [*ls[:2], *ls[3:]],
                             "line 3: cycle 4 follows cycle 2 (line 2): the metrics line of "
                             "cycle 3 is missing"),
    "metrics line duplicated": (METRICS_FILE, lambda ls: [*ls[:3], ls[2], *ls[3:]],
                                "line 4: cycle_id 3 does not follow 3"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_damaged_history_is_refused_naming_file_and_line(attack: str, tmp_path: Path) -> None:
    """Each kind of damage is refused by the read-only check and by opening the ledger,
    naming the file and line, and opening it cuts and writes nothing."""
    _history(tmp_path)
    verify_ledger(tmp_path)  # sound before
    name, change, expected = ATTACKS[attack]
    _edit(tmp_path / name, change)
    if attack == "position line deleted":
        _edit(tmp_path / POSITIONS_FILE, lambda ls: [*ls[:6], *ls[7:]])
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(LedgerHistoryError) as refused:
        verify_ledger(tmp_path)
    assert f"{tmp_path / name} {expected}" in str(refused.value), str(refused.value)
    assert "Repairing a ledger" in str(refused.value)
    with pytest.raises(LedgerHistoryError), Ledger(tmp_path) as ledger:
        ledger.recover()
    with pytest.raises(LedgerHistoryError):
        read_ledger(tmp_path)
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"}


def test_rotated_files_are_sound(tmp_path: Path) -> None:
    """Files renamed away after cycle 3 (both, or positions.jsonl alone) leave a sound ledger:
    the closes of positions opened before the files are allowed, as many as were open."""
    _history(tmp_path, 3)
    for name in (POSITIONS_FILE, METRICS_FILE):
        (tmp_path / name).rename(tmp_path / f"{name}.1")
    _history(tmp_path, 3, first=4)
    verdict = verify_ledger(tmp_path)
    assert (verdict.cycles, verdict.first_cycle_id, verdict.last_cycle_id) == (3, 4, 6)
    (tmp_path / f"{METRICS_FILE}.1").rename(tmp_path / "old")
    metrics = (tmp_path / "old").read_bytes() + (tmp_path / METRICS_FILE).read_bytes()
    (tmp_path / METRICS_FILE).write_bytes(metrics)  # metrics.jsonl not rotated: apart
    assert verify_ledger(tmp_path).cycles == 6


def test_a_close_of_a_position_never_open_is_refused(tmp_path: Path) -> None:
    """A close of a position no line opened, in files that begin at cycle 1 (so that no
    position can have opened before them), is refused naming its line."""
    _history(tmp_path, 3)
    _edit(tmp_path / POSITIONS_FILE, lambda ls: [
        *ls[:2], msgspec.json.encode(_close(2, _open(1, 99))) + b"\n", *ls[3:]])
    with pytest.raises(LedgerHistoryError, match="line 3: position 1-m99 closes but was never "
                                                 "opened"):
        verify_ledger(tmp_path)


def test_state_json_ahead_of_the_files_is_refused(tmp_path: Path) -> None:
    """state.json after cycle 6 with metrics.jsonl cut back to cycle 4 (an older copy)."""
    _history(tmp_path)
    _edit(tmp_path / METRICS_FILE, lambda ls: ls[:4])
    _edit(tmp_path / POSITIONS_FILE, lambda ls: ls[:14])
    with pytest.raises(LedgerHistoryError, match=f"{tmp_path / STATE_FILE} is at cycle 6"):
        verify_ledger(tmp_path)


def test_pomabotd_verify_says_sound_or_refused(tmp_path: Path, run_cli: RunCli) -> None:
    """`pomabotd verify --out DIR`: exit 0 with the counts on a sound ledger (and what the
    next run will cut of an interrupted cycle); exit 2 naming file and line when damaged."""
    _history(tmp_path / "out")
    with (tmp_path / "out" / POSITIONS_FILE).open("ab") as file:
        file.write(msgspec.json.encode(_open(7, 99)) + b"\n")
    result = run_cli("verify", "--out", "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"out is sound: {CYCLES} metrics lines (cycles 1-6), 22 "
                                    "positions lines, 2 positions open after cycle 6")
    assert result.stdout.splitlines()[1] == (
        "  the next run or run-once will cut what an interrupted cycle left: 1 line of "
        "unfinished cycle 7")
    _edit(tmp_path / "out" / POSITIONS_FILE, ATTACKS["position line duplicated"][1])
    result = run_cli("verify", "--out", "out")
    assert result.returncode == 2
    assert f"{Path('out') / POSITIONS_FILE} line 7: position 2-m5 is opened again" in result.stderr
    assert "Traceback" not in result.stderr
    assert run_cli("verify", "--out", "absent").returncode == 2


def test_verify_counts_in_words_that_fit(tmp_path: Path, run_cli: RunCli) -> None:
    """One of everything reads in the singular (`1 metrics line (cycle 1), 1 positions line,
    1 position open`, `1 byte of a torn last line`), and a directory without a finished
    cycle says so rather than counting zeros after a cycle 0."""
    (tmp_path / "empty").mkdir()
    result = run_cli("verify", "--out", "empty")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("empty is sound: no finished cycle yet; checked in ")
    with Ledger(tmp_path / "one") as ledger:
        ledger.recover()
        ledger.append_cycle([_open(1, 1)], _metrics(1, 1, 0, 1))
        ledger.save_state(LedgerState((_open(1, 1),), 0.0, 1))
    with (tmp_path / "one" / METRICS_FILE).open("ab") as file:
        file.write(b"{")
    result = run_cli("verify", "--out", "one")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("one is sound: 1 metrics line (cycle 1), 1 positions line, "
                                    "1 position open after cycle 1; checked in ")
    assert result.stdout.splitlines()[1] == (
        "  the next run or run-once will cut what an interrupted cycle left: 1 byte of a torn "
        "last line")


def test_run_once_refuses_a_damaged_ledger_with_exit_2(tmp_path: Path, run_cli: RunCli) -> None:
    """`run-once` on a ledger with a line of NUL bytes exits 2 naming file and line, and
    writes nothing (no cycle run, no file changed)."""
    _history(tmp_path / "out")
    _edit(tmp_path / "out" / POSITIONS_FILE, ATTACKS["line of NUL bytes"][1])
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    result = run_cli("run-once", "--out", "out", "--markets", "synthetic")
    assert result.returncode == 2, result.stderr
    assert f"{Path('out') / POSITIONS_FILE} line 5: JSON is malformed" in result.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_a_daemon_refuses_a_damaged_ledger_at_start_and_on_reload(tmp_path: Path) -> None:
    """`run` on a ledger with a line of NUL bytes exits 2 (systemd does not restart it),
    naming file and line, files unchanged; a running daemon whose positions.jsonl gets a
    duplicated line refuses the next reload naming it, and keeps running."""
    out = tmp_path / "out"
    _history(out)
    _edit(out / POSITIONS_FILE, ATTACKS["line of NUL bytes"][1])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"}
    refused = DaemonProcess(tmp_path, "--out", "out", "--markets", "synthetic")
    try:
        assert refused.wait_exit(timeout=60) == 2
        assert f"{out.name}/{POSITIONS_FILE} line 5: JSON is malformed" in \
            refused.log_path.read_text()
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"} == before
    finally:
        refused.finish()

    fresh = tmp_path / "fresh"
    config = tmp_path / "pomabotd.toml"
    config.write_text("[batch]\nworkers = 0\n[sources]\nsynthetic_markets = 50\n"
                      "[daemon]\ninterval_s = 3600\n")
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--out", "fresh")
    try:
        daemon.wait_log(event="cycle", cycle_id=1)
        lines = _lines(fresh / POSITIONS_FILE)
        assert lines, "the first cycle opened no position"
        (fresh / POSITIONS_FILE).write_bytes(b"".join([lines[0], *lines]))
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_log(event="reload_failed")
        assert f"{POSITIONS_FILE} line 2: position" in failed["message"]
        assert "is opened again" in failed["message"]
        assert daemon.process.poll() is None
        daemon.remember_descendants()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        assert daemon.leftovers() == []
    finally:
        daemon.finish()


def _checks(stderr: str) -> list[dict[str, object]]:
    """The `ledger_checked` log lines of a command's JSON log."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{") and '"ledger_checked"' in line:
            found.append(msgspec.json.decode(line))
    return found


def test_run_once_checks_the_history_once(tmp_path: Path, run_cli: RunCli) -> None:
    """`run-once` on a ledger of six cycles checks its history once (when it reads the
    portfolio), not a second time when it locks the directory to append: the files are the
    ones it read."""
    _history(tmp_path / "out")
    (tmp_path / "c.toml").write_text('[log]\nlevel = "DEBUG"\nformat = "json"\n'
                                     "[batch]\nworkers = 0\n[sources]\nsynthetic_markets = 40\n")
    result = run_cli("run-once", "--config", "c.toml", "--out", "out")
    assert result.returncode == 0, result.stderr
    checks = _checks(result.stderr)
    assert len(checks) == 1, checks
    assert (checks[0]["metrics_lines"], checks[0]["positions_lines"]) == (CYCLES, 22)
    assert read_ledger(tmp_path / "out").last_cycle_id == CYCLES + 1


def test_damage_done_between_the_read_and_the_lock_is_refused(tmp_path: Path) -> None:
    """A ledger read (and found sound) without its lock, then damaged before `run-once`
    locks it to append: the files are no longer the ones read, so the check runs again and
    refuses them, naming the line."""
    _history(tmp_path)
    with LedgerOnDemand(tmp_path) as ledger:
        portfolio = ledger.portfolio()
        _edit(tmp_path / POSITIONS_FILE, ATTACKS["position line duplicated"][1])
        with pytest.raises(LedgerHistoryError, match="line 7: position 2-m5 is opened again"):
            ledger.open_for(portfolio)


def test_a_ledger_read_in_blocks_reads_as_it_does_whole(tmp_path: Path) -> None:
    """Blocks of any size (smaller than a line too) give the same records with the same line
    numbers, blank lines skipped, a torn last line left out and counted, and nothing a writer
    appends after the file was opened."""
    lines = [msgspec.json.encode(_metrics(n, 0, 0, 0)) + b"\n" for n in range(1, 8)]
    lines[3:3] = [b"\n", b"   \n"]
    path = tmp_path / METRICS_FILE
    path.write_bytes(b"".join(lines) + b'{"cycle_id": 8, "sel')
    expected = [(number, record.cycle_id) for number, record in
                zip([1, 2, 3, 6, 7, 8, 9], range(1, 8), strict=True) for record in
                [_metrics(record, 0, 0, 0)]]
    for block_bytes in (16, 100, 1000, 1 << 20):
        with LineReader(path) as reader:
            with path.open("ab") as file:
                file.write(b'ected": 0}\n')  # after the open: not read
            found = [(int(number), record.cycle_id) for block in reader.blocks(
                METRICS_KEYS, block_bytes) for number, record in zip(
                    block.numbers, block.records, strict=True)]
        assert found == expected, block_bytes
        assert (reader.whole, reader.torn) == (sum(map(len, lines)), 20)
        path.write_bytes(b"".join(lines) + b'{"cycle_id": 8, "sel')


def test_a_line_too_long_to_be_ours_is_refused_and_a_long_torn_end_cut(tmp_path: Path) -> None:
    """Bytes without a newline past 64 MB are read through without being kept: at the end of
    the file (the NUL bytes a crash can leave) they are a torn last line, which recovery cuts;
    followed by a newline they are a line no pomabotd wrote, refused naming it."""
    _history(tmp_path, 2)
    metrics = tmp_path / METRICS_FILE
    size = metrics.stat().st_size
    with metrics.open("r+b") as file:
        file.truncate(size + (65 << 20))  # a hole: reads as NUL bytes
    verdict = verify_ledger(tmp_path)
    assert (verdict.cycles, verdict.torn_bytes) == (2, 65 << 20)
    with Ledger(tmp_path) as ledger:
        assert ledger.recover().truncated_bytes == 65 << 20
    assert metrics.stat().st_size == size
    with metrics.open("r+b") as file:
        file.truncate(size + (65 << 20))
        file.seek(0, os.SEEK_END)
        file.write(b"\n")
    with pytest.raises(LedgerHistoryError, match=r"metrics.jsonl line 3: longer than 64 MB"):
        verify_ledger(tmp_path)


def test_a_daemon_writes_nothing_into_a_ledger_a_reload_found_broken_until_repaired(
    tmp_path: Path,
) -> None:
    """A daemon cycling every 0.3 s whose metrics.jsonl gets its first line overwritten with
    NUL bytes: the next reload is refused and no cycle runs into the ledger any more (its
    files stand still for five intervals), /healthz answers 503 naming the file and line,
    `pomabotd verify` and the repair docs; with the line put back, a reload finds it sound
    and the cycles resume (200 again)."""
    config = tmp_path / "pomabotd.toml"
    config.write_text("[batch]\nworkers = 0\n[sources]\nsynthetic_markets = 50\n"
                      "[daemon]\ninterval_s = 0.3\n")
    out = tmp_path / "out"
    metrics, positions = out / METRICS_FILE, out / POSITIONS_FILE
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--out", "out")
    try:
        daemon.wait_log(event="cycle", cycle_id=2)
        first = metrics.read_bytes().split(b"\n", 1)[0]
        with metrics.open("r+b") as file:  # in place: the daemon's appends go on meanwhile
            file.write(b"\0" * len(first))
        daemon.signal(signal.SIGHUP)
        broken = daemon.wait_log(event="ledger_broken")
        assert f"{Path('out') / METRICS_FILE} line 1: JSON is malformed" in broken["message"]
        daemon.wait_log(event="reload_failed")
        health = daemon.get("/healthz")
        assert health.status_code == 503
        body = health.json()
        assert body["output_broken"] is True
        for words in (f"{Path('out') / METRICS_FILE} line 1", "`pomabotd verify --out out`",
                      "Repairing a ledger", "reload (SIGHUP)"):
            assert words in body["reason"], body["reason"]
        stood = (metrics.read_bytes(), positions.read_bytes(), body["cycles_ok"])
        time.sleep(1.5)
        assert (metrics.read_bytes(), positions.read_bytes(),
                daemon.get("/healthz").json()["cycles_ok"]) == stood

        with metrics.open("r+b") as file:
            file.write(first)
        daemon.signal(signal.SIGHUP)
        daemon.wait_log(event="ledger_sound")
        wait_for("a cycle after the repair",
                 lambda: metrics.read_bytes().count(b"\n") > stood[0].count(b"\n"))
        wait_for("healthy again", lambda: daemon.get("/healthz").status_code == 200)
        daemon.remember_descendants()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        assert daemon.leftovers() == []
        assert verify_ledger(out).cycles > len(stood[0].splitlines())
    finally:
        daemon.finish()
