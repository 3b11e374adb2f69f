"""The configuration layer: layers, provenance, refusals, the example file."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from pomabotd.config import (
    CONFIG_ENV_VAR,
    Config,
    default_config_path,
    is_builtin_evaluator,
    key_table,
    keys,
    load,
    resolve_evaluator,
)
from pomabotd.domain.models import RiskLimits
from pomabotd.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "pomabotd.toml"

BATCH_ENV = {
    "batch.enabled": "BATCH_MODE_ENABLED",
    "batch.max_concurrency": "BATCH_MAX_CONCURRENCY",
    "batch.workers": "BATCH_WORKERS",
    "batch.batch_size": "BATCH_SIZE",
    "batch.timeout_ms": "BATCH_TIMEOUT_MS",
    "batch.retry_attempts": "BATCH_RETRY_ATTEMPTS",
    "batch.evaluator": "BATCH_EVALUATOR",
    "batch.kernel": "BATCH_KERNEL",
    "batch.decoder": "BATCH_DECODER",
    "batch.executor": "BATCH_EXECUTOR",
    "batch.dask_scheduler": "BATCH_DASK_SCHEDULER",
    "batch.dask_shared_files": "BATCH_DASK_SHARED_FILES",
    "risk.min_edge": "BATCH_MIN_EDGE",
    "risk.max_portfolio_risk": "BATCH_MAX_PORTFOLIO_RISK",
    "risk.require_diversification": "BATCH_REQUIRE_DIVERSIFICATION",
    "risk.max_positions_per_category": "BATCH_MAX_POSITIONS_PER_CATEGORY",
    "risk.stop_loss_percent": "BATCH_STOP_LOSS_PERCENT",
    "risk.profit_target_percent": "BATCH_PROFIT_TARGET_PERCENT",
}

#: How a refused `batch.workers` words its bounds on this machine.
WORKERS = "batch.workers must be " + key_table()["batch.workers"].requirement
#: ... and the bound it has on this machine, which a refusal of a value past it adds.
HERE = f"{WORKERS} ({key_table()['batch.workers'].bounds.high} here)"


def write(tmp_path: Path, text: str, name: str = "pomabotd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path | None = None, environ=None, flags=None) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, environ or {}, flags or {})
    return str(info.value)


def test_defaults_without_file() -> None:
    """With no file, environment or flags every key has its documented default, source `default`."""
    config = load(None, {}, {})
    assert config.path is None
    assert config.batch.enabled is True
    assert config.batch.max_concurrency == 50
    assert config.batch.workers >= 1
    assert config.batch.batch_size == 100
    assert config.batch.timeout_ms == 5000
    assert config.batch.retry_attempts == 2
    assert config.batch.evaluator == "pomabotd:evaluate_market"
    assert config.batch.kernel == "columnar"
    assert config.strategy.prior == "fixed"
    assert config.sources.markets == "synthetic"
    assert config.sources.signals == ""
    assert config.sources.synthetic_markets == 1000
    assert config.sources.seed == 7
    assert config.daemon.output_dir == "pomabotd-output"
    assert config.daemon.interval_s == 60.0
    assert config.daemon.status_addr == "127.0.0.1:8787"
    assert config.daemon.env_file == "" and config.daemon.stop_timeout_s == 10.0
    assert config.log.level == "INFO"
    assert (config.log.format, config.log.file) == ("auto", "")
    assert set(config.provenance.values()) == {"default"}


def test_risk_defaults_are_the_domain_defaults() -> None:
    """The `risk.*` defaults agree with `RiskLimits()` field for field."""
    assert load(None, {}, {}).risk_limits() == RiskLimits()


def test_env_names_are_the_documented_variables() -> None:
    """Exactly the `BATCH_*` keys (the batch, executor and risk settings), the log format, the
    webhook's URL and the status token read an environment variable."""
    assert {k: v for k, v in keys().items() if v} == {
        **BATCH_ENV, "log.format": "POMABOTD_LOG_FORMAT",
        "notify.webhook_url": "POMABOTD_NOTIFY_WEBHOOK_URL",
        "daemon.status_token": "POMABOTD_STATUS_TOKEN",
    }


def test_precedence_across_all_four_layers(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the file, which beats the default."""
    path = write(
        tmp_path,
        "[batch]\nworkers = 3\nbatch_size = 200\ntimeout_ms = 900\n"
        "[risk]\nmin_edge = 20\nkelly_fraction = 0.5\n"
        '[sources]\nmarkets = "a.jsonl"\n',
    )
    environ = {"BATCH_WORKERS": "5", "BATCH_MIN_EDGE": "25", "BATCH_TIMEOUT_MS": "700"}
    flags = {"batch.workers": 0, "sources.markets": "b.jsonl", "daemon.output_dir": None}
    config = load(path, environ, flags)

    assert (config.batch.workers, config.provenance["batch.workers"]) == (0, "flag:batch.workers")
    assert config.sources.markets == "b.jsonl"
    assert config.provenance["sources.markets"] == "flag:--markets"
    assert config.risk.min_edge == 25.0
    assert config.provenance["risk.min_edge"] == "env:BATCH_MIN_EDGE"
    assert config.batch.timeout_ms == 700
    assert config.batch.batch_size == 200
    assert config.provenance["batch.batch_size"] == f"file:{path}"
    assert config.risk.kelly_fraction == 0.5
    assert config.batch.retry_attempts == 2
    assert config.provenance["batch.retry_attempts"] == "default"
    assert config.daemon.output_dir == "pomabotd-output"
    assert config.provenance["daemon.output_dir"] == "default"
    assert config.path == str(path)


def test_kernel_and_prior_are_checked_and_sourced(tmp_path: Path) -> None:
    """`batch.kernel` reads BATCH_KERNEL and `strategy.prior` the file; a bad value of either
    is refused naming the key, the allowed values and the source."""
    path = write(tmp_path, '[strategy]\nprior = "market"\n')
    config = load(path, {"BATCH_KERNEL": "scalar"}, {})
    assert (config.batch.kernel, config.provenance["batch.kernel"]) == (
        "scalar", "env:BATCH_KERNEL"
    )
    assert (config.strategy.prior, config.provenance["strategy.prior"]) == (
        "market", f"file:{path}"
    )
    assert refusal(None, {"BATCH_KERNEL": "gpu"}) == (
        "batch.kernel must be 'columnar' or 'scalar', got 'gpu' (from env BATCH_KERNEL)"
    )
    bad = write(tmp_path, '[strategy]\nprior = "crowd"\n', "bad.toml")
    assert refusal(bad) == (
        f"strategy.prior must be 'fixed' or 'market', got 'crowd' (from file {bad})"
    )


def test_describe_is_json_ready_with_every_key(tmp_path: Path) -> None:
    """`describe()` lists every key with its value and source and encodes as JSON."""
    path = write(tmp_path, "[log]\nlevel = 'debug'\n")
    config = load(path, {"BATCH_SIZE": "10"}, {"daemon.output_dir": "out"})
    described = msgspec.json.decode(msgspec.json.encode(config.describe()))
    assert list(described) == list(keys())
    assert described["log.level"] == {"value": "DEBUG", "source": f"file:{path}"}
    assert described["batch.batch_size"] == {"value": 10, "source": "env:BATCH_SIZE"}
    assert described["daemon.output_dir"] == {"value": "out", "source": "flag:--out"}
    assert described["risk.portfolio_value"] == {"value": 10000.0, "source": "default"}


def test_unknown_key_names_file_and_suggests(tmp_path: Path) -> None:
    """A misspelt key is refused with the file and the closest real key."""
    path = write(tmp_path, "[batch]\nworker = 4\n")
    assert refusal(path) == (
        f"unknown key 'batch.worker' in {path} (did you mean 'batch.workers'?)"
    )


def test_key_in_wrong_section_suggests_its_section(tmp_path: Path) -> None:
    """A key placed in the wrong section points at the section it belongs to."""
    path = write(tmp_path, "[batch]\nkelly_fraction = 0.5\n")
    assert "did you mean 'risk.kelly_fraction'?" in refusal(path)


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    """An unknown table is refused with a suggestion."""
    path = write(tmp_path, "[rsik]\nmin_edge = 3\n")
    assert refusal(path) == f"unknown section [rsik] in {path} (did you mean 'risk'?)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[batch]\nworkers = -1\n", f"{HERE}, got -1"),
        ("[batch]\nworkers = 2.5\n", f"{WORKERS}, got 2.5"),
        ("[batch]\nworkers = true\n", f"{WORKERS}, got True"),
        ("[batch]\nenabled = 'yes'\n", "batch.enabled must be true or false, got 'yes'"),
        ("[risk]\nstop_loss_percent = 100\n", "risk.stop_loss_percent must be a number > 0"),
        ("[risk]\nkelly_fraction = 0\n", "risk.kelly_fraction must be a number > 0 and <= 1"),
        ("[risk]\nmax_portfolio_risk = 101\n", "risk.max_portfolio_risk must be a number from"),
        ("[risk]\nmin_edge = nan\n",
         "risk.min_edge must be a number from 0 to 100 (points), got nan"),
        ("[daemon]\nstatus_addr = 'localhost'\n", "daemon.status_addr must be"),
        ("[daemon]\nstop_timeout_s = 0\n", "daemon.stop_timeout_s must be a number > 0"),
        ("[daemon]\nstop_timeout_s = 301\n",
         "daemon.stop_timeout_s must be a number > 0 and <= 300 (seconds; keep it below the "
         "unit's TimeoutStopSec=), got 301.0"),
        ("[log]\nformat = 'xml'\n", "log.format must be one of auto, json, text"),
        ("[log]\nlevel = 'LOUD'\n", "log.level must be one of TRACE, DEBUG"),
        ("[sources]\nmarkets = ''\n", "sources.markets must be a JSONL path"),
    ],
)
def test_bad_file_value_names_key_and_file(tmp_path: Path, text: str, expected: str) -> None:
    """A bad value in the file names the key, what is allowed and the file."""
    path = write(tmp_path, text)
    message = refusal(path)
    assert message.startswith(expected)
    assert message.endswith(f"(from file {path})")


def test_bad_env_value_names_key_and_variable() -> None:
    """A bad environment value names the key and the variable."""
    assert refusal(environ={"BATCH_WORKERS": "-1"}) == (
        f"{HERE}, got -1 (from env BATCH_WORKERS)"
    )
    assert refusal(environ={"BATCH_SIZE": "ten"}) == (
        "batch.batch_size must be an integer from 1 to 100000, got 'ten' (from env BATCH_SIZE)"
    )
    assert refusal(environ={"BATCH_MIN_EDGE": "inf"}) == (
        "risk.min_edge must be a number from 0 to 100 (points), got 'inf' (from env "
        "BATCH_MIN_EDGE)"
    )


def test_bad_flag_value_names_key_and_flag() -> None:
    """A bad flag value names the key and the flag."""
    assert refusal(flags={"batch.workers": -1}) == (
        f"{HERE}, got -1 (from flag batch.workers)"
    )
    assert refusal(flags={"daemon.output_dir": ""}) == (
        "daemon.output_dir must be a directory path, got '' (from flag --out)"
    )
    assert "unknown configuration key 'batch.wrkers'" in refusal(flags={"batch.wrkers": 1})


def test_text_flags_are_parsed_like_env() -> None:
    """A flag given as text is parsed to the key's type."""
    config = load(None, {}, {"batch.workers": "0", "risk.min_edge": "12.5"})
    assert (config.batch.workers, config.risk.min_edge) == (0, 12.5)


def test_bad_file_value_is_refused_even_when_overridden(tmp_path: Path) -> None:
    """A bad file value is not hidden by a flag that overrides it."""
    path = write(tmp_path, "[batch]\nworkers = -1\n")
    assert f"(from file {path})" in refusal(path, flags={"batch.workers": 2})


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Several problems come back in one refusal, so they can be fixed in one go."""
    path = write(tmp_path, "[batch]\nworker = 4\nbatch_size = 0\n")
    message = refusal(path, environ={"BATCH_MODE_ENABLED": "maybe"})
    assert message.startswith("3 configuration errors:")
    assert "'batch.worker'" in message
    assert "batch.batch_size must be" in message
    assert "BATCH_MODE_ENABLED" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("FALSE", False),
        ("1", True),
        ("0", False),
        ("Yes", True),
        ("no", False),
        ("on", True),
        ("Off", False),
    ],
)
def test_env_bools(text: str, expected: bool) -> None:
    """Environment booleans accept true/false, 1/0, yes/no, on/off in any case."""
    config = load(None, {"BATCH_REQUIRE_DIVERSIFICATION": text}, {})
    assert config.risk.require_diversification is expected


@pytest.mark.parametrize("text", ["maybe", "2", "tru", "enabled"])
def test_bad_env_bool_is_refused(text: str) -> None:
    """Anything else given for a boolean variable is refused, naming the variable."""
    assert refusal(environ={"BATCH_MODE_ENABLED": text}) == (
        f"batch.enabled must be true or false, got {text!r} (from env BATCH_MODE_ENABLED)"
    )


def test_unknown_and_empty_env_vars_are_ignored() -> None:
    """Unknown `BATCH_*` variables are ignored with a warning; empty ones count as unset."""
    config = load(None, {"BATCH_WORKER": "4", "BATCH_SIZE": "", "HOME": "/root"}, {})
    assert config.batch.batch_size == 100
    assert config.provenance["batch.batch_size"] == "default"
    assert config.warnings == (
        "ignored unknown environment variable BATCH_WORKER (did you mean 'BATCH_WORKERS'?)",
    )


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the line."""
    path = write(tmp_path, "[batch]\nworkers = = 3\n")
    message = refusal(path)
    assert message.startswith(f"{path}: invalid TOML")
    assert "line 2" in message


def test_section_must_be_a_table(tmp_path: Path) -> None:
    """A section written as a plain value is refused."""
    path = write(tmp_path, "batch = 3\n")
    assert refusal(path) == f"batch must be a table ([batch]) in {path}"


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    """A `--config` path that does not exist is a configuration error naming it."""
    missing = tmp_path / "nope.toml"
    assert refusal(missing) == f"config file {missing} not found (from --config)"


def test_config_file_from_environment(tmp_path: Path) -> None:
    """Without `--config`, POMABOTD_CONFIG names the file; `--config` wins over it."""
    path = write(tmp_path, "[batch]\nbatch_size = 7\n")
    other = write(tmp_path, "[batch]\nbatch_size = 8\n", "other.toml")
    environ = {CONFIG_ENV_VAR: str(path)}
    assert default_config_path(environ) == path
    assert default_config_path({}) is None
    assert load(None, environ, {}).batch.batch_size == 7
    assert load(other, environ, {}).batch.batch_size == 8
    missing = {CONFIG_ENV_VAR: str(tmp_path / "gone.toml")}
    assert refusal(environ=missing).endswith(f"(from env {CONFIG_ENV_VAR})")


def test_evaluator_module_missing_is_refused_at_load() -> None:
    """An evaluator whose module does not exist is refused when loading, naming its source."""
    message = refusal(environ={"BATCH_EVALUATOR": "no_such_module_xyz:evaluate"})
    assert message.startswith("batch.evaluator: cannot import module 'no_such_module_xyz'")
    assert message.endswith("(from env BATCH_EVALUATOR)")


def test_evaluator_function_missing_is_refused_at_load(tmp_path: Path) -> None:
    """An evaluator naming a function the module lacks is refused, naming the file."""
    path = write(tmp_path, "[batch]\nevaluator = 'json:no_such_function'\n")
    message = refusal(path)
    assert "module 'json' has no attribute 'no_such_function'" in message
    assert message.startswith("batch.evaluator: ")
    assert message.endswith(f"(from file {path})")


def test_evaluator_not_callable_or_malformed_is_refused() -> None:
    """A non-callable attribute or a spec without `:` is refused."""
    assert "is not callable" in refusal(flags={"batch.evaluator": "math:pi"})
    assert refusal(flags={"batch.evaluator": "json.dumps"}) == (
        "batch.evaluator must be of the form 'module:function', got 'json.dumps' "
        "(from flag batch.evaluator)"
    )


def test_plugin_evaluator_is_kept_as_text() -> None:
    """A valid plugin is accepted and kept as its string; `resolve_evaluator` returns it."""
    config = load(None, {"BATCH_EVALUATOR": "os.path:join"}, {})
    assert config.batch.evaluator == "os.path:join"
    assert resolve_evaluator(config.batch.evaluator) is os.path.join
    with pytest.raises(ConfigError):
        resolve_evaluator("json:nothing_here")


def test_example_file_loads_to_the_defaults() -> None:
    """The shipped example config changes no value; only the provenance differs."""
    from_example = load(EXAMPLE, {}, {})
    defaults = load(None, {}, {})
    assert from_example.describe().keys() == defaults.describe().keys()
    for key, entry in from_example.describe().items():
        assert entry["value"] == defaults.value(key), key
    assert from_example.provenance["batch.timeout_ms"] == f"file:{EXAMPLE}"


@pytest.mark.parametrize(
    "path", sorted(EXAMPLE.parent.rglob("*.toml")), ids=lambda p: p.name
)
def test_every_shipped_config_file_loads(path: Path) -> None:
    """Each TOML file under config/ loads, and every key it sets is taken from it."""
    config = load(path, {}, {})
    table = tomllib.loads(path.read_text(encoding="utf-8"))
    written = {f"{section}.{name}" for section, body in table.items() for name in body}
    assert written
    assert {key for key in written if config.provenance[key] == f"file:{path}"} == written


def test_example_file_documents_every_key_and_env_var() -> None:
    """Each key appears in the example (workers commented out) next to its env variable."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert CONFIG_ENV_VAR in text
    for key, env in keys().items():
        name = key.split(".", 1)[1]
        assert re.search(rf"^#? ?{name} = ", text, re.MULTILINE), key
        if env:
            assert f"env {env}" in text, env


def test_risk_limits_maps_every_risk_key(tmp_path: Path) -> None:
    """`risk_limits()` carries the effective `risk.*` values into the domain Struct."""
    path = write(
        tmp_path,
        "[risk]\nkelly_fraction = 0.5\nmax_position_percent = 10\nmin_position_usd = 2\n"
        "portfolio_value = 500\n",
    )
    environ = {
        "BATCH_MIN_EDGE": "18",
        "BATCH_MAX_PORTFOLIO_RISK": "30",
        "BATCH_REQUIRE_DIVERSIFICATION": "off",
        "BATCH_MAX_POSITIONS_PER_CATEGORY": "4",
        "BATCH_STOP_LOSS_PERCENT": "7.5",
        "BATCH_PROFIT_TARGET_PERCENT": "12",
    }
    limits = load(path, environ, {}).risk_limits()
    assert limits == RiskLimits(
        min_edge=18.0,
        max_portfolio_risk=30.0,
        require_diversification=False,
        max_positions_per_category=4,
        stop_loss_percent=7.5,
        profit_target_percent=12.0,
        kelly_fraction=0.5,
        max_position_percent=10.0,
        min_position_usd=2.0,
        portfolio_value=500.0,
    )
    assert isinstance(limits.portfolio_value, float)


def test_status_endpoint() -> None:
    """The status address splits into host and port; empty switches the endpoint off."""
    assert load(None, {}, {}).daemon.status_endpoint() == ("127.0.0.1", 8787)
    off = load(None, {}, {"daemon.status_addr": ""})
    assert off.daemon.status_endpoint() is None
    ipv6 = load(None, {}, {"daemon.status_addr": "[::1]:9000"})
    assert ipv6.daemon.status_endpoint() == ("::1", 9000)


def test_config_is_frozen() -> None:
    """The tree cannot be changed in place; a reload builds a new one."""
    config = load(None, {}, {})
    assert isinstance(config, Config)
    with pytest.raises(AttributeError):
        config.batch.workers = 3  # type: ignore[misc]


def test_env_file_overrides_the_process_environment(tmp_path: Path) -> None:
    """The env file's variables beat the process environment's, with file and line as source;
    the process environment still sets what the file leaves alone."""
    env_file = write(tmp_path, "# tuning\n\nBATCH_SIZE=30\nexport BATCH_MIN_EDGE='18'\n", "env")
    path = write(tmp_path, f'[daemon]\nenv_file = "{env_file}"\n')
    config = load(path, {"BATCH_SIZE": "20", "BATCH_WORKERS": "1"}, {})
    assert config.batch.batch_size == 30
    assert config.provenance["batch.batch_size"] == f"env-file:{env_file}:3"
    assert config.risk.min_edge == 18.0
    assert config.batch.workers == 1 and config.provenance["batch.workers"] == "env:BATCH_WORKERS"
    assert config.env_file == str(env_file)


def test_bad_env_file_lines_name_the_file_and_line(tmp_path: Path) -> None:
    """A line without `=` is an error naming the file and line; a bad value names the
    variable, the file and the line; an unknown BATCH_ variable is only a warning."""
    env_file = write(tmp_path, "BATCH_SIZE=5\nthis is not a setting\n", "env")
    path = write(tmp_path, f'[daemon]\nenv_file = "{env_file}"\n')
    assert refusal(path) == f"{env_file} line 2: expected NAME=value, got 'this is not a setting'"
    env_file.write_text("BATCH_SIZE=five\n")
    assert refusal(path) == (
        f"batch.batch_size must be an integer from 1 to 100000, got 'five' "
        f"(from env BATCH_SIZE from {env_file} line 1)"
    )
    env_file.write_text("BATCH_SIZ=5\n")
    assert load(path, {}, {}).warnings == (
        f"ignored unknown variable BATCH_SIZ in env BATCH_SIZ from {env_file} line 1 "
        "(did you mean 'BATCH_SIZE'?)",
    )


def test_a_missing_env_file_is_only_a_warning(tmp_path: Path) -> None:
    """The env file is optional, as in the systemd unit: a missing one is noted, not fatal."""
    path = write(tmp_path, f'[daemon]\nenv_file = "{tmp_path / "absent"}"\n')
    config = load(path, {}, {})
    assert config.env_file is not None and "does not exist" in config.warnings[0]


def test_renamed_keys_say_what_replaced_them(tmp_path: Path) -> None:
    """Keys of earlier versions are refused with the name that replaced them."""
    path = write(tmp_path, "[output]\ndir = 'x'\n[daemon]\nstatus_address = ''\n")
    message = refusal(path)
    assert "'output.dir' in" in message and "is now 'daemon.output_dir'" in message
    assert "is now 'daemon.status_addr'" in message


def test_the_prior_is_a_decision_setting_of_the_built_in_evaluator_only(tmp_path: Path) -> None:
    """`strategy.prior` counts among the settings whose change lifts a halt while the built-in
    evaluator decides (under either of its names), and not for a strategy plugin, which reads
    no prior; `batch.evaluator` and the `[risk]` keys count for both."""
    builtin = load(None, {}, {}).decision_settings()
    assert builtin["strategy.prior"] == "fixed" and "risk.min_edge" in builtin
    by_module = load(None, {"BATCH_EVALUATOR": "pomabotd.domain.evaluate:evaluate_market"},
                     {}).decision_settings()
    assert "strategy.prior" in by_module
    plugin = load(None, {"BATCH_EVALUATOR": "json:dumps"}, {}).decision_settings()
    assert "strategy.prior" not in plugin
    assert plugin["batch.evaluator"] == "json:dumps" and "risk.min_edge" in plugin
    assert is_builtin_evaluator("pomabotd:evaluate_market")
    assert not is_builtin_evaluator("json:dumps")


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("BATCH_EXECUTOR", "cluster", "batch.executor"),
        ("BATCH_DASK_SCHEDULER", "http://10.0.0.1:8786", "batch.dask_scheduler"),
        ("BATCH_DASK_SCHEDULER", "tcp://10.0.0.1", "batch.dask_scheduler"),
        ("BATCH_DASK_SCHEDULER", "tcp://10.0.0.1:99999", "batch.dask_scheduler"),
        ("BATCH_DASK_SHARED_FILES", "maybe", "batch.dask_shared_files"),
    ],
)
def test_a_bad_executor_setting_names_its_key_and_variable(
    variable: str, value: str, key: str
) -> None:
    """An executor that is neither local nor dask, a scheduler that is not `local` or a
    tcp:// or tls:// address with a port, or a shared-files flag that is no boolean, is
    refused naming the key and the variable it came from."""
    with pytest.raises(ConfigError) as info:
        load(None, {variable: value})
    assert key in str(info.value) and variable in str(info.value)


def test_dask_settings_are_read_from_the_environment() -> None:
    """A Dask scheduler address (tcp or tls) and the shared-files flag are taken as given."""
    for address in ("tcp://10.0.0.1:8786", "tls://scheduler.internal:8786", "local"):
        config = load(None, {"BATCH_EXECUTOR": "dask", "BATCH_DASK_SCHEDULER": address,
                             "BATCH_DASK_SHARED_FILES": "true"})
        assert (config.batch.executor, config.batch.dask_scheduler) == ("dask", address)
        assert config.batch.dask_shared_files is True
    assert load(None, {}).batch.executor == "local"
