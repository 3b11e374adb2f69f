"""The status page's history: the last cycles' metrics read back from the end of a real
ledger's `metrics.jsonl`, so a restarted daemon shows the cycles it ran before."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import RunCli

from pomabotd.output import METRICS_FILE, read_recent_cycles


def test_the_last_cycles_are_read_from_the_end_of_the_metrics(run_cli: RunCli,
                                                               tmp_path: Path) -> None:
    """Of 300 cycles' lines (past one read block) and a torn last line, the last 50 come
    back oldest first, the torn line left out; an empty directory gives none."""
    result = run_cli("run-once", "--out", "out", env={"BATCH_WORKERS": "0"})
    assert result.returncode == 0, result.stderr
    path = tmp_path / "out" / METRICS_FILE
    line = json.loads(path.read_text().splitlines()[0])
    lines = [json.dumps({**line, "cycle_id": n}) for n in range(1, 301)]
    assert len("\n".join(lines)) > 64 * 1024
    path.write_text("\n".join(lines) + "\n" + lines[0][:40])
    recent = read_recent_cycles(path.parent, 50)
    assert [m.cycle_id for m in recent] == list(range(251, 301))
    assert read_recent_cycles(tmp_path, 50) == ()
