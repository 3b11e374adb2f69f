"""The executor seam: backends come from one table, and scheduling and supervision rely on the
protocol and its capabilities alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pomabotd
from pomabotd.engine.executor import BACKENDS, open_executor
from pomabotd.engine.runtime import Runtime

from . import thread_executor
from .test_runtime import MARKETS, TARGET, _run, _settings, _timeless

PACKAGE = Path(pomabotd.__file__).parent
EXECUTOR = PACKAGE / "engine" / "executor"
#: What only a backend may know: processes, pools, this machine's process table and the ways
#: of sharing memory with workers on it.
BACKEND_WORDS = re.compile(
    r"ProcessPoolExecutor|BrokenProcessPool|/proc\b|memory files?\b|memfd|shared arrays?\b"
    r"|RawArray|sharedctypes",
    re.IGNORECASE,
)


def test_only_backends_name_processes_pools_or_memory_files() -> None:
    """Outside `engine/executor/`, no module of the package names the process pool, its
    breakage, `/proc`, memory files or shared arrays."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if EXECUTOR in path.parents:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if BACKEND_WORDS.search(line):
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert found == []
    assert any(BACKEND_WORDS.search(path.read_text()) for path in EXECUTOR.glob("*.py"))


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test backends, each one line in the table."""
    module = thread_executor.__name__
    monkeypatch.setitem(BACKENDS, "threads", f"{module}:ThreadExecutor.from_settings")
    monkeypatch.setitem(BACKENDS, "losing", f"{module}:LosingExecutor.from_settings")


@pytest.mark.usefixtures("threads")
def test_a_backend_added_to_the_table_runs_cycles_like_the_others() -> None:
    """A backend that keeps the protocol, added as one line of the table, evaluates a cycle
    exactly as the in-process run does, with and without per-market lines."""
    with Runtime(_settings(0)) as here:
        expected, expected_lines = _run(here, keep=("m0001",))
        plain_expected = here.evaluate_sync(*_inputs())
    with Runtime(_settings(2, executor="threads")) as runtime:
        assert runtime.info().name == "threads" and runtime.info().workers == 2
        result, lines = _run(runtime, keep=("m0001",))
        plain = runtime.evaluate_sync(*_inputs())
        submissions = runtime.executor.submissions  # type: ignore[attr-defined]
    assert _timeless(lines) == _timeless(expected_lines)
    assert result.markets == expected.markets and result.kept.keys() == {"m0001"}
    assert _timeless(plain.candidates) == _timeless(plain_expected.candidates)
    assert submissions > 2


@pytest.mark.usefixtures("threads")
def test_supervision_corners_a_lost_market_on_any_backend() -> None:
    """On a backend that cannot kill or interrupt, a market whose submissions keep losing
    their worker still fails alone with `worker crashed`, after the executor recovered."""
    with Runtime(_settings(2, executor="losing", retry_attempts=1)) as runtime:
        result, lines = _run(runtime)
        recovered = runtime.executor.recovered  # type: ignore[attr-defined]
    assert result.failures == [(TARGET, "worker crashed")]
    assert [e.market_id for e in lines] == [m.id for m in MARKETS]
    assert result.markets_evaluated == len(MARKETS) - 1
    assert recovered >= 3  # the chunk alone, then the market twice (one retry)
    assert result.timeouts == 0


def _inputs() -> tuple[bytes, str, bytes, str, object]:
    from .test_runtime import AS_OF, MARKET_LINES, SIGNAL_LINES

    return MARKET_LINES, "m", SIGNAL_LINES, "s", AS_OF


def test_every_backend_of_the_table_can_be_built() -> None:
    """Each line of the table builds, from the settings, an unstarted executor of that name;
    `workers = 0` chooses the in-process one whatever the backend."""
    for name, workers in (("inline", 0), ("local", 1), ("local", 0)):
        executor = open_executor(_settings(workers, executor=name))
        assert executor.name == ("inline" if workers == 0 else name)
        assert executor.workers == workers and executor.worker_names() == []
        executor.close()
    assert set(BACKENDS) >= {"inline", "local"}
