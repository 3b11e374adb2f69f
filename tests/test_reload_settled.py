"""A reload applies only a configuration file that stood still while it was read.

A real daemon is sent SIGHUP after SIGHUP while a writer rewrites its TOML file (or its env
file) in place, block by block, the way an editor or `cat > file` does: each rewrite passes
through truncated states that are valid files with keys missing, whose defaults would then
apply (and a change under [risk] lifts a halt). No reload may apply such a state.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from daemon_process import DaemonProcess, wait_for

from pomabotd.config import load
from pomabotd.errors import ConfigError

#: How long the writer rewrites the file while SIGHUPs arrive.
_ATTACK_S = 2.5

_TOML_KEYS = {
    "risk.kelly_fraction": 0.3,
    "risk.max_position_percent": 4.0,
    "risk.min_position_usd": 2.0,
    "halt.coverage_tolerance": 21.0,
    "halt.min_resolved": 30,
    "halt.high_confidence": 85.0,
    "halt.min_per_bucket": 12,
    "halt.invalidation_streak": 5,
}
_ENV_KEYS = {
    "BATCH_MAX_PORTFOLIO_RISK": ("risk.max_portfolio_risk", 18.0),
    "BATCH_MAX_POSITIONS_PER_CATEGORY": ("risk.max_positions_per_category", 3),
    "BATCH_STOP_LOSS_PERCENT": ("risk.stop_loss_percent", 6.0),
    "BATCH_PROFIT_TARGET_PERCENT": ("risk.profit_target_percent", 12.0),
    "BATCH_TIMEOUT_MS": ("batch.timeout_ms", 4000),
    "BATCH_RETRY_ATTEMPTS": ("batch.retry_attempts", 1),
}
#: The one key the writer alternates: 16 and 17.
_ALTERNATING = "risk.min_edge"


#: What both files keep the daemon at: small in-process cycles every 0.3 s, and every log line
#: written (the test counts each reload's own line).
_SETTINGS = ("[batch]\nworkers = 0\n[sources]\nsynthetic_markets = 50\n[log]\n"
             "repeat_window_s = 0\n[daemon]\ninterval_s = 0.3\n")


def _toml_blocks(edge: int) -> list[str]:
    """The TOML file in four blocks of whole lines: every prefix is a valid file."""
    padding = "".join(f"# line {n} of an operator's notes\n" for n in range(12))
    return [
        f"[risk]\nmin_edge = {edge}.0\n" + padding,
        "kelly_fraction = 0.3\nmax_position_percent = 4.0\nmin_position_usd = 2.0\n" + padding,
        _SETTINGS + "[halt]\ncoverage_tolerance = 21.0\nmin_resolved = 30\n"
        "high_confidence = 85.0\n" + padding,
        "min_per_bucket = 12\ninvalidation_streak = 5\n" + padding,
    ]


def _env_blocks(edge: int) -> list[str]:
    """The env file in three blocks of whole lines."""
    lines = [f"BATCH_MIN_EDGE={edge}"] + [
        f"{var}={value}" for var, (_, value) in _ENV_KEYS.items()
    ]
    return ["\n".join(lines[:2]) + "\n", "\n".join(lines[2:5]) + "\n",
            "\n".join(lines[5:]) + "\n"]


class InPlaceWriter(threading.Thread):
    """Rewrites a file in place in a loop, block by block, alternating two contents."""

    def __init__(self, path: Path, blocks: dict[int, list[str]]) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.blocks = blocks
        self.halt = threading.Event()
        self.rewrites = 0

    def run(self) -> None:
        edges = list(self.blocks)
        while not self.halt.is_set():
            blocks = self.blocks[edges[self.rewrites % 2]]
            fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC)
            try:
                for block in blocks:
                    os.write(fd, block.encode())
                    time.sleep(0.002)
            finally:
                os.close(fd)
            self.rewrites += 1
            time.sleep(0.004)


#: Its writer must not stall 50 ms mid-rewrite: not beside a test that takes a core.
@pytest.mark.xdist_group("timing")
@pytest.mark.parametrize("target", ["toml", "env"])
def test_no_reload_applies_a_file_caught_mid_rewrite(target: str, tmp_path: Path) -> None:
    """SIGHUPs while the TOML (or env) file is rewritten in place: no reload applies a partial
    file (no key but the alternating one ever changes); those that caught it changing fail
    naming the file and saying to replace it atomically, the old configuration stays; once
    the writer stops, a reload applies the whole file."""
    config = tmp_path / "pomabotd.toml"
    env_file = tmp_path / "env"
    if target == "toml":
        blocks = {16: _toml_blocks(16), 17: _toml_blocks(17)}
        path = config
        expected: dict[str, object] = {**_TOML_KEYS}
    else:
        blocks = {16: _env_blocks(16), 17: _env_blocks(17)}
        path = env_file
        expected = {key: value for key, value in _ENV_KEYS.values()}
        config.write_text(_SETTINGS + f'env_file = "{env_file}"\n')
    path.write_text("".join(blocks[16]))
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--out", "out")
    writer = InPlaceWriter(path, blocks)
    try:
        daemon.wait_log(event="cycle", cycle_id=1)
        shown = daemon.get("/api/batch/config").json()
        assert {key: shown[key]["value"] for key in expected} == expected
        writer.start()
        deadline = time.monotonic() + _ATTACK_S
        while time.monotonic() < deadline:
            daemon.signal(signal.SIGHUP)
            time.sleep(0.03)
        writer.halt.set()
        writer.join(timeout=10)
        path.write_text("".join(blocks[17]))
        seen = len([line for line in daemon.logs() if line.get("event") == "reload"])
        daemon.signal(signal.SIGHUP)
        wait_for("the reload after the writer stopped", lambda: len(
            [line for line in daemon.logs() if line.get("event") == "reload"]) > seen)

        reloads = [line for line in daemon.logs() if line.get("event") == "reload"]
        failed = [line for line in daemon.logs() if line.get("event") == "reload_failed"]
        partial = [line["changed"] for line in reloads
                   if set(line["changed"]) - {_ALTERNATING}]
        assert partial == [], f"{len(partial)} of {len(reloads)} reloads applied a partial file"
        assert writer.rewrites > 50
        assert failed, "no reload caught the file changing"
        assert all(str(path) in line["message"] and "rename it over the old one" in
                   line["message"] for line in failed), failed[0]["message"]
        shown = daemon.get("/api/batch/config").json()
        assert {key: shown[key]["value"] for key in expected} == expected
        assert shown[_ALTERNATING]["value"] == 17.0
        assert daemon.get("/healthz").json()["reloads_failed"] == len(failed)
        daemon.remember_descendants()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        assert daemon.leftovers() == []
    finally:
        writer.halt.set()
        daemon.finish()


@pytest.mark.parametrize("target", ["toml", "env"])
def test_a_file_gone_between_the_two_reads_is_refused_not_read_as_missing(
    target: str, tmp_path: Path
) -> None:
    """A file there at the first read and gone at the second (an editor that deletes before
    it writes) changed while it was read: refused saying so, never applied as a missing env
    file (without its settings) or reported as a file that was never there."""
    config = tmp_path / "pomabotd.toml"
    env_file = tmp_path / "env"
    config.write_text("[risk]\nmin_edge = 16.0\n")
    env_file.write_text("BATCH_MIN_EDGE=17\n")
    path = config if target == "toml" else env_file
    settle_s = 1.0
    remover = threading.Timer(settle_s / 2, path.unlink)  # read first at once, then after 1 s
    remover.start()
    try:
        with pytest.raises(ConfigError) as refused:
            if target == "toml":
                load(config, {}, {}, settle_s=settle_s)
            else:
                load(None, {}, {"daemon.env_file": str(env_file)}, settle_s=settle_s)
    finally:
        remover.cancel()
    assert f"{path}" in str(refused.value)
    assert "changed while it was read" in str(refused.value)
