"""The JSON-lines ledger: cycles land whole, crashes are cut back, one writer per directory."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from pomabotd.cycle import Portfolio
from pomabotd.domain.models import CloseEvent, Position
from pomabotd.domain.portfolio import LedgerState
from pomabotd.errors import LedgerError
from pomabotd.output import (
    METRICS_FILE,
    POSITIONS_FILE,
    STATE_FILE,
    CycleMetrics,
    Ledger,
    LedgerSnapshot,
    output_dir_problem,
    read_ledger,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _open(cycle_id: int, n: int) -> Position:
    return Position(
        cycle_id=cycle_id,
        position_id=f"p{n}",
        market_id=f"m{n}",
        question=f"Question {n}?",
        category="politics",
        side="YES",
        entry_price=30.0,
        size_usd=125.5,
        risk_usd=125.5,
        edge=17.5,
        belief_low=47.5,
        belief_high=60.0,
        confidence=70.0,
        stop_price=28.5,
        target_price=33.0,
        opened_at=T0 + timedelta(minutes=cycle_id),
    )


def _close(cycle_id: int, n: int) -> CloseEvent:
    return CloseEvent(
        cycle_id=cycle_id,
        position_id=f"p{n}",
        market_id=f"m{n}",
        exit_price=33.0,
        exit_reason="profit_target",
        pnl_usd=12.55,
        closed_at=T0 + timedelta(minutes=cycle_id),
    )


#: What the cycles these tests write open, close and leave open, so that their metrics lines
#: add up with their positions lines: cycle 1 opens p1 and p2, cycle 2 closes p1, cycle 3
#: opens one more.
_COUNTS = {1: (2, 0, 2), 2: (0, 1, 1), 3: (1, 0, 2)}


def _metrics(cycle_id: int, counts: tuple[int, int, int] | None = None) -> CycleMetrics:
    selected, closed, open_positions = counts or _COUNTS.get(cycle_id, (0, 0, 0))
    return CycleMetrics(
        cycle_id=cycle_id,
        started_at=T0 + timedelta(minutes=cycle_id),
        finished_at=T0 + timedelta(minutes=cycle_id, seconds=2),
        markets_total=100,
        markets_evaluated=99,
        markets_failed=1,
        markets_rejected=0,
        retries=1,
        timeouts=0,
        worker_restarts=0,
        processing_time_ms=2000.0,
        throughput_per_s=49.5,
        avg_eval_us=120.0,
        rss_mb=80.5,
        cpu_percent=150.0,
        opportunities=3,
        selected=selected,
        closed=closed,
        open_positions=open_positions,
        portfolio_risk_pct=1.25,
        equity_usd=10000.0,
        realized_pnl_usd=0.0,
        success_rate=0.99,
    )


def _two_cycles(directory: Path) -> None:
    with Ledger(directory) as ledger:
        assert ledger.recover().last_cycle_id == 0
        ledger.append_cycle([_open(1, 1), _open(1, 2)], _metrics(1))
        ledger.append_cycle([_close(2, 1)], _metrics(2))


def test_two_cycles_are_recovered(tmp_path: Path) -> None:
    """Appended cycles read back as the same events, in order, with the last cycle id."""
    out = tmp_path / "a" / "b"
    _two_cycles(out)
    with Ledger(out) as ledger:
        snapshot = ledger.recover()
    assert snapshot.events == (_open(1, 1), _open(1, 2), _close(2, 1))
    assert snapshot.last_cycle_id == 2
    assert snapshot.last_metrics == _metrics(2)
    assert snapshot.truncated_bytes == 0
    assert snapshot.dropped_lines == 0
    assert snapshot.dropped_cycle_id is None


def test_lines_follow_the_spec_shape(tmp_path: Path) -> None:
    """Each line is one JSON object; open and close events carry their `event` tag."""
    _two_cycles(tmp_path)
    lines = (tmp_path / POSITIONS_FILE).read_bytes().splitlines()
    records = [msgspec.json.decode(line) for line in lines]
    assert [r["event"] for r in records] == ["open", "open", "close"]
    assert records[0]["size_usd"] == 125.5
    assert records[0]["opened_at"] == "2030-01-01T12:01:00Z"
    assert set(records[2]) == {
        "event",
        "cycle_id",
        "position_id",
        "market_id",
        "exit_price",
        "exit_reason",
        "pnl_usd",
        "closed_at",
    }
    metrics = [
        msgspec.json.decode(line)
        for line in (tmp_path / METRICS_FILE).read_bytes().split(b"\n")[:-1]
    ]
    assert [m["cycle_id"] for m in metrics] == [1, 2]


def test_empty_cycle_writes_only_metrics(tmp_path: Path) -> None:
    """A cycle with no events still commits, with its metrics line only."""
    with Ledger(tmp_path) as ledger:
        ledger.append_cycle([], _metrics(1))
    assert (tmp_path / POSITIONS_FILE).read_bytes() == b""
    with Ledger(tmp_path) as ledger:
        assert ledger.recover().last_cycle_id == 1


def test_torn_last_lines_are_cut_and_next_cycle_continues(tmp_path: Path) -> None:
    """A crash mid-write leaves a line without newline; recover cuts it and appends go on."""
    _two_cycles(tmp_path)
    positions = tmp_path / POSITIONS_FILE
    metrics = tmp_path / METRICS_FILE
    clean_positions = positions.read_bytes()
    with positions.open("ab") as f:
        f.write(b'{"event":"open","cycle_id":3,"posi')
    with metrics.open("ab") as f:
        f.write(b'{"cycle_id":3,"started')
    with Ledger(tmp_path) as ledger:
        snapshot = ledger.recover()
        assert snapshot.last_cycle_id == 2
        assert snapshot.truncated_bytes == len(b'{"event":"open","cycle_id":3,"posi') + len(
            b'{"cycle_id":3,"started'
        )
        assert positions.read_bytes() == clean_positions
        ledger.append_cycle([_open(3, 3)], _metrics(3))
    with Ledger(tmp_path) as ledger:
        again = ledger.recover()
    assert again.last_cycle_id == 3
    assert again.events[-1] == _open(3, 3)
    assert again.truncated_bytes == 0


def test_unfinished_cycle_is_dropped_and_not_repeated(tmp_path: Path) -> None:
    """Positions lines of a cycle without its metrics line are cut; the cycle id is reused."""
    _two_cycles(tmp_path)
    positions = tmp_path / POSITIONS_FILE
    clean_size = positions.stat().st_size
    encoder = msgspec.json.Encoder()
    with positions.open("ab") as f:
        f.write(encoder.encode(_open(3, 7)) + b"\n" + encoder.encode(_close(3, 2)) + b"\n")
        f.write(b'{"event":"close","cyc')  # torn after the unfinished cycle
    with Ledger(tmp_path) as ledger:
        snapshot = ledger.recover()
        assert snapshot.last_cycle_id == 2
        assert snapshot.dropped_lines == 2
        assert snapshot.dropped_cycle_id == 3
        assert snapshot.events == (_open(1, 1), _open(1, 2), _close(2, 1))
        assert positions.stat().st_size == clean_size
        assert snapshot.truncated_bytes > 0
        ledger.append_cycle([_open(3, 8)], _metrics(3))
    with Ledger(tmp_path) as ledger:
        final = ledger.recover()
    assert final.events == (_open(1, 1), _open(1, 2), _close(2, 1), _open(3, 8))
    assert final.last_cycle_id == 3


def test_append_recovers_first(tmp_path: Path) -> None:
    """Appending without an explicit recover still cuts an unfinished cycle first."""
    _two_cycles(tmp_path)
    with (tmp_path / POSITIONS_FILE).open("ab") as f:
        f.write(msgspec.json.encode(_open(3, 9)) + b"\n")
    with Ledger(tmp_path) as ledger:
        ledger.append_cycle([_open(3, 4)], _metrics(3))
    with Ledger(tmp_path) as ledger:
        events = ledger.recover().events
    assert [e.position_id for e in events if e.cycle_id == 3] == ["p4"]


def test_a_cycle_is_never_written_twice(tmp_path: Path) -> None:
    """A cycle id at or below the last written one is refused before anything is written."""
    _two_cycles(tmp_path)
    before = (tmp_path / POSITIONS_FILE).read_bytes()
    with Ledger(tmp_path) as ledger, pytest.raises(ValueError, match="cycle 2"):
        ledger.append_cycle([_open(2, 5)], _metrics(2))
    assert (tmp_path / POSITIONS_FILE).read_bytes() == before


def test_events_must_belong_to_the_cycle(tmp_path: Path) -> None:
    """An event stamped with another cycle id is refused, since recovery keys on cycle ids."""
    with Ledger(tmp_path) as ledger, pytest.raises(ValueError, match="cycle 5 in cycle 1"):
        ledger.append_cycle([_open(5, 1)], _metrics(1))
    assert (tmp_path / METRICS_FILE).read_bytes() == b""


@pytest.mark.parametrize(
    ("name", "line_number", "bad"),
    [
        (POSITIONS_FILE, 2, b"this is not json\n"),
        (POSITIONS_FILE, 2, b'{"event":"open","cycle_id":1}\n'),
        (METRICS_FILE, 1, b'{"cycle_id":"one"}\n'),
    ],
)
def test_corrupt_middle_line_is_a_ledger_error(
    tmp_path: Path, name: str, line_number: int, bad: bytes
) -> None:
    """A complete but invalid line is refused with its file and line; nothing is cut."""
    _two_cycles(tmp_path)
    path = tmp_path / name
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(line_number - 1, bad)
    path.write_bytes(b"".join(lines))
    with Ledger(tmp_path) as ledger, pytest.raises(LedgerError) as caught:
        ledger.recover()
    assert f"{path} line {line_number}:" in str(caught.value)
    assert path.read_bytes() == b"".join(lines)


def test_lines_after_an_unfinished_cycle_are_a_ledger_error(tmp_path: Path) -> None:
    """Finished-cycle lines after unfinished ones mean the file was mixed up: refuse."""
    _two_cycles(tmp_path)
    encoder = msgspec.json.Encoder()
    with (tmp_path / POSITIONS_FILE).open("ab") as f:
        f.write(encoder.encode(_open(3, 1)) + b"\n" + encoder.encode(_open(1, 9)) + b"\n")
    with Ledger(tmp_path) as ledger, pytest.raises(LedgerError, match="line 5"):
        ledger.recover()


def test_positions_ahead_of_a_rotated_metrics_file_are_refused_not_cut(tmp_path: Path) -> None:
    """Finished cycles are never cut because metrics.jsonl went missing: recovery refuses."""
    _two_cycles(tmp_path)
    (tmp_path / METRICS_FILE).rename(tmp_path / "metrics.jsonl.1")
    before = (tmp_path / POSITIONS_FILE).read_bytes()
    with Ledger(tmp_path) as ledger, pytest.raises(LedgerError) as caught:
        ledger.recover()
    assert "line 3" in str(caught.value) and "moved without state.json" in str(caught.value)
    assert (tmp_path / POSITIONS_FILE).read_bytes() == before


def test_recover_returns_a_snapshot_on_empty_directory(tmp_path: Path) -> None:
    """A fresh directory recovers to nothing, with cycle id 0."""
    with Ledger(tmp_path / "fresh") as ledger:
        snapshot = ledger.recover()
    assert snapshot == LedgerSnapshot(events=(), last_cycle_id=0, last_metrics=None)


_HOLDER = """
import sys
from pathlib import Path
from pomabotd.output import Ledger
ledger = Ledger(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.readline()
"""


def test_second_process_is_refused_by_the_lock(tmp_path: Path) -> None:
    """While another process holds the directory, a second Ledger fails naming its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(LedgerError) as caught:
            Ledger(tmp_path)
        assert str(caught.value) == f"another pomabotd is writing to {tmp_path} (pid {holder.pid})"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    with Ledger(tmp_path) as ledger:
        assert ledger.recover().last_cycle_id == 0


def test_close_releases_the_lock(tmp_path: Path) -> None:
    """After close() the directory can be opened again; a closed ledger refuses work."""
    ledger = Ledger(tmp_path)
    with pytest.raises(LedgerError, match="another pomabotd"):
        Ledger(tmp_path)
    ledger.close()
    ledger.close()
    with pytest.raises(ValueError, match="closed"):
        ledger.recover()
    with Ledger(tmp_path) as again:
        assert again.recover().last_cycle_id == 0
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


def test_output_path_that_is_a_file_is_a_ledger_error(tmp_path: Path) -> None:
    """An output directory that cannot be created is reported, naming it."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError, match="cannot create"):
        Ledger(blocker / "out")


_FILL_UP = """
import resource, signal, sys
from pathlib import Path
from pomabotd.errors import LedgerError
from pomabotd.output import Ledger
from tests.test_output import _metrics, _open

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
with Ledger(Path(sys.argv[1])) as ledger:
    try:
        ledger.append_cycle([_open(3, n) for n in range(50)], _metrics(3))
    except LedgerError as exc:
        print(exc)
"""


def test_failed_write_is_rolled_back(tmp_path: Path) -> None:
    """A write the OS cuts short (file size limit) leaves both files as they were."""
    _two_cycles(tmp_path)
    positions = (tmp_path / POSITIONS_FILE).read_bytes()
    metrics = (tmp_path / METRICS_FILE).read_bytes()
    limit = max(len(positions), len(metrics)) + 1000
    done = subprocess.run(
        [sys.executable, "-c", _FILL_UP, str(tmp_path), str(limit)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=60,
        check=True,
    )
    assert done.stdout.startswith(f"cannot write {tmp_path / POSITIONS_FILE}:")
    assert (tmp_path / POSITIONS_FILE).read_bytes() == positions
    assert (tmp_path / METRICS_FILE).read_bytes() == metrics


def test_rotated_files_continue_from_state_json(tmp_path: Path) -> None:
    """With state.json saved after each cycle, both files may be renamed away and reopened:
    the next cycle lands in fresh files, and a restart keeps the open positions and the
    cycle numbering."""
    with Ledger(tmp_path) as ledger:
        ledger.recover()
        ledger.append_cycle([_open(1, 1), _open(1, 2)], _metrics(1))
        ledger.save_state(LedgerState((_open(1, 1), _open(1, 2)), 0.0, 1))
        ledger.append_cycle([_close(2, 1)], _metrics(2))
        ledger.save_state(LedgerState((_open(1, 2),), 12.55, 2))
        for name in (POSITIONS_FILE, METRICS_FILE):
            (tmp_path / name).rename(tmp_path / f"{name}.1")
        ledger.reopen()
        ledger.append_cycle([_open(3, 3)], _metrics(3))
    lines = (tmp_path / METRICS_FILE).read_bytes().splitlines()
    assert [msgspec.json.decode(line)["cycle_id"] for line in lines] == [3]
    with Ledger(tmp_path) as ledger:
        portfolio = Portfolio.recover(ledger)
    assert portfolio.last_cycle_id == 3
    assert [p.market_id for p in portfolio.open_positions] == ["m2", "m3"]
    assert portfolio.realized_pnl_usd == 12.55


def test_read_ledger_changes_nothing(tmp_path: Path) -> None:
    """Reading an output directory read-only skips a torn line and an unfinished cycle
    without cutting them, and a missing directory reads as empty without being created."""
    _two_cycles(tmp_path)
    with (tmp_path / POSITIONS_FILE).open("ab") as f:
        f.write(msgspec.json.encode(_open(3, 7)) + b"\n" + b'{"event": "op')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    snapshot = read_ledger(tmp_path)
    assert snapshot.last_cycle_id == 2 and all(e.cycle_id <= 2 for e in snapshot.events)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert read_ledger(tmp_path / "absent").last_cycle_id == 0
    assert not (tmp_path / "absent").exists() and not (tmp_path / STATE_FILE).exists()


def test_read_ledger_history_keeps_every_finished_cycle(tmp_path: Path) -> None:
    """With `history`, every finished cycle's metrics and positions lines come back in file
    order, those state.json already counts included; without it, only what recovery needs."""
    with Ledger(tmp_path) as ledger:
        ledger.recover()
        ledger.append_cycle([_open(1, 1), _open(1, 2)], _metrics(1))
        ledger.save_state(LedgerState(open_positions=(_open(1, 1), _open(1, 2)),
                                      realized_pnl_usd=0.0, last_cycle_id=1))
        ledger.append_cycle([_close(2, 1)], _metrics(2))
    with (tmp_path / POSITIONS_FILE).open("ab") as f:
        f.write(msgspec.json.encode(_open(3, 7)) + b"\n")
    full = read_ledger(tmp_path, history=True)
    assert full.cycles == (_metrics(1), _metrics(2))
    assert full.history == (_open(1, 1), _open(1, 2), _close(2, 1))
    assert full.events == (_close(2, 1),)
    lean = read_ledger(tmp_path)
    assert (lean.cycles, lean.history, lean.events) == ((), (), (_close(2, 1),))


def test_output_dir_problem_names_a_file_in_the_way(tmp_path: Path) -> None:
    """A file, or a file above the path, cannot become an output directory."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert output_dir_problem(tmp_path / "new" / "dir") is None
    assert output_dir_problem(afile) == "is not a directory"
    assert "is not a directory" in (output_dir_problem(afile / "sub") or "")


def test_output_dir_problem_probes_where_the_directory_would_be(tmp_path: Path) -> None:
    """A directory that cannot be created there (/proc) is named, and the probe leaves
    nothing behind where it can."""
    assert output_dir_problem(Path("/proc/pomabotd-test")) == (
        "cannot be created in '/proc': No such file or directory")
    assert output_dir_problem(tmp_path / "a" / "b") is None
    assert list(tmp_path.iterdir()) == []
