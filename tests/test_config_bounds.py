"""Every number in the configuration has bounds, and no value within them fails a cycle.

The search is systematic: each numeric key is fed its own bounds and the extremes around them
(negative, zero, one past each bound, 2**63, 1e308) through the TOML file. A value outside the
bounds must be refused when the configuration loads, naming the key and the file; a value the
configuration accepts must let a small cycle run to its end, with the sources that key feeds
(synthetic markets, the Polymarket API on 127.0.0.1, a local news feed) and a worker pool for
the `batch.*` keys.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, RunCli
from daemon_process import DaemonProcess
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from pomabotd import app
from pomabotd.config import key_table, keys, load
from pomabotd.cycle import LedgerOnDemand, run_cycle
from pomabotd.engine.runtime import Runtime
from pomabotd.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config" / "pomabotd.toml"
AS_OF = datetime(2026, 2, 7, 12, tzinfo=UTC)
FEED = DATA / "rss" / "bbc_world_2026-09-25.xml"

#: Keys a cycle does not read: the daemon's own (a daemon test runs them at their bounds).
_NOT_IN_A_CYCLE = {"daemon.interval_s", "daemon.stop_timeout_s"}
#: Keys whose upper bound is a big workload rather than a small cycle: their cycle runs at the
#: lower bound only (the benchmarks measure the big ones).
_WORKLOAD = {"sources.synthetic_markets", "batch.workers"}
_POLYMARKET = ("sources.polymarket_", "sources.request_deadline_s", "sources.max_response_mb",
               "sources.retry_")
_FEEDS = ("sources.feed_", "sources.news_memory")


def _numeric_keys() -> dict[str, Any]:
    """Every key that takes a number, with its bounds as the key table holds them."""
    return {key: spec.bounds for key, spec in key_table().items() if spec.kind in ("int", "float")}


def _requirement(key: str) -> str:
    return key_table()[key].requirement


def _extremes(key: str) -> list[int | float]:
    """The key's bounds, one step past each, and the extremes of its type."""
    bounds = _numeric_keys()[key]
    integer = key_table()[key].kind == "int"
    low, high = bounds.low, bounds.high
    step = 1 if integer else 1e-9 * max(1.0, abs(high))
    values: list[float] = [low - (1 if integer else max(step, 1e-9)), low, high,
                           high + step, -(2**63), -1, 0, 2**63]
    if not integer:
        values += [1e308, -1e308, 5e-324]
    found = {int(v) if integer else float(v) for v in values}
    return sorted(found)


def _write(path: Path, key: str, value: int | float) -> Path:
    section, name = key.split(".", 1)
    path.write_text(f"[{section}]\n{name} = {value!r}\n", encoding="utf-8")
    return path


def _inside(key: str, value: float) -> bool:
    """Whether `value` lies within the key's bounds."""
    bounds = _numeric_keys()[key]
    above = value > bounds.low if bounds.low_open else value >= bounds.low
    below = value < bounds.high if bounds.high_open else value <= bounds.high
    return above and below


def test_every_number_has_an_upper_bound() -> None:
    """Each numeric key has a lower and an upper bound, and its requirement states them."""
    assert len(_numeric_keys()) >= 30
    for key, bounds in _numeric_keys().items():
        assert bounds is not None and bounds.low < bounds.high, key
        requirement = _requirement(key)
        for bound, note in ((bounds.low, ""), (bounds.high, bounds.high_note)):
            written = str(int(bound)) if float(bound).is_integer() else str(bound)
            assert (note or written) in requirement, (key, requirement)


@pytest.mark.parametrize("key", sorted(_numeric_keys()))
def test_values_outside_the_bounds_are_refused_naming_key_and_file(
    key: str, tmp_path: Path
) -> None:
    """A value past either bound (2**63 and 1e308 included) is refused at load, naming the
    key, the requirement and the file; the bounds themselves are accepted."""
    requirement = _requirement(key)
    here = key_table()[key].bounds.high_note and f" ({key_table()[key].bounds.high} here)"
    for value in _extremes(key):
        path = _write(tmp_path / "c.toml", key, value)
        inside = _inside(key, value)
        try:
            config = load(path, {}, {})
        except ConfigError as exc:
            assert not inside, f"{key} = {value!r} refused: {exc}"
            assert str(exc).startswith(f"{key} must be {requirement}{here or ''}, got "), exc
            assert str(exc).endswith(f"(from file {path})")
        else:
            assert inside, f"{key} = {value!r} accepted outside {requirement}"
            assert config.value(key) == value


def test_bounds_hold_in_the_environment_too() -> None:
    """An environment value past a bound is refused naming the variable, like a file value."""
    with pytest.raises(ConfigError) as refused:
        load(None, {"BATCH_WORKERS": "100000"}, {})
    high = key_table()["batch.workers"].bounds.high
    assert str(refused.value) == (
        "batch.workers must be an integer from 0 to 4 x the CPUs this process may use "
        f"({high} here), got 100000 (from env BATCH_WORKERS)"
    )


def test_the_example_file_states_every_bound() -> None:
    """config/pomabotd.toml states each numeric key's bounds in the comment above it."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for key, bounds in _numeric_keys().items():
        name = key.split(".", 1)[1]
        match = re.search(rf"((?:^#.*\n)+)^#? ?{name} = ", text, re.MULTILINE)
        assert match, key
        comment = " ".join(match.group(1).replace("#", " ").split())
        for bound, note in ((bounds.low, ""), (bounds.high, bounds.high_note)):
            written = note or (str(int(bound)) if float(bound).is_integer() else str(bound))
            assert written in comment, f"{key}: {written} not in {comment}"


# --- a small cycle at every accepted extreme ---------------------------------------------------


def _gamma_handler(objects: list[dict[str, Any]]) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        start = int(request.args.get("after_cursor", "0"))
        limit = int(request.args["limit"])
        body: dict[str, Any] = {"markets": objects[start : start + limit]}
        if start + limit < len(objects):
            body["next_cursor"] = str(start + limit)
        return Response(json.dumps(body), content_type="application/json")

    return handler


@pytest.fixture(scope="module")
def gamma_url() -> Iterator[str]:
    """The recorded Polymarket sample served by a Gamma-like keyset endpoint on 127.0.0.1."""
    server = HTTPServer(host="127.0.0.1")
    server.start()
    objects = json.loads((DATA / "gamma" / "markets_sample_50.json").read_text())
    server.expect_request("/markets/keyset").respond_with_handler(_gamma_handler(objects))
    try:
        yield server.url_for("").rstrip("/")
    finally:
        server.clear()
        server.stop()


@pytest.fixture(scope="module")
def pool() -> Iterator[Runtime]:
    """One warm pool of one worker, taken over by each `batch.*` case with its settings."""
    with app.runtime(load(None, {"BATCH_WORKERS": "1"}, {})) as runtime:
        yield runtime


def _cases() -> list[tuple[str, int | float]]:
    cases = []
    for key, bounds in sorted(_numeric_keys().items()):
        if key in _NOT_IN_A_CYCLE:
            continue
        for value in _extremes(key):
            if key in _WORKLOAD and value > max(bounds.low, 1):
                continue
            if _inside(key, value):
                cases.append((key, value))
    return cases


@pytest.mark.parametrize(("key", "value"), _cases(), ids=lambda v: str(v))
def test_no_accepted_value_fails_a_cycle(
    key: str, value: int | float, tmp_path: Path, gamma_url: str, pool: Runtime
) -> None:
    """With the key at a value the configuration accepts, a cycle on the inputs that key
    feeds runs to its end and writes its metrics line."""
    section, name = key.split(".", 1)
    feed = tmp_path / "feed.xml"
    shutil.copy(FEED, feed)
    lines = {
        "batch": [] if key == "batch.workers" else [f"workers = {int(section == 'batch')}"],
        "sources": [] if key == "sources.synthetic_markets" else ["synthetic_markets = 40"],
    }
    if key.startswith(_POLYMARKET):
        lines["sources"] += ['markets = "polymarket"', f'polymarket_url = "{gamma_url}"']
    if key.startswith(_FEEDS):
        lines["sources"].append(f'feeds = ["{feed}"]')
    lines.setdefault(section, []).append(f"{name} = {value!r}")
    (tmp_path / "c.toml").write_text(
        "".join(f"[{s}]\n" + "\n".join(body) + "\n" for s, body in lines.items()),
        encoding="utf-8",
    )
    config = load(tmp_path / "c.toml", {}, {})
    assert config.value(key) == value

    runtime = pool if config.batch.workers == 1 else app.runtime(config)
    app.reconfigure_runtime(runtime, config)

    async def cycle() -> int:
        sources = app.sources(config)
        with LedgerOnDemand(tmp_path / "out") as ledger:
            async with sources:
                report = await run_cycle(
                    runtime, sources, ledger.portfolio(), ledger, config.risk_limits(),
                    as_of=AS_OF, clock=lambda: datetime.now(UTC), halt=app.halt_policy(config),
                )
        return report.metrics.cycle_id

    try:
        assert asyncio.run(asyncio.wait_for(cycle(), 60)) == 1
    finally:
        if runtime is not pool:
            runtime.close()
    assert (tmp_path / "out" / "metrics.jsonl").read_bytes().count(b"\n") == 1


def test_every_key_is_searched() -> None:
    """The search covers every numeric key: a cycle runs each one, or a daemon test does."""
    searched = {key for key, _ in _cases()} | _NOT_IN_A_CYCLE
    assert searched == set(_numeric_keys())
    assert set(_numeric_keys()) <= set(keys())


# --- the cases the attack named, through the command line and a running daemon ----------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[sources]\nsynthetic_markets = 1000000000000\n", "sources.synthetic_markets"),
        ("[batch]\nworkers = 100000\n", "batch.workers"),
        ("[sources]\nseed = -1\n", "sources.seed"),
    ],
)
def test_pomabotd_config_refuses_what_would_exhaust_the_machine_or_fail_cycles(
    text: str, key: str, tmp_path: Path, run_cli: RunCli
) -> None:
    """`pomabotd config` exits 2 on the values the attack used, naming the key, its bounds
    and the file."""
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    result = run_cli("config", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert f"{key} must be {_requirement(key)}" in result.stderr
    assert f"(from file {path})" in result.stderr and "Traceback" not in result.stderr


def test_a_daemon_refuses_a_value_past_its_bounds_at_start_and_on_reload(tmp_path: Path) -> None:
    """A daemon at the daemon keys' upper bounds (a cycle a day, 300 s to stop) runs its first
    cycle; a reload to `sources.seed = -1` is refused naming the key and file and the old
    configuration stays; SIGTERM still stops it at once; a start with the value exits 2."""
    config = tmp_path / "pomabotd.toml"
    good = ("[batch]\nworkers = 0\n[sources]\nsynthetic_markets = 50\n"
            "[daemon]\ninterval_s = 86400\nstop_timeout_s = 300\n")
    config.write_text(good, encoding="utf-8")
    daemon = DaemonProcess(tmp_path, "--config", str(config), "--out", "out")
    try:
        daemon.wait_log(event="cycle", cycle_id=1)
        config.write_text(good.replace("synthetic_markets = 50", "seed = -1"), encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_log(event="reload_failed")
        assert f"sources.seed must be {_requirement('sources.seed')}" in failed["message"]
        assert f"(from file {config})" in failed["message"]
        shown = daemon.get("/api/batch/config").json()
        assert shown["sources.seed"]["value"] == 7
        assert shown["sources.synthetic_markets"]["value"] == 50
        daemon.remember_descendants()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=30) == 0
        assert daemon.leftovers() == []
    finally:
        daemon.finish()
    started = DaemonProcess(tmp_path, "--config", str(config), "--out", "out2")
    try:
        assert started.wait_exit(timeout=60) == 2
        assert "sources.seed must be" in started.log_path.read_text()
        assert not (tmp_path / "out2").exists()
    finally:
        started.finish()
