"""The documentation matches the repository: the generated configuration reference is current,
every key is described, examples run as shown, and no page names a file that does not exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pomabotd.config import key_table
from tools import config_reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README = ROOT / "README.md"


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def test_the_configuration_reference_is_current() -> None:
    """The checked-in reference is exactly what the key table and the example generate."""
    page = (DOCS / "configuration-reference.md").read_text(encoding="utf-8")
    assert page == config_reference.render(), "run: python -m tools.config_reference"


def test_the_reference_lists_every_key_with_its_default_and_variable() -> None:
    """Each key of the table has its own anchored entry naming its environment variable."""
    page = config_reference.render()
    for key, spec in key_table().items():
        entry = page.split(f"### `{key}` {{#{key}}}\n", 1)[1].split("\n### ", 1)[0]
        assert f"- **Environment:** {f'`{spec.env}`' if spec.env else 'none'}" in entry, key
        assert f"- **Allowed:** {spec.requirement}" in entry, key


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("# Time limit per market, in milliseconds (1 to 600000).", "",
         r"batch\.timeout_ms has no description"),
        ("env BATCH_TIMEOUT_MS", "env BATCH_TIMEOUT", r"batch\.timeout_ms: .* env BATCH_TIMEOUT,"),
    ],
    ids=["description removed", "another variable"],
)
def test_an_example_that_does_not_describe_a_key_fails_the_reference(
    old: str, new: str, error: str
) -> None:
    """A key whose comment is gone, or names a variable the key does not read, is refused."""
    text = config_reference.EXAMPLE.read_text(encoding="utf-8")
    assert old in text
    with pytest.raises(config_reference.ExampleError, match=error):
        config_reference.render(text.replace(old, new))


def test_the_check_mode_reports_a_stale_page(tmp_path: Path, monkeypatch) -> None:
    """`--check` exits 1 when the page differs from what would be generated, 0 when not."""
    page = tmp_path / "reference.md"
    monkeypatch.setattr(config_reference, "PAGE", page)
    monkeypatch.setattr(config_reference, "ROOT", tmp_path)
    page.write_text("stale\n", encoding="utf-8")
    assert config_reference.main(["--check"]) == 1
    assert config_reference.main([]) == 0
    assert config_reference.main(["--check"]) == 0


def test_the_library_example_prints_what_the_page_shows() -> None:
    """The code on the library page runs and prints exactly the lines shown under it."""
    text = (DOCS / "library.md").read_text(encoding="utf-8")
    code = _code_blocks(text, "python")[0]
    shown = _code_blocks(text, "text")[0]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout == shown


_REPO_PATH = re.compile(
    r"`((?:config|docs|tests|benchmarks|pomabotd|systemd|tools|\.ci)/[A-Za-z0-9_./*-]*)`"
)


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_pages_name_only_files_the_repository_holds(path: Path) -> None:
    """Every repository path a page names exists, and no page names an absolute local path."""
    text = path.read_text(encoding="utf-8")
    assert f"{ROOT.parent}/" not in text and "/home/" not in text
    for name in _REPO_PATH.findall(text):
        if "*" in name:
            assert list(ROOT.glob(name)), name
        else:
            assert (ROOT / name).exists(), f"{path.name} names {name}, which does not exist"


#: Citations of documents the repository does not hold: the product specification the docs
#: replaced (by name, file or section; the class keeps this line from matching itself), and
#: sections of the README by title ("README, ..." or "README's ..."), which moved to docs/.
_MISSING_DOCUMENT = re.compile(rb"\bS[P]EC\b|(?i:\bspec\.md\b)|README(?:'s|,) \"")


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True, timeout=60).stdout.split(b"\0")
    return [ROOT / name.decode() for name in names if name]


def test_no_tracked_file_cites_a_document_the_repository_lacks() -> None:
    """No tracked file, code, tests, config or CHANGELOG, cites the old specification or a
    README section by title: each says what the rule is, or links the docs page."""
    files = _tracked_text_files()
    assert any(path.name == "test_docs.py" for path in files)
    cited = []
    for path in files:
        if not path.is_file():
            continue  # deleted in the work tree, not yet in the index
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        for number, line in enumerate(data.splitlines(), 1):
            if _MISSING_DOCUMENT.search(line):
                text = line.decode(errors="replace").strip()
                cited.append(f"{path.relative_to(ROOT)}:{number}: {text}")
    assert not cited, "\n".join(cited)


def test_the_readme_is_a_landing_page_with_the_two_commands() -> None:
    """The README stays short, keeps both set-up-and-go commands, and links every page."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    commands = _code_blocks(text, "sh")
    assert commands[:2] == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install . && pomabotd run-once\n",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' "
        "&& python -m pytest\n",
    ]
    assert "python3-venv" in text and "pip install '.[plots]'" in text
    for page in PAGES:
        assert f"](docs/{page.name})" in text, page.name


def test_ci_runs_the_readmes_test_command_and_builds_the_docs_strictly() -> None:
    """`.ci/run` installs the test, docs and dask extras in a fresh venv, runs the README's
    test command and `mkdocs build --strict`."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "rm -rf .venv" in ci and "python3 -m venv .venv" in ci
    assert "pip install -q -e '.[test,docs,dask]'" in ci
    assert re.search(r"^python -m pytest$", ci, re.MULTILINE)
    assert "mkdocs build --strict" in ci


_METRIC = re.compile(r"\bpomabotd_[a-z_]+\b")


def _documented_metrics() -> set[str]:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    table = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\| `(pomabotd_[a-z_]+)", table, re.MULTILINE)}


def test_the_metrics_table_lists_what_a_daemon_exposes() -> None:
    """The operations page documents exactly the metrics the daemon test expects exposed."""
    from exposition import EXPOSED_SERIES, PER_SOURCE_SERIES

    names = {series.split("{", 1)[0] for series in EXPOSED_SERIES | PER_SOURCE_SERIES}
    assert _documented_metrics() == names


def test_the_alerting_rules_are_valid_and_name_documented_metrics() -> None:
    """promtool accepts the example alerting rules, and each metric they use is documented."""
    rules = ROOT / "config" / "prometheus-alerts.yml"
    used = set(_METRIC.findall(rules.read_text(encoding="utf-8")))
    assert used and used <= _documented_metrics(), used - _documented_metrics()
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (.ci/run installs the prometheus package)"
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
