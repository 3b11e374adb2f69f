"""The service install as an operator gets it: one configuration file, a system user whose group
reads the outputs, docs where the unit points, and rotation that never deletes research data.

`systemd/install.sh --files-only` installs into a scratch root (`DESTDIR`), `systemd-sysusers
--root` creates the user there, logrotate rotates the files of a real daemon, and the outputs
of a real cycle are read by another user of the group.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import clean_environ
from daemon_process import DaemonProcess, jsonl, wait_for

from pomabotd.config import load

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "pomabotd.service"
SERVICE_CONFIG = ROOT / "config" / "service.toml"
LOGROTATE = ROOT / "config" / "logrotate.conf"
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="switching users and mounting need root (CI runs as root)")


def _settings() -> dict[str, list[str]]:
    """Each `Name=` of the unit with all its values (continuation lines joined)."""
    text = UNIT.read_text().replace("\\\n", " ")
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            name, value = line.split("=", 1)
            settings.setdefault(name, []).append(" ".join(value.split()))
    return settings


def _install(destdir: Path) -> subprocess.CompletedProcess[str]:
    environ = clean_environ()
    environ["DESTDIR"] = str(destdir)
    return subprocess.run(["sh", str(ROOT / "systemd" / "install.sh"), "--files-only"],
                          env=environ, capture_output=True, text=True, timeout=60)


def test_the_unit_reads_every_setting_from_its_one_configuration_file() -> None:
    """ExecStart= gives nothing but --config: the shipped service configuration sets the output
    directory to the unit's StateDirectory= and the env file to its EnvironmentFile=, so no
    flag overrides the file an operator edits."""
    settings = _settings()
    assert settings["ExecStart"] == [
        "/opt/pomabotd/bin/pomabotd run --config /etc/pomabotd/pomabotd.toml"
    ]
    config = load(SERVICE_CONFIG, {}, {})
    assert config.daemon.output_dir == f"/var/lib/{settings['StateDirectory'][0]}"
    assert config.daemon.env_file == settings["EnvironmentFile"][0].removeprefix("-")
    assert config.daemon.status_addr.startswith("127.0.0.1:")
    written = tomllib.loads(SERVICE_CONFIG.read_text())
    assert {f"daemon.{key}" for key in written["daemon"]} == {
        key for key, source in config.provenance.items() if source != "default"
    }


def test_the_unit_runs_as_a_system_user_whose_group_reads_the_outputs() -> None:
    """A static user and group (no DynamicUser=, whose state only root can reach), state and
    log directories open to the group, and files created group-readable."""
    settings = _settings()
    assert "DynamicUser" not in settings
    assert settings["User"] == ["pomabotd"] and settings["Group"] == ["pomabotd"]
    assert settings["StateDirectoryMode"] == ["0750"]
    assert settings["LogsDirectoryMode"] == ["0750"] and settings["UMask"] == ["0027"]


def test_install_puts_every_file_the_unit_names_in_place(tmp_path: Path) -> None:
    """After the install steps, each Documentation= page, the configuration, the env file
    (root and the group only), the user's definition and the logrotate rules exist; an
    upgrade (the same steps again) keeps the operator's configuration and env file."""
    destdir = tmp_path / "root"
    result = _install(destdir)
    assert result.returncode == 0, result.stderr
    settings = _settings()
    documentation = " ".join(settings["Documentation"]).split()
    assert documentation and all(url.startswith("file:///") for url in documentation)
    named = [url.removeprefix("file://") for url in documentation] + [
        "/etc/pomabotd/pomabotd.toml",
        settings["EnvironmentFile"][0].removeprefix("-"),
        "/etc/systemd/system/pomabotd.service",
        "/etc/sysusers.d/pomabotd.conf",
        "/etc/logrotate.d/pomabotd",
        "/usr/share/doc/pomabotd/pomabotd.example.toml",
    ]
    for path in named:
        assert (destdir / path.lstrip("/")).is_file(), path
    assert (destdir / "etc/pomabotd/pomabotd.toml").read_text() == SERVICE_CONFIG.read_text()
    assert (destdir / "etc/pomabotd/env").stat().st_mode & 0o777 == 0o640
    assert os.readlink(destdir / "usr/local/bin/pomabotd") == "/opt/pomabotd/bin/pomabotd"

    (destdir / "etc/pomabotd/pomabotd.toml").write_text("[daemon]\ninterval_s = 5.0\n")
    (destdir / "etc/pomabotd/env").write_text("BATCH_WORKERS=2\n")
    again = _install(destdir)
    assert again.returncode == 0, again.stderr
    assert (destdir / "etc/pomabotd/pomabotd.toml").read_text() == "[daemon]\ninterval_s = 5.0\n"
    assert (destdir / "etc/pomabotd/env").read_text() == "BATCH_WORKERS=2\n"


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None,
                    reason="systemd-sysusers is not installed (.ci/run installs systemd)")
def test_sysusers_creates_the_user_and_group_the_unit_runs_as(tmp_path: Path) -> None:
    """`systemd-sysusers` on the installed definition creates a system user and group
    `pomabotd`, homed in the state directory, that cannot log in."""
    destdir = tmp_path / "root"
    assert _install(destdir).returncode == 0
    (destdir / "etc/passwd").touch()
    (destdir / "etc/group").touch()
    result = subprocess.run(
        ["systemd-sysusers", f"--root={destdir}",
         str(destdir / "etc/sysusers.d/pomabotd.conf")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    user = (destdir / "etc/passwd").read_text().strip().split(":")
    group = (destdir / "etc/group").read_text().strip().split(":")
    assert user[0] == "pomabotd" and group[0] == "pomabotd" and user[3] == group[2]
    assert 0 < int(user[2]) < 1000 and user[5] == "/var/lib/pomabotd"
    assert user[6].endswith("nologin")


def _rotate(config: Path, state: Path) -> None:
    result = subprocess.run(["logrotate", "--force", "--state", str(state), str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("logrotate") is None,
                    reason="logrotate is not installed (.ci/run installs it)")
def test_rotation_never_deletes_the_ledger_and_loses_no_line(tmp_path: Path) -> None:
    """The shipped logrotate rules (paths moved into the test's directory, the reload sent to
    a real daemon) rotate a running daemon's ledger and log 13 times: every rotated copy of
    metrics.jsonl is kept (research data) and they hold every cycle once, the log keeps its 12
    newest copies, and the ledger still passes `pomabotd verify`."""
    lib, logs = tmp_path / "lib", tmp_path / "log"
    logs.mkdir()
    # Every reload's line is written (none held back as a repeat: the test counts them), and
    # a small world: the cycles' size is not the point, and each reload checks the ledger.
    (tmp_path / "pomabotd.toml").write_text(f'[log]\nfile = "{logs}/pomabotd.log"\n'
                                            "repeat_window_s = 0\n"
                                            "[sources]\nsynthetic_markets = 100\n")
    daemon = DaemonProcess(tmp_path, "--config", "pomabotd.toml", "--out", str(lib),
                           "--interval", "0.1", env={"BATCH_WORKERS": "0"})
    try:
        daemon.wait_log(event="start")
        rules = (LOGROTATE.read_text().replace("/var/lib/pomabotd", str(lib))
                 .replace("/var/log/pomabotd", str(logs))
                 .replace("systemctl reload pomabotd.service", f"kill -HUP {daemon.pid}"))
        config = tmp_path / "logrotate.conf"
        config.write_text(rules)
        rotations = 13
        for rotation in range(1, rotations + 1):
            reloads = rotation
            wait_for("a line to rotate", lambda: (lib / "metrics.jsonl").stat().st_size > 0
                     and (logs / "pomabotd.log").stat().st_size > 0)
            _rotate(config, tmp_path / "logrotate.state")
            rotated_at = int(time.time())
            wait_for("the reload", lambda n=reloads: len(
                [e for e in daemon.logs() if e.get("event") == "reload"]) >= n)
            # The copies are named by the second (dateformat -%Y%m%d-%s): the next rotation
            # waits for the next second, with a margin for time(2)'s coarse clock.
            wait_for("the next second", lambda at=rotated_at: time.time() > at + 1.05)
        daemon.remember_descendants()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        assert daemon.leftovers() == []
    finally:
        daemon.finish()
    copies = sorted(lib.glob("metrics.jsonl-*"))
    assert len(copies) == rotations
    assert len(list(logs.glob("pomabotd.log-*"))) == 12
    cycle_ids = []
    for copy in copies:
        data = gzip.decompress(copy.read_bytes()) if copy.suffix == ".gz" else copy.read_bytes()
        cycle_ids += [int(line.split(b'"cycle_id":')[1].split(b",")[0])
                      for line in data.splitlines()]
    cycle_ids += [m["cycle_id"] for m in jsonl(lib / "metrics.jsonl")]
    assert cycle_ids == list(range(1, len(cycle_ids) + 1))
    verify = subprocess.run([sys.executable, "-m", "pomabotd", "verify", "--out", str(lib)],
                            env=clean_environ(), capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="pomabotd-group-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _as_user(uid: int, gid: int, *command: str) -> subprocess.CompletedProcess[str]:
    def switch() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return subprocess.run(command, preexec_fn=switch, capture_output=True, text=True,
                          timeout=60)


@needs_root
def test_the_group_reads_what_a_cycle_writes_and_report_needs_no_write(
    shared_dir: Path,
) -> None:
    """A cycle run under the unit's UMask=0027 into a 0750 directory (StateDirectoryMode=)
    leaves every file readable by another user of the owning group and by no one else; and
    `report` and `verify` work on the directory mounted read-only."""
    lib = shared_dir / "lib"
    lib.mkdir(mode=0o750)
    lib.chmod(0o750)
    environ = clean_environ()
    environ["BATCH_WORKERS"] = "0"
    cycle = subprocess.run(
        [sys.executable, "-m", "pomabotd", "run-once", "--out", str(lib)], env=environ,
        preexec_fn=lambda: os.umask(0o027), capture_output=True, text=True, timeout=90,
    )
    assert cycle.returncode == 0, cycle.stderr
    files = sorted(path for path in lib.iterdir() if path.is_file())
    assert {"positions.jsonl", "metrics.jsonl", "state.json"} <= {f.name for f in files}
    owner_group = lib.stat().st_gid
    nobody = 65534
    member = _as_user(nobody, owner_group, "cat", *map(str, files))
    assert member.returncode == 0, member.stderr
    assert member.stdout == "".join(f.read_text() for f in files)
    stranger = _as_user(nobody, nobody, "ls", str(lib))
    assert stranger.returncode != 0 and "Permission denied" in stranger.stderr
    assert all(f.stat().st_mode & 0o007 == 0 for f in files)

    plots = shared_dir / "plots"
    script = (f'mount --bind "{lib}" "{lib}" && mount -o remount,bind,ro "{lib}" && '
              f'"{sys.executable}" -m pomabotd verify --out "{lib}" && '
              f'"{sys.executable}" -m pomabotd report --out "{lib}" --plots "{plots}"')
    readonly = subprocess.run(["unshare", "--mount", "sh", "-c", script], env=environ,
                              capture_output=True, text=True, timeout=120)
    assert readonly.returncode == 0, readonly.stdout + readonly.stderr
    assert sorted(p.suffix for p in plots.iterdir()) and all(
        p.suffix == ".png" for p in plots.iterdir())
