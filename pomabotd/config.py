"""The configuration tree, in order of precedence: defaults < TOML file < environment < flags.

The environment is the process's, overridden by the `daemon.env_file` (lines `NAME=value`) for
the variables that file sets: a running daemon cannot see new environment variables, so that
file is what an operator edits before a reload.

`load` builds one frozen `Config` and records, for every key, which layer its value came from, so
`pomabotd config` can show it and every refusal can name the key and the source to fix. It is the
only code that looks at environment variables, and it takes them as an argument: loading has no
side effects beyond importing the evaluator, so a reload builds a whole new `Config` and the
caller swaps it in only if it loaded.

Every layer's value is checked, even one a later layer overrides: a bad line in the file is an
error now, not when someone removes the flag that hid it.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from msgspec import Struct

from pomabotd.domain.belief import PRIORS, Prior
from pomabotd.domain.models import RiskLimits
from pomabotd.domain.research import HaltRules
from pomabotd.errors import ConfigError
from pomabotd.files import open_regular
from pomabotd.redact import REDACTED, redact_secret_url, redact_url

__all__ = [
    "CONFIG_ENV_VAR",
    "DECODERS",
    "KERNELS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "NOTIFY_EVENTS",
    "NOTIFY_FORMATS",
    "SETTLE_S",
    "BatchConfig",
    "Config",
    "DaemonConfig",
    "LogConfig",
    "NotifyConfig",
    "SourcesConfig",
    "StrategyConfig",
    "default_config_path",
    "environ_for_reload",
    "is_builtin_evaluator",
    "key_table",
    "keys",
    "load",
    "resolve_evaluator",
]

#: Seconds a configuration file must stand still (the same in two reads this far apart) for
#: `pomabotd run` to apply it, at start and on every reload.
SETTLE_S: Final = 0.05

#: Names a config file when `--config` is not given.
CONFIG_ENV_VAR: Final = "POMABOTD_CONFIG"

#: `batch.kernel`: how the built-in evaluator runs, on numpy columns or market by market.
KERNELS: Final = ("columnar", "scalar")
#: `batch.decoder`: what decodes lines for the columnar kernel; `auto` takes the native decoder
#: where it is built (`pomabotd.engine.kernels.native`), else msgspec.
DECODERS: Final = ("auto", "native", "msgspec")
#: `batch.executor`: what runs the tasks, this machine's pool or a Dask cluster.
EXECUTORS: Final = ("local", "dask")

LOG_LEVELS: Final = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: Final = ("auto", "json", "text")
#: `notify.events`: what a webhook can be told. `open`/`close`: a paper position opened or
#: closed; `halt`/`resume`: the halt rules stopped or allowed opening again; `unhealthy`/
#: `recovered`: `/healthz` turned 503, or 200 again.
NOTIFY_EVENTS: Final = ("open", "close", "halt", "resume", "unhealthy", "recovered")
#: `notify.format`: the body posted: pomabotd's own JSON, or a Slack or Discord incoming
#: webhook's payload.
NOTIFY_FORMATS: Final = ("json", "slack", "discord")

_Kind = Literal["bool", "int", "float", "str", "strs"]


class BatchConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a cycle is run: the worker pool, chunking, time limits and the strategy plugin."""

    enabled: bool
    max_concurrency: int
    workers: int
    batch_size: int
    timeout_ms: int
    retry_attempts: int
    evaluator: str
    kernel: Literal["columnar", "scalar"]
    decoder: Literal["auto", "native", "msgspec"]
    executor: Literal["local", "dask"]
    dask_scheduler: str
    dask_shared_files: bool


class StrategyConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the built-in evaluator forms its beliefs: the range every market starts from."""

    prior: Prior


class SourcesConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where markets and signals come from, and how hard the network sources may try.

    `synthetic` needs no network and no file; `polymarket` and `feeds` fetch over HTTP within
    the deadlines, size caps and retry limits below.
    """

    markets: str
    signals: str
    synthetic_markets: int
    synthetic_news_quality: float
    seed: int
    polymarket_url: str
    polymarket_page_size: int
    polymarket_min_liquidity: float
    polymarket_max_markets: int
    save_snapshot: str
    feeds: tuple[str, ...]
    request_deadline_s: float
    max_response_mb: float
    retry_attempts: int
    retry_max_wait_s: float
    feed_max_kb: int
    feed_min_interval_s: float
    feed_concurrency: int
    news_memory: int


class NotifyConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where events are posted (`webhook_url`, "" for nowhere), which ones, in what format, and
    at most how many a minute."""

    webhook_url: str
    events: tuple[str, ...]
    format: Literal["json", "slack", "discord"]
    max_per_minute: int


class DaemonConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The long-running loop: where it writes, how often it cycles, how it is reached and
    stopped, and the environment file it rereads on reload."""

    output_dir: str
    interval_s: float
    status_addr: str
    status_token: str
    status_max_connections: int
    status_timeout_s: float
    env_file: str
    stop_timeout_s: float
    cycle_timeout_s: float
    cors_origins: tuple[str, ...]

    def status_endpoint(self) -> tuple[str, int] | None:
        """The (host, port) to serve status on, or None when the endpoint is switched off."""
        if not self.status_addr:
            return None
        host, port = _split_address(self.status_addr)
        return host, port


class LogConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The loguru level name (upper-cased), the line format, an optional log file, and the
    window within which a repeated line is counted instead of written (0: never)."""

    level: str
    format: str
    file: str
    repeat_window_s: float


class Config(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole effective configuration, with where each value came from.

    `provenance` maps every dotted key to `default`, `file:<path>`, `env:<VAR>`,
    `env-file:<path>:<line>` or `flag:<name>`. `warnings` holds what was ignored but looks
    like a mistake (an unknown `BATCH_*` variable), for the caller to log. `env_file` is the
    environment file that was read, if any, and `env_file_values` the values it gave the
    variables pomabotd reads (`BATCH_*`, `POMABOTD_*`).
    """

    batch: BatchConfig
    risk: RiskLimits
    strategy: StrategyConfig
    sources: SourcesConfig
    daemon: DaemonConfig
    log: LogConfig
    halt: HaltRules
    notify: NotifyConfig
    path: str | None
    provenance: dict[str, str]
    warnings: tuple[str, ...] = ()
    env_file: str | None = None
    env_file_values: dict[str, str] = {}

    def value(self, key: str) -> Any:
        """The value of one dotted key, e.g. `batch.workers`."""
        section, name = key.split(".", 1)
        return getattr(getattr(self, section), name)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every key with its value and source, JSON-ready, in documentation order, with no
        secret shown (`_shown`); `batch.decoder` also says which decoder that value runs
        (`runs`)."""
        described = {
            key: {"value": _shown(key, self.value(key)),
                  "source": self.provenance[key]}
            for key in _KEYS
        }
        from pomabotd.engine.kernels.native import decoder_in_use

        described["batch.decoder"]["runs"] = decoder_in_use(self.batch.decoder)
        return described

    def source_phrase(self, key: str) -> str:
        """Where the value of `key` came from, as a message says it: `the default`, `file
        /etc/pomabotd/pomabotd.toml`, `flag --out`, `env BATCH_SIZE` or `env BATCH_SIZE from
        /etc/pomabotd/env line 3`."""
        return _source_phrase(self.provenance[key], _KEYS[key].env)

    def risk_limits(self) -> RiskLimits:
        """The `risk.*` section as the domain's `RiskLimits`."""
        return self.risk

    def decision_settings(self) -> dict[str, str | int | float | bool]:
        """The keys that make the decisions (`[risk]`, `[strategy]` and `batch.evaluator`)
        with their values: a change of any of them lifts a halt (`pomabotd.domain.halt`).

        `[strategy]` shapes the built-in evaluator's beliefs only: a strategy plugin gets
        `evaluate_market`'s arguments and decides its own prior, so with a plugin a change of
        `strategy.prior` changes no decision and is left out.
        """
        builtin = is_builtin_evaluator(self.batch.evaluator)
        return {
            key: self.value(key)
            for key in _KEYS
            if (key.split(".", 1)[0] in _DECISION_SECTIONS or key == "batch.evaluator")
            and (builtin or not key.startswith(_BUILTIN_ONLY))
        }


class _Key(NamedTuple):
    """One key: its type, default, environment variable, and what it accepts.

    Numbers carry their `bounds`; the requirement that messages and documentation quote is
    worded from them, so the bounds live here and nowhere else.
    """

    kind: _Kind
    default: Any
    env: str | None
    requirement: str
    check: Callable[[Any], bool] | None = None
    bounds: _Bounds | None = None
    #: A value never shown: not by `describe`, not in an error message.
    secret: bool = False


class _Bounds(NamedTuple):
    """The range a number must lie in; `*_open` excludes that end. `high_note` words a bound
    computed on this machine (`4 x the CPUs this process may use`), so that what is written
    about it holds on every machine; a refusal adds its value here."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    high_note: str = ""

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int | float):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def phrase(self) -> str:
        """`from 1 to 100000`, `> 0 and <= 3600`: how a requirement states the range."""
        low, high = _number(self.low), self.high_note or _number(self.high)
        if not (self.low_open or self.high_open):
            return f"from {low} to {high}"
        return (f"{'>' if self.low_open else '>='} {low} and "
                f"{'<' if self.high_open else '<='} {high}")


def _number(value: float) -> str:
    """A bound as people write it: 100000, 0.5, 1000000000000."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _int(default: Any, env: str | None, low: int, high: int, unit: str = "",
         high_note: str = "") -> _Key:
    """An integer key from `low` to `high`, both included."""
    bounds = _Bounds(low, high, high_note=high_note)
    return _Key("int", default, env, _requirement("an integer", bounds, unit), None, bounds)


def _num(default: float, env: str | None, low: float, high: float, unit: str = "", *,
         low_open: bool = False, high_open: bool = False) -> _Key:
    """A number key within `low` and `high` (each excluded when `*_open`)."""
    bounds = _Bounds(low, high, low_open, high_open)
    return _Key("float", default, env, _requirement("a number", bounds, unit), None, bounds)


def _requirement(noun: str, bounds: _Bounds, unit: str) -> str:
    return f"{noun} {bounds.phrase()}" + (f" ({unit})" if unit else "")


def _default_workers() -> int:
    """The CPUs this process may run on (a cpuset or container limit counts), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(address)
    port = int(port_text)
    if port > 65535:
        raise ValueError(address)
    return host.removeprefix("[").removesuffix("]"), port


def _valid_address(address: str) -> bool:
    if not address:
        return True
    try:
        _split_address(address)
    except ValueError:
        return False
    return True


def _valid_origin(origin: str) -> bool:
    """`*`, or an origin as a browser sends it: `scheme://host[:port]`, no path, no slash."""
    if origin == "*":
        return True
    scheme, sep, rest = origin.partition("://")
    host, _, port = rest.rpartition(":") if rest.rpartition(":")[2].isdigit() else (rest, "", "")
    return (bool(sep) and scheme in ("http", "https") and bool(host)
            and not any(char in rest for char in "/?#@ *") and rest == rest.lower()
            and (not port or 0 < int(port) < 65536))


def _valid_url(url: str) -> bool:
    scheme, sep, rest = url.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest.strip("/"))


def _valid_scheduler(address: str) -> bool:
    """`local`, or `tcp://host:port` / `tls://host:port` with a port from 1 to 65535."""
    if address == "local":
        return True
    scheme, sep, rest = address.partition("://")
    host, colon, port = rest.rpartition(":")
    return (bool(sep) and scheme in ("tcp", "tls") and bool(colon) and bool(host.strip("[]"))
            and "/" not in rest and port.isdigit() and 0 < int(port) < 65536)


def _valid_token(token: str) -> bool:
    """Empty, or 16 to 512 printable ASCII characters without spaces (a header value)."""
    return token == "" or (
        _MIN_TOKEN <= len(token) <= _MAX_TOKEN and all("!" <= char <= "~" for char in token)
    )


def _shown(key: str, value: Any) -> Any:
    """A value as `describe` shows it: a secret key's (`daemon.status_token`) as `***`, a URL
    that is a secret as a whole by its own rule (`_SHOWN`), any other URL without its
    password and key-like query values."""
    if _KEYS[key].secret:
        return REDACTED if value else ""
    special = _SHOWN.get(key)
    if special is not None:
        return special(value)
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, tuple):
        return tuple(redact_url(item) if isinstance(item, str) else item for item in value)
    return value


def _valid_evaluator_spec(spec: str) -> bool:
    module, sep, attr = spec.partition(":")
    return bool(sep and module.strip() and attr.strip() and ":" not in attr)


_AUTO: Final = object()  # a default computed at load time
#: The longest `daemon.stop_timeout_s`: a stop that takes longer is no stop an operator (or
#: systemd's TimeoutStopSec=, 90 s by default) waits for.
_MAX_STOP_TIMEOUT_S: Final = 300.0
#: Workers per CPU at most: past a few per CPU, more workers only cost memory (tens of MB
#: each) and start-up time, and do not evaluate faster.
_WORKERS_PER_CPU: Final = 4
#: Money figures (USD) at most: far above any paper portfolio, far below where cents stop
#: being exact in a float.
_MAX_USD: Final = 1e12
_DAY_S: Final = 86400.0
_HOUR_S: Final = 3600.0
#: Feeds at most: each is fetched every cycle it is due.
_MAX_FEEDS: Final = 1000
#: Origins `daemon.cors_origins` may list.
_MAX_ORIGINS: Final = 100
#: Notifications a minute at most: Slack accepts about one message a second per webhook.
_MAX_NOTIFY_PER_MINUTE: Final = 60
#: `daemon.status_token` lengths: long enough to be no guess, short enough for a header.
_MIN_TOKEN: Final = 16
_MAX_TOKEN: Final = 512

#: Every key, in documentation order. Keys with an `env` read that variable (above the file,
#: below the flags).
#: Every number has both bounds: a value that could exhaust the machine (memory, processes, a
#: wait of days) or would fail every cycle (a negative seed, a cap or deadline no real response
#: meets) is refused when the configuration is loaded.
_KEYS: Final[dict[str, _Key]] = {
    "batch.enabled": _Key("bool", True, "BATCH_MODE_ENABLED", "true or false"),
    "batch.max_concurrency": _int(50, "BATCH_MAX_CONCURRENCY", 1, 1000),
    "batch.workers": _int(
        _AUTO, "BATCH_WORKERS", 0, _WORKERS_PER_CPU * _default_workers(),
        high_note=f"{_WORKERS_PER_CPU} x the CPUs this process may use",
    ),
    "batch.batch_size": _int(100, "BATCH_SIZE", 1, 100_000),
    "batch.timeout_ms": _int(5000, "BATCH_TIMEOUT_MS", 1, 600_000, "milliseconds"),
    "batch.retry_attempts": _int(2, "BATCH_RETRY_ATTEMPTS", 0, 10),
    "batch.evaluator": _Key(
        "str",
        "pomabotd:evaluate_market",
        "BATCH_EVALUATOR",
        "of the form 'module:function'",
        _valid_evaluator_spec,
    ),
    "batch.kernel": _Key(
        "str",
        "columnar",
        "BATCH_KERNEL",
        "'columnar' or 'scalar'",
        lambda v: v in KERNELS,
    ),
    "batch.decoder": _Key(
        "str",
        "auto",
        "BATCH_DECODER",
        "'auto', 'native' or 'msgspec'",
        lambda v: v in DECODERS,
    ),
    "batch.executor": _Key(
        "str", "local", "BATCH_EXECUTOR", "'local' or 'dask'", lambda v: v in EXECUTORS
    ),
    "batch.dask_scheduler": _Key(
        "str",
        "local",
        "BATCH_DASK_SCHEDULER",
        "'local' or a scheduler address, tcp://host:port or tls://host:port",
        _valid_scheduler,
    ),
    "batch.dask_shared_files": _Key("bool", False, "BATCH_DASK_SHARED_FILES", "true or false"),
    "risk.min_edge": _num(15.0, "BATCH_MIN_EDGE", 0, 100, "points"),
    "risk.max_portfolio_risk": _num(20.0, "BATCH_MAX_PORTFOLIO_RISK", 0, 100, "% of equity"),
    "risk.require_diversification": _Key(
        "bool", True, "BATCH_REQUIRE_DIVERSIFICATION", "true or false"
    ),
    "risk.max_positions_per_category": _int(2, "BATCH_MAX_POSITIONS_PER_CATEGORY", 1, 10_000),
    "risk.stop_loss_percent": _num(
        5.0, "BATCH_STOP_LOSS_PERCENT", 0, 100, "%", low_open=True, high_open=True
    ),
    "risk.profit_target_percent": _num(
        10.0, "BATCH_PROFIT_TARGET_PERCENT", 0, 10_000, "%", low_open=True
    ),
    "risk.kelly_fraction": _num(0.25, None, 0, 1, low_open=True),
    "risk.max_position_percent": _num(5.0, None, 0, 100, "% of equity", low_open=True),
    "risk.min_position_usd": _num(1.0, None, 0, _MAX_USD, "USD"),
    "risk.portfolio_value": _num(10000.0, None, 0, _MAX_USD, "USD", low_open=True),
    "strategy.prior": _Key("str", "fixed", None, "'fixed' or 'market'", lambda v: v in PRIORS),
    "sources.markets": _Key(
        "str",
        "synthetic",
        None,
        "a JSONL path, 'synthetic', 'polymarket' or 'gamma:PATH'",
        lambda v: bool(v.strip()),
    ),
    "sources.signals": _Key("str", "", None, "a JSONL path or empty"),
    "sources.synthetic_markets": _int(1000, None, 1, 2_000_000),
    "sources.synthetic_news_quality": _num(0.6, None, 0.0, 1.0, "the share of informative news"),
    "sources.seed": _int(7, None, 0, 2**32 - 1),
    "sources.polymarket_url": _Key(
        "str",
        "https://gamma-api.polymarket.com",
        None,
        "an http:// or https:// URL",
        _valid_url,
    ),
    "sources.polymarket_page_size": _int(100, None, 1, 500),
    "sources.polymarket_min_liquidity": _num(0.0, None, 0, _MAX_USD, "USD; 0: no filter"),
    "sources.polymarket_max_markets": _int(100000, None, 1, 1_000_000),
    "sources.save_snapshot": _Key("str", "", None, "a file path or empty"),
    "sources.feeds": _Key(
        "strs", (), None, f"a list of at most {_MAX_FEEDS} feed URLs or file paths",
        lambda v: len(v) <= _MAX_FEEDS and all(x.strip() for x in v),
    ),
    "sources.request_deadline_s": _num(30.0, None, 1, _HOUR_S, "seconds"),
    "sources.max_response_mb": _num(64.0, None, 1, 1024, "MB"),
    "sources.retry_attempts": _int(4, None, 0, 10),
    "sources.retry_max_wait_s": _num(30.0, None, 0, _HOUR_S, "seconds"),
    "sources.feed_max_kb": _int(2048, None, 16, 65_536, "KB"),
    "sources.feed_min_interval_s": _num(300.0, None, 0, _DAY_S, "seconds"),
    "sources.feed_concurrency": _int(4, None, 1, 64),
    "sources.news_memory": _int(10000, None, 1, 1_000_000),
    "daemon.output_dir": _Key(
        "str", "pomabotd-output", None, "a directory path", lambda v: bool(v)
    ),
    "daemon.interval_s": _num(60.0, None, 0, _DAY_S, "seconds", low_open=True),
    "daemon.status_addr": _Key(
        "str", "127.0.0.1:8787", None, "'host:port' or empty", _valid_address
    ),
    "daemon.status_token": _Key(
        "str", "", "POMABOTD_STATUS_TOKEN",
        f"empty, or {_MIN_TOKEN} to {_MAX_TOKEN} printable characters without spaces",
        _valid_token, secret=True,
    ),
    "daemon.status_max_connections": _int(64, None, 1, 10_000),
    "daemon.status_timeout_s": _num(10.0, None, 0, 300, "seconds", low_open=True),
    "daemon.env_file": _Key("str", "", None, "a file path or empty"),
    "daemon.stop_timeout_s": _num(
        10.0, None, 0, _MAX_STOP_TIMEOUT_S,
        "seconds; keep it below the unit's TimeoutStopSec=", low_open=True,
    ),
    "daemon.cycle_timeout_s": _num(600.0, None, 1, _DAY_S, "seconds"),
    "daemon.cors_origins": _Key(
        "strs", (), None,
        f"a list of at most {_MAX_ORIGINS} origins ('https://host' or 'http://host:port', "
        "no path), or [\"*\"] for any",
        lambda v: len(v) <= _MAX_ORIGINS and all(_valid_origin(x) for x in v),
    ),
    "log.level": _Key("str", "INFO", None, "one of " + ", ".join(LOG_LEVELS)),
    "log.format": _Key(
        "str", "auto", "POMABOTD_LOG_FORMAT", "one of " + ", ".join(LOG_FORMATS),
        lambda v: v in LOG_FORMATS,
    ),
    "log.file": _Key("str", "", None, "a file path or empty"),
    "log.repeat_window_s": _num(10.0, None, 0, 3600, "seconds; 0 writes every line"),
    "halt.coverage_tolerance": _num(15.0, None, 0, 100, "points"),
    "halt.min_resolved": _int(20, None, 1, 1_000_000),
    "halt.high_confidence": _num(80.0, None, 0, 100),
    "halt.min_per_bucket": _int(10, None, 1, 1_000_000),
    "halt.invalidation_streak": _int(3, None, 1, 1_000_000),
    "notify.webhook_url": _Key(
        "str", "", "POMABOTD_NOTIFY_WEBHOOK_URL", "an http:// or https:// URL or empty",
        lambda v: v == "" or _valid_url(v),
    ),
    "notify.events": _Key(
        "strs", NOTIFY_EVENTS, None,
        "a list of distinct events among " + ", ".join(f"'{e}'" for e in NOTIFY_EVENTS),
        lambda v: set(v) <= set(NOTIFY_EVENTS) and len(set(v)) == len(v),
    ),
    "notify.format": _Key(
        "str", "json", None,
        ", ".join(f"'{f}'" for f in NOTIFY_FORMATS[:-1]) + f" or '{NOTIFY_FORMATS[-1]}'",
        lambda v: v in NOTIFY_FORMATS,
    ),
    "notify.max_per_minute": _int(20, None, 1, _MAX_NOTIFY_PER_MINUTE),
}
#: How `describe` shows the keys whose value must not be shown as it is.
_SHOWN: Final[dict[str, Callable[[Any], Any]]] = {"notify.webhook_url": redact_secret_url}



#: Sections whose keys make the decisions; see `Config.decision_settings`.
_DECISION_SECTIONS: Final = ("risk", "strategy")
#: Keys only the built-in evaluator reads: a plugin decides without them.
_BUILTIN_ONLY: Final = "strategy."

_ENV_TO_KEY: Final = {spec.env: key for key, spec in _KEYS.items() if spec.env}
_SECTIONS: Final = tuple(dict.fromkeys(key.split(".", 1)[0] for key in _KEYS))
_SECTION_TYPES: Final[dict[str, type[Struct]]] = {
    "batch": BatchConfig,
    "risk": RiskLimits,
    "strategy": StrategyConfig,
    "sources": SourcesConfig,
    "daemon": DaemonConfig,
    "log": LogConfig,
    "halt": HaltRules,
    "notify": NotifyConfig,
}
#: How the command line spells the flags it passes; other keys are shown by their dotted name.
_FLAG_NAMES: Final = {
    "sources.markets": "--markets",
    "sources.signals": "--signals",
    "sources.polymarket_url": "--polymarket-url",
    "sources.save_snapshot": "--save-snapshot",
    "daemon.output_dir": "--out",
    "daemon.interval_s": "--interval",
    "daemon.status_addr": "--status-addr",
    "daemon.env_file": "--env-file",
}
#: Keys an earlier version read, with the key that replaced them.
_RENAMED: Final = {
    "output.dir": "daemon.output_dir",
    "daemon.status_address": "daemon.status_addr",
}
#: Environment variables pomabotd reads besides the `BATCH_*` ones.
_OWN_PREFIX: Final = "POMABOTD_"
_OWN_VARIABLES: Final = " and ".join(
    ", ".join(var for var in _ENV_TO_KEY if var.startswith(_OWN_PREFIX)).rsplit(", ", 1)
)
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def keys() -> dict[str, str | None]:
    """Every dotted key with its environment variable (None when it has none)."""
    return {key: spec.env for key, spec in _KEYS.items()}


def key_table() -> dict[str, _Key]:
    """Every dotted key's `kind`, `default`, `env` and `requirement`, in documentation order:
    the configuration reference is generated from it. A default that is no plain value (not a
    bool, number, string or tuple) is computed when the configuration loads."""
    return dict(_KEYS)


def _read_env_file(
    path: Path, errors: list[str], warnings: list[str], settle_s: float = 0.0
) -> dict[str, tuple[str, int]]:
    """`NAME=value` lines of the env file, each with its line number.

    `#` comments and blank lines are skipped, `export ` and matching quotes around the value
    are accepted as systemd's `EnvironmentFile=` accepts them. A missing file reads as empty
    (the unit marks it optional); any other line is an error naming the file and line.
    With `settle_s`, a file that changed while it was read is an error (`_read_settled`).
    """
    try:
        text = _read_settled(path, settle_s).decode("utf-8")
    except FileNotFoundError:
        warnings.append(f"env file {path} (daemon.env_file) does not exist; none read")
        return {}
    except _ChangedWhileRead:
        errors.append(f"env file {path} (daemon.env_file) {_CHANGED}")
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"env file {path} (daemon.env_file) cannot be read: {exc}")
        return {}
    found: dict[str, tuple[str, int]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name.isidentifier():
            errors.append(f"{path} line {number}: expected NAME=value, got {raw.strip()!r}")
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        found[name] = (value, number)
    return found


def environ_for_reload(config: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """The process environment every later reload should read, given the `config` a daemon
    started with: without the `BATCH_*`/`POMABOTD_*` variables its env file set to the very
    same value.

    systemd's `EnvironmentFile=` copies the env file into the process environment at start,
    where a deleted line would live on for the process's whole life; so a variable that came
    from the env file is left to the env file, and deleting its line brings back the TOML
    value or the default at the next reload. A variable the process environment set to
    another value (the unit's `Environment=`, a shell) still counts.
    """
    inherited = {
        var for var, value in config.env_file_values.items() if environ.get(var) == value
    }
    return {var: value for var, value in environ.items() if var not in inherited}


def default_config_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read without `--config`: `$POMABOTD_CONFIG`, else none.

    There is deliberately no implicit search path, so what a daemon runs with is always visible
    in its command line or environment. `environ` defaults to `os.environ`.
    """
    env = os.environ if environ is None else environ
    value = env.get(CONFIG_ENV_VAR, "").strip()
    return Path(value) if value else None


def is_builtin_evaluator(spec: str) -> bool:
    """Whether `spec` names pomabotd's own evaluator, under any import path (`pomabotd:
    evaluate_market`, `pomabotd.domain.evaluate:evaluate_market`): only it reads
    `strategy.prior` and `batch.kernel`. A spec that cannot be imported is no built-in."""
    from pomabotd.domain.evaluate import evaluate_market

    try:
        return resolve_evaluator(spec) is evaluate_market
    except ConfigError:
        return False


def resolve_evaluator(spec: str) -> Callable[..., Any]:
    """Import the `module:function` strategy plugin; workers call this again after a fork/spawn.

    Raises ConfigError saying what failed (the module import, the attribute, not callable).
    """
    module_name, sep, attr_path = spec.partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    if not sep or not module_name or not attr_path:
        raise ConfigError(f"evaluator {spec!r} is not of the form 'module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # a plugin may fail to import in any way; report it all the same
        raise ConfigError(
            f"cannot import module {module_name!r} of evaluator {spec!r} ({exc})"
        ) from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(
                f"module {module_name!r} has no attribute {attr_path!r} (evaluator {spec!r})"
            ) from exc
    if not callable(target):
        raise ConfigError(f"{attr_path!r} in {module_name!r} is not callable (evaluator {spec!r})")
    return target  # type: ignore[no-any-return]


def load(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    *,
    flag_names: Mapping[str, str] | None = None,
    settle_s: float = 0.0,
    import_evaluator: bool = True,
) -> Config:
    """Build the effective configuration from the four layers, or raise ConfigError.

    `path` is the `--config` value; without it `$POMABOTD_CONFIG` (read from `environ`) names
    the file, and without either there is no file. `environ` is the process environment (pass
    `os.environ`; None means empty). `flags` maps dotted keys to command-line values; None values
    were not given; `flag_names` spells a flag as the command gave it where it differs from
    the usual spelling (`status --addr` sets `daemon.status_addr`). Every problem found is
    reported at once. With `settle_s` (the daemon's `SETTLE_S`), the TOML
    file and the env file are each read twice that many seconds apart and refused if they
    changed meanwhile: a file being rewritten in place is never half applied. Without
    `import_evaluator` the strategy plugin `batch.evaluator` names is not imported (a command
    that only reads a daemon's files or asks its address never runs it).
    """
    env: Mapping[str, str] = {} if environ is None else environ
    errors: list[str] = []
    values: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    for key, spec in _KEYS.items():
        values[key] = _default_workers() if spec.default is _AUTO else spec.default
        provenance[key] = "default"

    file_path, file_origin = _config_file(path, env)
    if file_path is not None:
        table = _read_toml(file_path, file_origin, settle_s)
        shown = str(file_path)
        for key, raw in _file_items(table, shown, errors):
            _apply(key, raw, False, f"file:{shown}", values, provenance, errors)

    warnings: list[str] = []
    # The env file is a layer below the flags, yet `--env-file` names it: apply that flag
    # first (the flags are applied again below, in their turn).
    given_env_file = (flags or {}).get("daemon.env_file")
    if given_env_file is not None:
        _apply("daemon.env_file", given_env_file, True, "flag:--env-file", values, provenance,
               errors)
    env_file = values["daemon.env_file"]
    from_file = (
        _read_env_file(Path(env_file), errors, warnings, settle_s) if env_file else {}
    )
    layered: list[tuple[str, str, str]] = [
        (var, raw, f"env:{var}") for var, raw in env.items() if var not in from_file
    ]
    layered += [
        (var, raw, f"env-file:{env_file}:{number}") for var, (raw, number) in from_file.items()
    ]
    for var, raw, source in layered:
        env_key = _ENV_TO_KEY.get(var)
        if env_key is None:
            if var.startswith("BATCH_") or (
                var.startswith(_OWN_PREFIX) and source.startswith("env-file:")
            ):
                warnings.append(_unknown_env_warning(var, source))
            elif source.startswith("env-file:"):
                warnings.append(
                    f"ignored {var} in {_source_phrase(source, var)}: pomabotd reads only "
                    f"BATCH_* variables and {_OWN_VARIABLES} there"
                )
            continue
        if not raw.strip():
            continue  # an empty variable is treated as unset
        _apply(env_key, raw, True, source, values, provenance, errors)

    for key, raw in (flags or {}).items():
        if raw is None:
            continue
        if key not in _KEYS:
            errors.append(f"unknown configuration key {key!r} given as a flag")
            continue
        source = f"flag:{(flag_names or {}).get(key) or _FLAG_NAMES.get(key, key)}"
        _apply(key, raw, isinstance(raw, str), source, values, provenance, errors)

    if import_evaluator and not any(e.startswith("batch.evaluator ") for e in errors):
        try:
            resolve_evaluator(values["batch.evaluator"])
        except ConfigError as exc:
            source = _source_phrase(provenance["batch.evaluator"], "BATCH_EVALUATOR")
            errors.append(f"batch.evaluator: {exc} (from {source})")
    if values["batch.executor"] == "dask":
        missing = _missing_dask()
        if missing is not None:
            source = _source_phrase(provenance["batch.executor"], "BATCH_EXECUTOR")
            errors.append(
                f'batch.executor = "dask" (from {source}) needs the dask extra, which is not '
                f"installed ({missing}): pip install 'pomabotd[dask]'"
            )

    if values["batch.decoder"] == "native" and not any(
            e.startswith("batch.decoder ") for e in errors):
        from pomabotd.engine.kernels.native import decoder_in_use

        try:
            decoder_in_use("native")
        except ConfigError as exc:
            source = _source_phrase(provenance["batch.decoder"], "BATCH_DECODER")
            errors.append(f"{exc} (from {source})")

    if "*" in values["daemon.cors_origins"] and values["daemon.status_token"]:
        errors.append(
            'daemon.cors_origins ["*"] (from '
            f"{_source_phrase(provenance['daemon.cors_origins'])}) would let every site's "
            "scripts ask for the JSON API while daemon.status_token (from "
            f"{_source_phrase(provenance['daemon.status_token'], 'POMABOTD_STATUS_TOKEN')}) is "
            "required: list the origins allowed instead"
        )

    if errors:
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(
            f"{len(errors)} configuration errors:\n" + "\n".join(f"  - {e}" for e in errors)
        )

    sections: dict[str, Any] = {}
    for section, struct_type in _SECTION_TYPES.items():
        prefix = section + "."
        fields = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
        sections[section] = struct_type(**fields)
    return Config(
        **sections,
        path=None if file_path is None else str(file_path),
        provenance=provenance,
        warnings=tuple(warnings),
        env_file=env_file or None,
        env_file_values={
            var: raw for var, (raw, _) in from_file.items()
            if var.startswith(("BATCH_", _OWN_PREFIX))
        },
    )


def _missing_dask() -> str | None:
    """Why the Dask executor cannot be loaded, or None when it can."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def _config_file(
    path: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> tuple[Path | None, str]:
    if path is not None:
        return Path(path), "--config"
    return default_config_path(env), f"env {CONFIG_ENV_VAR}"


def _read_toml(path: Path, origin: str, settle_s: float = 0.0) -> dict[str, Any]:
    try:
        return tomllib.loads(_read_settled(path, settle_s).decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found (from {origin})") from exc
    except _ChangedWhileRead:
        raise ConfigError(f"config file {path} (from {origin}) {_CHANGED}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read (from {origin}): {exc}") from exc


class _ChangedWhileRead(Exception):
    """The file was not the same in two reads `settle_s` apart."""


_CHANGED: Final = (
    "changed while it was read, so it may be half-written; nothing of it is used. Replace "
    "the file atomically (write the new one beside it, then rename it over the old one) "
    "and reload again"
)


def _read_settled(path: Path, settle_s: float) -> bytes:
    """The bytes of `path`, once it stood still: read, then after `settle_s` read again; the
    two reads must agree in content and in the file's identity, size and modification and
    change times (`_ChangedWhileRead` otherwise). A file rewritten in place passes through
    truncated states that are often valid TOML with keys missing (their defaults then apply),
    so a reload must not take whatever one read happens to see. `settle_s` 0 reads once. A
    file gone at the second read changed too (an env file read as missing would apply
    without its settings).
    """
    first, before = _read_with_stat(path)
    if settle_s <= 0:
        return first
    time.sleep(settle_s)
    try:
        second, after = _read_with_stat(path)
    except FileNotFoundError:
        raise _ChangedWhileRead(path) from None
    if first != second or before != after:
        raise _ChangedWhileRead(path)
    return first


def _read_with_stat(path: Path) -> tuple[bytes, tuple[int, ...]]:
    with open(open_regular(path), "rb") as handle:  # a FIFO is refused, not waited on
        status = os.fstat(handle.fileno())
        data = handle.read()
        after = os.fstat(handle.fileno())
    identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
                status.st_ctime_ns)
    if identity != (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns,
                    after.st_ctime_ns) or len(data) != status.st_size:
        raise _ChangedWhileRead(path)
    return data, identity


def _file_items(table: dict[str, Any], shown: str, errors: list[str]) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for section, body in table.items():
        if section not in _SECTIONS:
            renamed = {f"{section}.{name}" for name in body} & set(_RENAMED) if isinstance(
                body, dict) else set()
            if renamed:
                errors += [f"key {k!r} in {shown} is now {_RENAMED[k]!r}" for k in sorted(renamed)]
            elif isinstance(body, dict):
                errors.append(
                    f"unknown section [{section}] in {shown}{_suggest(section, _SECTIONS)}"
                )
            else:
                errors.append(f"unknown key {section!r} in {shown}{_suggest(section, _KEYS)}")
            continue
        if not isinstance(body, dict):
            errors.append(f"{section} must be a table ([{section}]) in {shown}")
            continue
        for name, raw in body.items():
            key = f"{section}.{name}"
            if key in _RENAMED:
                errors.append(f"key {key!r} in {shown} is now {_RENAMED[key]!r}")
            elif key not in _KEYS:
                errors.append(f"unknown key {key!r} in {shown}{_suggest(key, _KEYS)}")
            else:
                items.append((key, raw))
    return items


def _suggest(word: str, choices: Any) -> str:
    candidates = list(choices)
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not matches:
        # A key put in the wrong section, or written without one: match on the bare name.
        bare = word.rsplit(".", 1)[-1]
        matches = [c for c in candidates if c.rsplit(".", 1)[-1] == bare][:1]
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _unknown_env_warning(var: str, source: str) -> str:
    hint = _suggest(var, _ENV_TO_KEY)
    if source.startswith("env-file:"):
        return f"ignored unknown variable {var} in {_source_phrase(source, var)}{hint}"
    return f"ignored unknown environment variable {var}{hint}"


def _apply(
    key: str,
    raw: Any,
    from_text: bool,
    source: str,
    values: dict[str, Any],
    provenance: dict[str, str],
    errors: list[str],
) -> None:
    spec = _KEYS[key]
    source_phrase = _source_phrase(source, spec.env)
    try:
        value = _coerce(spec.kind, raw, from_text)
    except ValueError:
        errors.append(f"{key} must be {spec.requirement}, got {_quoted(spec, raw)} "
                      f"(from {source_phrase})")
        return
    if key == "log.level":
        value = value.strip().upper()
        ok = value in LOG_LEVELS
    elif key == "log.format":
        value = value.strip().lower()
        ok = value in LOG_FORMATS
    elif spec.bounds is not None:
        ok = value in spec.bounds
    else:
        ok = spec.check is None or spec.check(value)
    if not ok:
        here = (f" ({_number(spec.bounds.high)} here)"
                if spec.bounds is not None and spec.bounds.high_note else "")
        errors.append(
            f"{key} must be {spec.requirement}{here}, got {_quoted(spec, value)} "
            f"(from {source_phrase})"
        )
        return
    values[key] = value
    provenance[key] = source


def _quoted(spec: _Key, value: Any) -> str:
    """A refused value as an error message shows it: a secret by its length only."""
    if spec.secret:
        return f"a value of {len(value) if isinstance(value, str) else '?'} characters"
    return repr(value)


def _source_phrase(source: str, var: str | None = None) -> str:
    """A provenance as it reads in a message: `env:BATCH_SIZE` is `env BATCH_SIZE`, and
    `env-file:/etc/pomabotd/env:3` is `env BATCH_SIZE from /etc/pomabotd/env line 3`."""
    if source == "default":
        return "the default"
    if source.startswith("env-file:"):
        path, _, line = source.removeprefix("env-file:").rpartition(":")
        return f"env {var or 'variable'} from {path} line {line}"
    return source.replace(":", " ", 1)


def _coerce(kind: _Kind, raw: Any, from_text: bool) -> Any:
    """Turn a layer's raw value into the key's type; text (env, CLI) is parsed, TOML is not."""
    if from_text:
        if not isinstance(raw, str) or kind == "strs":
            raise ValueError(raw)
        text = raw.strip()
        if kind == "bool":
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(text)
        if kind == "float":
            number = float(text)
            if not math.isfinite(number):
                raise ValueError(raw)
            return number
        return text
    # bool is an int subclass: `workers = true` must not pass as 1.
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        raise ValueError(raw)
    if kind == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise ValueError(raw)
    if kind == "float":
        if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
            return float(raw)
        raise ValueError(raw)
    if kind == "strs":
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
        raise ValueError(raw)
    if isinstance(raw, str):
        return raw
    if isinstance(raw, os.PathLike):
        return os.fspath(raw)
    raise ValueError(raw)
