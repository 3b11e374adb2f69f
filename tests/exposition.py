"""What a daemon's `/metrics` must expose, written out by hand.

The list is the test's own, not the status module's: a metric lost from both still fails the
daemon test, and the operations page's metrics table is checked against it too.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pomabotd import __version__

#: Every series a daemon exposes after cycles on the embedded default (no feeds, no source
#: errors).
EXPOSED_SERIES = frozenset({
    f'pomabotd_build_info{{version="{__version__}"}}',
    'pomabotd_cycles_total{result="ok"}', 'pomabotd_cycles_total{result="failed"}',
    "pomabotd_markets_evaluated_total", "pomabotd_markets_failed_total",
    "pomabotd_markets_rejected_total", "pomabotd_timeouts_total", "pomabotd_retries_total",
    "pomabotd_worker_restarts_total",
    'pomabotd_reloads_total{result="ok"}', 'pomabotd_reloads_total{result="failed"}',
    'pomabotd_feeds_total{result="ok"}', 'pomabotd_feeds_total{result="unchanged"}',
    'pomabotd_feeds_total{result="failed"}',
    "pomabotd_news_items_total", "pomabotd_news_duplicates_total", "pomabotd_news_signals_total",
    'pomabotd_notifications_total{result="sent"}', 'pomabotd_notifications_total{result="failed"}',
    'pomabotd_notifications_total{result="rate_limited"}',
    'pomabotd_notifications_total{result="queue_full"}',
    "pomabotd_last_cycle_duration_seconds", "pomabotd_last_cycle_throughput_markets_per_second",
    "pomabotd_last_cycle_peak_memory_bytes", "pomabotd_last_cycle_timestamp_seconds",
    "pomabotd_last_cycle_peak_memory_covers_workers",
    'pomabotd_executor_workers{executor="local"}',
    "pomabotd_open_positions", "pomabotd_equity_usd", "pomabotd_realized_pnl_usd",
    "pomabotd_portfolio_risk_percent", "pomabotd_halted", "pomabotd_held_markets_missing",
    "pomabotd_halt_resolved_positions", "pomabotd_halt_coverage_observed_ratio",
    "pomabotd_halt_coverage_expected_ratio",
    'pomabotd_halt_confidence_positions{bucket="high"}',
    'pomabotd_halt_confidence_positions{bucket="low"}',
    'pomabotd_halt_confidence_hit_ratio{bucket="high"}',
    'pomabotd_halt_confidence_hit_ratio{bucket="low"}',
    "pomabotd_halt_invalidation_streak",
})

#: Counters labelled by source, exposed once a source has a failed request or a refused record.
PER_SOURCE_SERIES = frozenset({
    "pomabotd_source_fetch_errors_total", "pomabotd_source_records_refused_total",
})


def exposed_series(exposition: str) -> set[str]:
    """The series of a Prometheus text exposition, parsed: `name{label="value",...}`."""
    return {
        sample.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                       + "}" if sample.labels else "")
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
