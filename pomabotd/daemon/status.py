"""The status endpoint, served on the daemon's own event loop (aiohttp).

    GET /healthz           200 with a JSON body while healthy, 503 with the reason otherwise;
                           the body says whether the halt rules stopped new positions, and why,
                           and the figures they judge as they stand
    GET /api/batch/config  the effective configuration, each key with its value and source
    GET /api/positions     open positions, equity, realized P&L, portfolio risk, and the
                           held markets missing from the last cycle's input (id -> since cycle)
    GET /metrics           Prometheus text exposition (prometheus-client, private registry)
    GET /                  the status page, and its updates (`pomabotd.daemon.http.page`)

Every answer carries the security headers, and the JSON API answers the origins of
`daemon.cors_origins` (`pomabotd.daemon.http.headers`).

The Prometheus figures are collected from `DaemonState` at scrape time, so each count lives in
one place. The counts of loading the input (failed fetches and refused records per source,
feed reads, news) come from each finished cycle's `sources` counts and refused records.

Every route is served under the same guards by being on the server, in this order:

1. `pomabotd.daemon.connections`: the connections are accepted within a bound
   (`daemon.status_max_connections`, at most a quarter of the open-file limit), the idlest
   (else the oldest of the page's update streams) closed to make room, and each must send a
   complete request within `daemon.status_timeout_s` of opening or of its last answer;
2. the security headers and CORS (`pomabotd.daemon.http.headers`); a CORS preflight is
   answered before the token is asked for, as a browser never sends it on one;
3. the token: with `daemon.status_token` set, every path but `/healthz`, the login form's
   `/login` and the page's static files answers 401 unless the request carries
   `Authorization: Bearer <token>` (compared in constant time) or the status page's session
   cookie (`pomabotd.daemon.http.session`); `/` answers with the login form.

The guard and the token read the running configuration at every connection or request, so a
reload applies at once. An address other machines can reach is warned about (`exposure_warning`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import math
import socket
from collections.abc import Iterator
from typing import Any, Final

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from pomabotd._version import __version__
from pomabotd.config import Config
from pomabotd.daemon.connections import ConnectionGuard, Handler
from pomabotd.daemon.descriptors import open_file_limit, status_budget
from pomabotd.daemon.http.headers import cors, security_headers
from pomabotd.daemon.http.page import PAGE_PATHS, STREAM_PATH, StatusPage
from pomabotd.daemon.http.session import has_session
from pomabotd.daemon.state import (
    FEED_RESULTS,
    NEWS_TOTALS,
    NOTIFY_RESULTS,
    TOTALS,
    DaemonState,
)

__all__ = [
    "METRIC_NAMES",
    "OPEN_PATHS",
    "PER_SOURCE_METRIC_NAMES",
    "StatusServer",
    "bind_status",
    "exposure_warning",
    "format_address",
]

#: Paths answered without the token: what a health check or `pomabotd status` asks, and the
#: status page's login form.
OPEN_PATHS: Final = frozenset({"/healthz", "/login"})
#: Seconds a request still being handled when the endpoint stops may take to finish.
_SHUTDOWN_S: Final = 2.0

_JSON: Final = msgspec.json.Encoder()

#: Every metric the endpoint exposes (counters without their `_total` suffix).
METRIC_NAMES: Final = (
    "pomabotd_build_info",
    "pomabotd_cycles",
    *(f"pomabotd_{name}" for name in TOTALS),
    "pomabotd_reloads",
    "pomabotd_feeds",
    *(f"pomabotd_{name}" for name in NEWS_TOTALS),
    "pomabotd_notifications",
    "pomabotd_last_cycle_duration_seconds",
    "pomabotd_last_cycle_throughput_markets_per_second",
    "pomabotd_last_cycle_peak_memory_bytes",
    "pomabotd_last_cycle_timestamp_seconds",
    "pomabotd_open_positions",
    "pomabotd_equity_usd",
    "pomabotd_realized_pnl_usd",
    "pomabotd_portfolio_risk_percent",
    "pomabotd_halted",
    "pomabotd_held_markets_missing",
    "pomabotd_halt_resolved_positions",
    "pomabotd_halt_coverage_observed_ratio",
    "pomabotd_halt_coverage_expected_ratio",
    "pomabotd_halt_confidence_positions",
    "pomabotd_halt_confidence_hit_ratio",
    "pomabotd_halt_invalidation_streak",
)
#: Counters labelled by source name, exposed once a source has something to count.
PER_SOURCE_METRIC_NAMES: Final = (
    "pomabotd_source_fetch_errors",
    "pomabotd_source_records_refused",
)

_HELP: Final = {
    "markets_evaluated": "Markets evaluated without error, over all cycles.",
    "markets_failed": "Markets whose evaluation failed after retries, over all cycles.",
    "markets_rejected": "Market input records refused by validation, over all cycles.",
    "timeouts": "Market evaluations that ran past batch.timeout_ms.",
    "retries": "Re-runs of failed or lost markets.",
    "worker_restarts": "Worker processes replaced after a crash or a kill.",
    "news_items": "News items read for the first time from the feeds.",
    "news_duplicates": "News items read again, through the same feed or another.",
    "news_signals": "Signals made from news, summed over cycles.",
}


def format_address(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def exposure_warning(config: Config) -> str | None:
    """What to warn about when `daemon.status_addr` is not a loopback address (other machines
    may reach it), or None."""
    endpoint = config.daemon.status_endpoint()
    if endpoint is None or _loopback(endpoint[0]):
        return None
    guarded = ("every path but /healthz requires daemon.status_token"
               if config.daemon.status_token else
               "anyone who reaches it can read the configuration, the positions and the "
               "metrics: set daemon.status_token (env POMABOTD_STATUS_TOKEN), or serve on "
               "127.0.0.1 behind a proxy")
    return (f"daemon.status_addr {config.daemon.status_addr!r} (from "
            f"{config.source_phrase('daemon.status_addr')}) is not a loopback address and "
            f"may be reached from other machines; {guarded}")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: what it resolves to may change


def bind_status(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), bound before anything else
    starts so that an address in use or not on this machine is refused first; OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _StateCollector(Collector):
    def __init__(self, state: DaemonState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state
        info = GaugeMetricFamily("pomabotd_build_info", "pomabotd version.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        cycles = CounterMetricFamily(
            "pomabotd_cycles", "Cycles run, by result.", labels=["result"]
        )
        cycles.add_metric(["ok"], state.cycles_ok)
        cycles.add_metric(["failed"], state.cycles_failed)
        yield cycles
        for name in TOTALS:
            yield CounterMetricFamily(f"pomabotd_{name}", _HELP[name], value=state.totals[name])
        reloads = CounterMetricFamily(
            "pomabotd_reloads", "Configuration reloads (SIGHUP), by result.", labels=["result"]
        )
        reloads.add_metric(["ok"], state.reloads_ok)
        reloads.add_metric(["failed"], state.reloads_failed)
        yield reloads
        yield _by_result(
            "pomabotd_feeds",
            "Feed reads by result: ok (read and parsed), unchanged (304 Not Modified, or read "
            "too recently), failed.",
            FEED_RESULTS, state.feeds,
        )
        for name in NEWS_TOTALS:
            yield CounterMetricFamily(f"pomabotd_{name}", _HELP[name], value=state.news[name])
        yield _by_result(
            "pomabotd_notifications",
            "Webhook notifications by result: sent, failed (after retries), rate_limited "
            "(dropped over notify.max_per_minute), queue_full (dropped, the queue full).",
            NOTIFY_RESULTS, state.notifications,
        )
        per_source = (
            ("pomabotd_source_fetch_errors",
             "Requests to a source (the market API, a feed) that failed for good, after their "
             "retries.", state.fetch_errors),
            ("pomabotd_source_records_refused",
             "Input records refused, by the source that gave them (unmappable or invalid).",
             state.refused),
        )
        for name, documentation, counts in per_source:
            family = CounterMetricFamily(name, documentation, labels=["source"])
            for source, count in sorted(counts.items()):
                family.add_metric([source], count)
            yield family
        report = state.last_report
        last = report.metrics if report is not None else None
        gauges: list[tuple[str, str, float]] = [
            ("pomabotd_last_cycle_duration_seconds", "Wall time of the last finished cycle.",
             last.processing_time_ms / 1000.0 if last else 0.0),
            ("pomabotd_last_cycle_throughput_markets_per_second",
             "Markets evaluated per second in the last finished cycle.",
             last.throughput_per_s if last else 0.0),
            ("pomabotd_last_cycle_peak_memory_bytes",
             "Peak summed PSS of pomabotd and its workers during the last finished cycle.",
             last.rss_mb * 1_048_576 if last else 0.0),
            ("pomabotd_last_cycle_timestamp_seconds",
             "When the last finished cycle ended, in seconds since the epoch.",
             last.finished_at.timestamp() if last else 0.0),
            ("pomabotd_open_positions", "Open paper positions.",
             float(len(state.portfolio.open_positions))),
            ("pomabotd_equity_usd", "Starting value plus realized P&L, in USD.",
             state.equity_usd()),
            ("pomabotd_realized_pnl_usd", "Realized P&L of closed positions, in USD.",
             state.portfolio.realized_pnl_usd),
            ("pomabotd_portfolio_risk_percent", "Open risk in % of equity.", state.risk_pct()),
            ("pomabotd_halted",
             "1 while the halt rules keep the daemon from opening positions, else 0.",
             1.0 if state.portfolio.halt.halted else 0.0),
            ("pomabotd_held_markets_missing",
             "Markets of open positions the last cycle's input lacked (left open, unmarked).",
             float(len(state.portfolio.missing_since))),
        ]
        figures = state.halt_figures()
        gauges += [
            ("pomabotd_halt_resolved_positions",
             "Resolved positions the halt rules judge (since they last started).",
             float(figures.resolved)),
            ("pomabotd_halt_coverage_observed_ratio",
             "Share of the judged resolved positions whose belief range covered the outcome "
             "(NaN before the first).", _ratio(figures.coverage_observed)),
            ("pomabotd_halt_coverage_expected_ratio",
             "Mean implied coverage of those positions' belief ranges (NaN before the first).",
             _ratio(figures.coverage_expected)),
            ("pomabotd_halt_invalidation_streak",
             "Invalidated exits in a row at the end of the judged closes.",
             float(figures.invalidation_streak)),
        ]
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)
        executor = GaugeMetricFamily(
            "pomabotd_executor_workers",
            "Workers of the executor that evaluates the cycles (0: in pomabotd's process), "
            "labelled with the executor (inline, local, dask).",
            labels=["executor"],
        )
        executor.add_metric([state.executor.name], float(state.executor.workers))
        yield executor
        yield GaugeMetricFamily(
            "pomabotd_last_cycle_peak_memory_covers_workers",
            "1 if the last cycle's peak memory includes the executor's workers, 0 if it is "
            "pomabotd's alone.",
            value=1.0 if report is None or report.memory_covers_workers else 0.0,
        )
        buckets = {"high": figures.high_confidence, "low": figures.low_confidence}
        threshold = f"{state.config.halt.high_confidence:g}"
        positions = GaugeMetricFamily(
            "pomabotd_halt_confidence_positions",
            f"Judged resolved positions opened at confidence >= {threshold} (high) or below.",
            labels=["bucket"],
        )
        hits = GaugeMetricFamily(
            "pomabotd_halt_confidence_hit_ratio",
            f"Share of them that won, by confidence bucket (>= {threshold}: high); NaN when "
            "empty.",
            labels=["bucket"],
        )
        for bucket, rate in buckets.items():
            positions.add_metric([bucket], float(rate.count))
            hits.add_metric([bucket], _ratio(rate.hit_rate))
        yield positions
        yield hits


class StatusServer:
    """The HTTP endpoint of one daemon; `start` serves it on a bound socket, `stop` closes it.

    `open_files` is the open-file limit the connection bound is a quarter of (the process's
    soft limit by default).
    """

    def __init__(self, state: DaemonState, *, open_files: int | None = None) -> None:
        self._state = state
        self._open_files = open_file_limit() if open_files is None else open_files
        self._registry = CollectorRegistry(auto_describe=True)
        self._registry.register(_StateCollector(state))
        self._page = StatusPage(state)
        self._guard = ConnectionGuard(self._limits, streams=frozenset({STREAM_PATH}))
        app = web.Application(middlewares=[
            self._guard.middleware, security_headers,
            cors(lambda: self._state.config.daemon.cors_origins), self._authorize,
        ])
        app.add_routes([
            web.get("/healthz", self._healthz),
            web.get("/api/batch/config", self._config),
            web.get("/api/positions", self._positions),
            web.get("/metrics", self._metrics),
            *self._page.routes(),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=_SHUTDOWN_S)
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self.address: str | None = None

    @property
    def connections(self) -> int:
        """Client connections held now."""
        return self._guard.open_connections

    async def start(self, sock: socket.socket) -> str:
        """Serve on a socket from `bind_status` (it is closed by `stop`); return its address."""
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        self._sock = sock
        self._accepting = asyncio.create_task(self._guard.serve(sock, server))
        host, port = sock.getsockname()[:2]
        self.address = format_address(host, port)
        return self.address

    async def stop(self) -> None:
        """Stop listening and close open connections (the page's streams end first)."""
        self._page.close()
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._guard.close_all()
        await self._runner.cleanup()

    def _limits(self) -> tuple[int, float]:
        daemon = self._state.config.daemon
        return (status_budget(daemon.status_max_connections, self._open_files),
                daemon.status_timeout_s)

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """401 without the bearer token or the page's session cookie, when a token is set, on
        every path but `OPEN_PATHS` and the static files; the page's own path answers the
        login form."""
        token = self._state.config.daemon.status_token
        if not token or request.path in OPEN_PATHS or request.path.startswith("/static/"):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if (scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        )) or has_session(request, token):
            return await handler(request)
        if request.path in PAGE_PATHS:
            return self._page.login_page()
        response = _json({"error": "this path needs 'Authorization: Bearer <token>' "
                                   "(daemon.status_token)"}, 401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="pomabotd"'
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        healthy, body = self._state.health()
        body["summary"] = self._state.summary()
        return _json(body, 200 if healthy else 503)

    async def _config(self, request: web.Request) -> web.Response:
        return _json(self._state.config.describe())

    async def _positions(self, request: web.Request) -> web.Response:
        state = self._state
        portfolio = state.portfolio
        return _json({
            "last_cycle_id": portfolio.last_cycle_id,
            "open_positions": portfolio.open_positions,
            "equity_usd": state.equity_usd(),
            "realized_pnl_usd": portfolio.realized_pnl_usd,
            "portfolio_risk_pct": round(state.risk_pct(), 4),
            "missing_markets": portfolio.missing_since,
        })

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _by_result(
    name: str, documentation: str, results: tuple[str, ...], counts: dict[str, int]
) -> CounterMetricFamily:
    """A counter labelled `result`, one series per result, in the order given."""
    family = CounterMetricFamily(name, documentation, labels=["result"])
    for result in results:
        family.add_metric([result], counts[result])
    return family


def _ratio(share: float | None) -> float:
    """A share for a gauge; NaN (Prometheus's "no value") when there is nothing to share."""
    return math.nan if share is None else share


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_JSON.encode(body) + b"\n", status=status,
                        content_type="application/json")
