"""What the commands print for people: the summaries of a cycle, its sources, a stress run and
a replay. Files and `--json` keep plain numbers; these lines are for reading."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from pomabotd.money import usd
from pomabotd.words import plural

if TYPE_CHECKING:
    from pomabotd.cycle import CycleReport
    from pomabotd.replay.run import ReplayReport
    from pomabotd.sources import SourceStats
    from pomabotd.stress import StressReport

__all__ = [
    "cycle_summary",
    "replay_summary",
    "sources_summary",
    "stress_summary",
]

_NO_PROMISE = "Past replay results promise nothing about markets to come."


def cycle_summary(report: CycleReport) -> str:
    """What a `run-once` cycle did: counts, equity, each position opened or closed, the halt."""
    m = report.metrics
    lines = [
        f"cycle {m.cycle_id}: {plural(m.markets_total, 'market')} in "
        f"{m.processing_time_ms / 1000:.2f} s ({m.markets_evaluated:,} evaluated, "
        f"{m.markets_failed:,} failed, {m.markets_rejected:,} rejected; "
        f"{m.throughput_per_s:,.0f} markets/s)",
        f"  {plural(m.opportunities, 'opportunity', 'opportunities')}, {m.selected} opened, "
        f"{m.closed} closed, {m.open_positions} open; portfolio risk "
        f"{m.portfolio_risk_pct:.2f}% of equity",
        f"  equity {usd(m.equity_usd)}, realized P&L {usd(m.realized_pnl_usd)}",
    ]
    lines += [
        f"  open  {p.side:<3} {p.market_id} edge {p.edge:.1f} size {usd(p.size_usd)}: {p.question}"
        for p in report.opened
    ]
    lines += [
        f"  close {c.market_id} {c.exit_reason} P&L {usd(c.pnl_usd)}" for c in report.closed
    ]
    shown = report.first_failures()
    lines += [f"  failed {failure['market_id']}: {failure['error']}" for failure in shown]
    if m.markets_failed > len(shown):
        lines.append(f"  ... and {m.markets_failed - len(shown)} more failed markets")
    lines += _halt_summary(report)
    lines.append(f"  lines appended to {report.output_dir}/positions.jsonl and metrics.jsonl")
    return "\n".join(lines)


def _halt_summary(report: CycleReport) -> list[str]:
    step = report.halt
    lines = []
    if step.lifted == "resume":
        lines.append("  halt lifted by `pomabotd resume`")
    elif step.lifted == "configuration":
        lines.append(f"  halt lifted by a configuration change ({', '.join(step.changed)})")
    if step.state.halted:
        lines.append(
            f"  HALTED since cycle {step.state.since_cycle}, no position opened: "
            f"{step.state.reason}"
        )
        lines.append(f"  lift it with `pomabotd resume --out {report.output_dir}` or a change of "
                     "[risk], [strategy] or batch.evaluator")
    return lines


def sources_summary(stats: SourceStats) -> str:
    """What loading the cycle's input ran into: refused records, failed fetches, feeds, news."""
    failed = sum(stats.fetch_errors.values())
    text = (f"  sources: {plural(stats.records_refused, 'record')} refused, "
            f"{plural(failed, 'fetch', 'fetches')} failed")
    if stats.feeds_ok or stats.feeds_failed or stats.feeds_unchanged:
        text += (
            f"; feeds {stats.feeds_ok} read, {stats.feeds_unchanged} unchanged, "
            f"{stats.feeds_failed} failed; {plural(stats.news_items, 'new item')}, "
            f"{plural(stats.news_signals, 'news signal')}"
        )
    return text


def stress_summary(report: StressReport) -> str:
    """A stress run's figures (the cycle's own, as its log line gives them) and its checks."""
    lines = [
        f"markets        {report.markets:,} ({plural(report.workers, 'worker')})",
        f"wall time      {report.wall_s:.3f} s (generation {report.generate_s:.3f} s, "
        f"pool start {report.pool_start_s:.3f} s, not included)"
        + (f"; median of {plural(report.repeats, 'cycle')}, least {report.wall_s_min:.3f} s"
           if report.repeats > 1 else ""),
        f"throughput     {report.throughput_per_s:,.0f} markets/s",
        f"peak memory    {report.peak_rss_mb:,.1f} MB (daemon + workers)",
        f"decoder        {report.decoder} ({report.markets_native:,} of "
        f"{report.markets:,} markets decoded natively)",
        f"opportunities  {report.opportunities:,}",
        f"selected       {report.selected}",
        "checks:",
    ]
    lines += [
        f"  [{'PASS' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in report.checks
    ]
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _fixed(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _settings_summary(report: ReplayReport) -> list[str]:
    """What decided: the evaluator (with its prior and kernel when built in) and the limits."""
    settings = report.settings
    evaluator = (
        f"{settings.evaluator} (built-in: {settings.prior} prior, {settings.kernel} kernel)"
        if settings.builtin
        else f"{settings.evaluator} (a plugin: strategy.prior and batch.kernel do not apply)"
    )
    limits = ", ".join(
        f"{name} {str(value).lower() if isinstance(value, bool) else format(value, 'g')}"
        for name, value in msgspec.structs.asdict(settings.risk).items()
    )
    return [f"  decided by {evaluator}", f"  risk: {limits}"]


def replay_summary(report: ReplayReport, *, world: bool = False) -> str:
    """A replay's scores: overall, by confidence and by category, with what decided them.

    `world`: the markets are the synthetic world's, whose markets without a price at the
    horizon are those listed too late to have one, not records missing a field."""
    r = report
    field = f"price_{r.as_of_days_before}d"
    days = plural(r.as_of_days_before, "day")
    if r.skipped_no_horizon_price:
        why = f"listed fewer than {days} before closing" if world else f"without {field}"
        no_price = f"{r.skipped_no_horizon_price:,} {why}, "
    else:
        no_price = ""
    no_price += f"{r.price_fallbacks:,} at their price for want of {field}, " \
        if r.price_fallbacks else ""
    lines = [
        f"replay of {plural(r.markets, 'resolved market')} as of {days} before closing "
        f"({plural(r.records, 'market record')}: {r.skipped_no_closes_at:,} without closes_at, "
        f"{r.skipped_unresolved:,} unresolved, {no_price}{r.failed:,} failed; "
        f"{r.rejected_markets:,} rejected)",
        f"  {plural(r.signal_records, 'signal record')} ({r.rejected_signals:,} rejected): "
        f"{r.signals:,} used, {r.signals_after_evaluation:,} stamped too late",
        *_settings_summary(r),
        f"  all markets: Brier {_fixed(r.brier, 4)}, range coverage {_share(r.coverage)} "
        f"(expected {_share(r.expected_coverage)})",
        f"  tradeable {r.tradeable:,}: hit rate {_share(r.hit_rate)}, mean edge "
        f"{_fixed(r.mean_edge, 1)} points, P&L per unit stake {_fixed(r.pnl_per_unit, 3)}",
        f"  selected {plural(r.selected, 'position')}: realized P&L {usd(r.realized_pnl_usd)}, "
        f"return on equity {r.return_on_equity_pct:.2f}%"
        + (f", worst {r.worst_position.market_id} {usd(r.worst_position.pnl_usd)}"
           if r.worst_position is not None else ""),
        "  confidence  markets   Brier  coverage  expected  tradeable  hit rate",
    ]
    lines += [
        f"  {b.low:>4.0f}-{b.high:<5.0f} {b.count:>8,} {_fixed(b.brier, 4):>7} "
        f"{_share(b.coverage):>9} {_share(b.expected_coverage):>9} {b.tradeable:>10,} "
        f"{_share(b.hit_rate):>9}"
        for b in r.confidence_buckets
    ]
    lines.append("  category       markets   Brier  coverage  tradeable  hit rate  P&L/unit"
                 "  selected  realized P&L   return")
    lines += [
        f"  {name:<13} {f.markets:>8,} {_fixed(f.brier, 4):>7} {_share(f.coverage):>9} "
        f"{f.tradeable:>10,} {_share(f.hit_rate):>9} {_fixed(f.pnl_per_unit, 3):>9} "
        f"{f.selected:>9,} {usd(f.realized_pnl_usd):>13} {f.return_on_equity_pct:>+7.2f}%"
        for name, f in r.by_category.items()
    ]
    lines.append(f"  {_NO_PROMISE}")
    return "\n".join(lines)
