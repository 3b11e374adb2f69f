"""What the status page shows, worked out from the daemon's state: plain values for the
templates, and the geometry of the charts.

Nothing here writes markup. Strings from outside (market questions, feed names, reasons,
configuration values) stay plain strings: the templates escape every value they print
(`pomabotd.daemon.http.page`), so a market titled `<script>` reads as text. Chart geometry is
numbers only.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from pomabotd._version import __version__
from pomabotd.daemon.state import FEED_RESULTS, RECENT_CYCLES, DaemonState
from pomabotd.domain.portfolio import held_price
from pomabotd.domain.research import describe_halt_figures
from pomabotd.money import usd
from pomabotd.output import CycleMetrics
from pomabotd.redact import redact_secret_url, redact_url
from pomabotd.words import plural

__all__ = ["SECTIONS", "Chart", "PageView", "Panel", "page_view"]

#: The page's parts, each rendered alone for an update, in the order they appear.
SECTIONS: Final = ("health", "halt", "cycles", "positions", "equity", "sources", "config")

#: The margins of a chart panel's drawing, in SVG user units (about pixels: a panel's size is
#: chosen near the size it is shown at, so its 11-unit labels read at about 11 px).
_RIGHT: Final = 12.0
_TOP: Final = 10.0
_BOTTOM: Final = 22.0
#: Width of one character of a tick label, for the left margin that holds the longest.
_CHAR: Final = 6.6


class Dot(msgspec.Struct, frozen=True):
    """One point of a panel: where it is drawn, and what hovering it says."""

    x: float
    y: float
    label: str


class Panel(msgspec.Struct, frozen=True, kw_only=True):
    """One line chart: its title, the polyline's points, its points, the y axis's ticks
    (position, label) and the x axis's first and last labels."""

    title: str
    latest: str
    points: str
    dots: tuple[Dot, ...]
    ticks: tuple[tuple[float, str], ...]
    first: str
    last: str
    width: float
    height: float
    left: float
    right: float
    top: float = _TOP
    bottom: float


class Chart(msgspec.Struct, frozen=True, kw_only=True):
    """Panels sharing an x axis (the cycles); `empty` before there is anything to draw."""

    panels: tuple[Panel, ...]
    empty: bool


class PageView(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the page shows, section by section."""

    version: int
    generated_at: str
    header: dict[str, Any]
    health: dict[str, Any]
    halt: dict[str, Any]
    cycles: list[dict[str, Any]]
    cycle_chart: Chart
    positions: list[dict[str, Any]]
    positions_summary: dict[str, Any]
    equity_chart: Chart
    sources: dict[str, Any]
    config: dict[str, Any]


def page_view(state: DaemonState) -> PageView:
    """The page as the daemon stands now."""
    now = datetime.now(UTC)
    recent = list(state.recent_cycles)
    return PageView(
        version=state.changes.version,
        generated_at=_clock(now),
        header=_header(state),
        health=_health(state),
        halt=_halt(state),
        cycles=[_cycle_row(m) for m in reversed(recent)],
        cycle_chart=_chart(recent, [
            ("Markets per cycle", lambda m: float(m.markets_total), _count),
            ("Throughput, markets/s", lambda m: m.throughput_per_s, _count),
            ("Wall time", lambda m: m.processing_time_ms / 1000.0, _seconds),
        ], size=(400.0, 150.0)),
        positions=_positions(state),
        positions_summary=_positions_summary(state),
        equity_chart=_chart(recent, [("Equity (realized)", lambda m: m.equity_usd, usd)],
                            size=(620.0, 210.0), zero_based=False),
        sources=_sources(state),
        config=_config(state),
    )


def _header(state: DaemonState) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "version": __version__,
        "pid": state.pid,
        "status_addr": state.status_addr or "",
        "started_at": _clock(state.started_at),
        "uptime": _duration(time.monotonic() - state.started_monotonic),
        "recent": RECENT_CYCLES,
    }


def _health(state: DaemonState) -> dict[str, Any]:
    healthy, body = state.health()
    running = body.get("cycle_running_s")
    return {
        "healthy": healthy,
        "reason": body.get("reason"),
        "summary": state.summary(),
        "batch_enabled": body.get("batch_enabled", True),
        "cycles_ok": state.cycles_ok,
        "cycles_failed": state.cycles_failed,
        "reloads_ok": state.reloads_ok,
        "reloads_failed": state.reloads_failed,
        "running": None if running is None else f"{running:.1f} s",
    }


def _halt(state: DaemonState) -> dict[str, Any]:
    fields = state.halt_fields()
    figures = state.halt_figures()
    rules = state.config.halt
    rows = [
        ("Resolved positions judged", f"{figures.resolved:,}",
         f"the coverage rule judges after {rules.min_resolved:,}"),
        ("Coverage observed", _share(figures.coverage_observed),
         f"may differ from expected by {rules.coverage_tolerance:g} points"),
        ("Coverage expected", _share(figures.coverage_expected), ""),
        (f"Won at confidence >= {rules.high_confidence:g}",
         _bucket(figures.high_confidence.hit_rate, figures.high_confidence.count),
         f"judged at {rules.min_per_bucket:,} each side"),
        (f"Won below {rules.high_confidence:g}",
         _bucket(figures.low_confidence.hit_rate, figures.low_confidence.count), ""),
        ("Invalidated exits in a row", f"{figures.invalidation_streak:,}",
         f"halts at {rules.invalidation_streak:,}"),
    ]
    return {
        "halted": fields["halted"],
        "rule": fields["halt_rule"],
        "reason": fields["halt_reason"],
        "since": fields["halted_since_cycle"],
        "judging_since": fields["halt_judging_since_cycle"],
        "resume_pending": fields["resume_pending"],
        "held_missing": fields["held_missing"],
        "sentence": describe_halt_figures(figures, rules),
        "rows": rows,
    }


def _cycle_row(m: CycleMetrics) -> dict[str, Any]:
    errors = sum(m.sources.fetch_errors.values())
    return {
        "cycle_id": m.cycle_id,
        "finished": _clock(m.finished_at),
        "markets": f"{m.markets_total:,}",
        "evaluated": f"{m.markets_evaluated:,}",
        "failed": m.markets_failed,
        "rejected": m.markets_rejected,
        "opportunities": f"{m.opportunities:,}",
        "opened": m.selected,
        "closed": m.closed,
        "open": m.open_positions,
        "equity": usd(m.equity_usd),
        "wall": f"{m.processing_time_ms / 1000.0:.2f}",
        "throughput": f"{m.throughput_per_s:,.0f}",
        "peak": f"{m.rss_mb:,.0f}",
        "fetch_errors": errors,
        "halted": m.halted,
    }


def _positions(state: DaemonState) -> list[dict[str, Any]]:
    last = state.last_report
    as_of = last.as_of if last is not None else None
    rows = []
    for position in state.portfolio.open_positions:
        yes = state.marks.get(position.market_id)
        mark = None if yes is None else held_price(position.side, yes)
        pnl = (None if mark is None or position.entry_price <= 0
               else position.size_usd * (mark - position.entry_price) / position.entry_price)
        age = (None if as_of is None
               else _duration((as_of - position.opened_at).total_seconds()))
        rows.append({
            "question": position.question,
            "market_id": position.market_id,
            "category": position.category,
            "side": position.side,
            "entry": f"{position.entry_price:g}",
            "mark": "" if mark is None else f"{mark:g}",
            "pnl": "" if pnl is None else usd(pnl),
            "pnl_sign": 0 if pnl is None or round(pnl, 2) == 0 else (1 if pnl > 0 else -1),
            "pnl_pct": "" if pnl is None else f"{pnl / position.size_usd * 100:+.1f}%",
            "stop": f"{position.stop_price:g}",
            "target": f"{position.target_price:g}",
            "size": usd(position.size_usd),
            "opened_cycle": position.cycle_id,
            "age": age or "",
            "missing_since": state.portfolio.missing_since.get(position.market_id),
        })
    return rows


def _positions_summary(state: DaemonState) -> dict[str, Any]:
    return {
        "count": plural(len(state.portfolio.open_positions), "open position"),
        "equity": usd(state.equity_usd()),
        "realized": usd(state.portfolio.realized_pnl_usd),
        "risk": f"{state.risk_pct():.1f}%",
        "risk_cap": f"{state.config.risk.max_portfolio_risk:g}%",
    }


def _sources(state: DaemonState) -> dict[str, Any]:
    config = state.config.sources
    names = sorted(set(state.fetch_errors) | set(state.refused))
    last = state.last_report.metrics.sources if state.last_report is not None else None
    return {
        "markets": redact_url(config.markets),
        "signals": redact_url(config.signals) if config.signals else "",
        "feeds": [
            {"name": redact_url(feed), "errors": state.fetch_errors.get(redact_url(feed), 0)}
            for feed in config.feeds
        ],
        "counts": [
            {"name": name, "fetch_errors": state.fetch_errors.get(name, 0),
             "refused": state.refused.get(name, 0)}
            for name in names
        ],
        "feed_reads": {result: state.feeds[result] for result in FEED_RESULTS},
        "news": dict(state.news),
        "last": None if last is None else {
            "fetch_errors": sum(last.fetch_errors.values()),
            "refused": last.records_refused,
            "feeds_ok": last.feeds_ok,
            "feeds_unchanged": last.feeds_unchanged,
            "feeds_failed": last.feeds_failed,
            "news_signals": last.news_signals,
        },
        "notify": redact_secret_url(state.config.notify.webhook_url),
        "notifications": dict(state.notifications),
    }


def _config(state: DaemonState) -> dict[str, Any]:
    config = state.config
    described = config.describe()
    changed = [
        {"key": key, "value": _value(entry["value"]), "source": config.source_phrase(key)}
        for key, entry in described.items()
        if entry["source"] != "default"
    ]
    return {
        "path": config.path or "",
        "env_file": config.env_file or "",
        "changed": changed,
        "defaults": len(described) - len(changed),
    }


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value) if value != "" else '""'


def _chart(
    cycles: Sequence[CycleMetrics],
    series: Sequence[tuple[str, Callable[[CycleMetrics], float], Callable[[float], str]]],
    *,
    size: tuple[float, float],
    zero_based: bool = True,
) -> Chart:
    if not cycles:
        return Chart(panels=(), empty=True)
    ids = [m.cycle_id for m in cycles]
    return Chart(
        panels=tuple(_panel(title, ids, [value(m) for m in cycles], shown, size, zero_based)
                     for title, value, shown in series),
        empty=False,
    )


def _panel(title: str, ids: list[int], values: list[float], shown: Callable[[float], str],
           size: tuple[float, float], zero_based: bool) -> Panel:
    """One line over the cycles, its y axis from `low` to `high` (0 at the bottom when
    `zero_based`), with three labelled ticks and a dot per cycle."""
    width, height = size
    finite = [v for v in values if math.isfinite(v)] or [0.0]
    low = min(0.0, min(finite)) if zero_based else min(finite)
    high = max(finite)
    if high - low < 1e-9:
        pad = abs(high) * 0.01 or 1.0
        low, high = (low if zero_based else low - pad), high + pad
    levels = (high, (low + high) / 2, low)
    left = round(10.0 + _CHAR * max(len(shown(v)) for v in levels), 1)
    plot_w = width - _RIGHT - left
    plot_h = height - _BOTTOM - _TOP
    step = plot_w / (len(values) - 1) if len(values) > 1 else 0.0

    def y_of(value: float) -> float:
        return round(_TOP + plot_h * (1.0 - (value - low) / (high - low)), 2)

    dots = tuple(
        Dot(round(left + (step * i if len(values) > 1 else plot_w / 2), 2),
            y_of(v if math.isfinite(v) else low), f"cycle {cycle_id}: {shown(v)}")
        for i, (cycle_id, v) in enumerate(zip(ids, values, strict=True))
    )
    return Panel(
        title=title,
        latest=shown(values[-1]),
        points=" ".join(f"{dot.x},{dot.y}" for dot in dots),
        dots=dots,
        ticks=tuple((y_of(v), shown(v)) for v in levels),
        first=f"cycle {ids[0]}",
        last=f"cycle {ids[-1]}",
        width=width,
        height=height,
        left=left,
        right=width - _RIGHT,
        bottom=height - _BOTTOM,
    )


def _count(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or float(value).is_integer() else f"{value:.1f}"


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def _share(share: float | None) -> str:
    return "none yet" if share is None else f"{share * 100:.1f}%"


def _bucket(rate: float | None, count: int) -> str:
    return f"{_share(rate)} of {count:,}" if count else "none yet"


def _clock(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 05 min`, `2 d 04 h`: how long, in the two units that matter."""
    if seconds < 0:
        return "0 s"
    delta = timedelta(seconds=int(seconds))
    days, rest = delta.days, delta.seconds
    hours, minutes = rest // 3600, rest % 3600 // 60
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min"
    return f"{int(seconds)} s"
