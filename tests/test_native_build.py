"""The native decoder is optional: an installation without a Rust toolchain runs on msgspec.

`pip install` builds the decoder only where `cargo` is on the PATH. These tests install the
checkout into a scratch directory with a PATH that has no cargo, and run that installation's
`pomabotd` (its dependencies come from this environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: One installation serves the module's tests: they run on one xdist worker.
pytestmark = pytest.mark.xdist_group("bare_install")


def _path_without_cargo() -> str:
    return os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not (Path(entry) / "cargo").exists()
    )


@pytest.fixture(scope="module")
def bare_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """pomabotd installed from this checkout where no cargo is on the PATH; the environment
    that runs it."""
    target = tmp_path_factory.mktemp("bare") / "site"
    env = {**os.environ, "PATH": _path_without_cargo()}
    env.pop("POMABOTD_BUILD_NATIVE", None)
    assert shutil.which("cargo", path=env["PATH"]) is None
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-cache-dir",
         "--target", str(target), str(ROOT)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert installed.returncode == 0, installed.stderr
    yield {**env, "PYTHONPATH": str(target)}


def _pomabotd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pomabotd", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False,
                          cwd=env["PYTHONPATH"])


@pytest.mark.slow
def test_an_install_without_cargo_has_no_native_decoder_and_says_msgspec_runs(
    bare_install: dict[str, str],
) -> None:
    """Installed without cargo, the package holds no native library, it is the installed
    copy that runs, and `pomabotd config` says `batch.decoder` "auto" runs msgspec."""
    site = Path(bare_install["PYTHONPATH"])
    kernels = site / "pomabotd" / "engine" / "kernels"
    assert (kernels / "native.py").exists()
    assert not list(kernels.glob("_native_decoder*"))
    shown = _pomabotd(bare_install, "config")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["batch.decoder"] == {
        "value": "auto", "source": "default", "runs": "msgspec"}
    where = subprocess.run([sys.executable, "-c", "import pomabotd; print(pomabotd.__file__)"],
                           env=bare_install, capture_output=True, text=True, check=True,
                           cwd=site)
    assert where.stdout.strip().startswith(str(site))


@pytest.mark.slow
def test_without_the_build_native_is_refused_saying_how_to_build_it(
    bare_install: dict[str, str],
) -> None:
    """`BATCH_DECODER=native` where the decoder is not built is bad configuration: exit 2,
    naming the key, where it came from, and how to build the decoder."""
    refused = _pomabotd({**bare_install, "BATCH_DECODER": "native"}, "config")
    assert refused.returncode == 2
    assert "batch.decoder is 'native' but the native decoder is not built" in refused.stderr
    assert "cargo" in refused.stderr and "pip install" in refused.stderr
    assert "(from env BATCH_DECODER)" in refused.stderr


@pytest.mark.slow
def test_an_install_without_cargo_runs_cycles_on_msgspec(bare_install: dict[str, str]) -> None:
    """The installation without the decoder runs a stress cycle whose checks pass, decoded by
    msgspec, and `stress --json` says so."""
    ran = _pomabotd({**bare_install, "BATCH_WORKERS": "2"}, "stress", "--markets", "3000",
                    "--json")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["passed"] and report["markets_evaluated"] == 3000
    assert (report["decoder"], report["markets_native"]) == ("msgspec", 0)
