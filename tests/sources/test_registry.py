"""The registry picks sources from configuration; the loader joins their lines and counts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from pomabotd.config import load
from pomabotd.errors import ConfigError, InputError
from pomabotd.sources import CycleInput, open_sources
from pomabotd.sources.feeds import FeedsSource
from pomabotd.sources.gamma import GammaFile
from pomabotd.sources.jsonl import JsonlMarkets, JsonlSignals
from pomabotd.sources.polymarket import PolymarketSource
from pomabotd.sources.synthetic import SyntheticSource
from pomabotd.wire import LinesFile, decode_signals, read_lines

from .support import CAPTURES, DATA, GAMMA_SAMPLE

AS_OF = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("markets", "kind"),
    [
        ("synthetic", SyntheticSource),
        ("polymarket", PolymarketSource),
        (f"gamma:{GAMMA_SAMPLE}", GammaFile),
        ("markets.jsonl", JsonlMarkets),
        ("gammas.jsonl", JsonlMarkets),
    ],
)
def test_markets_setting_selects_the_source(markets: str, kind: type):
    """Each `sources.markets` form maps to its source class through the registry."""
    sources = open_sources(load(None, {}, {"sources.markets": markets}))
    assert type(sources.markets) is kind and sources.signals == ()


def test_gamma_scheme_without_a_path_is_a_config_error_naming_the_flag():
    """`gamma:` alone names the key and where it came from."""
    with pytest.raises(ConfigError, match=r"needs a path after 'gamma:' \(from flag --markets\)"):
        open_sources(load(None, {}, {"sources.markets": "gamma:"}))


def _load(**flags: object) -> CycleInput:
    async def run() -> CycleInput:
        async with open_sources(load(None, {}, flags)) as sources:
            return await sources.load(AS_OF)

    return asyncio.run(run())


def test_signal_file_lines_come_first_then_the_feeds(tmp_path):
    """Signals file and feeds both configured: file lines first (their numbers stay right)."""
    config = tmp_path / "c.toml"
    config.write_text(f'[sources]\nfeeds = ["{CAPTURES[1]}"]\n', encoding="utf-8")
    flags = {"sources.markets": str(DATA / "news_markets.jsonl"),
             "sources.signals": str(DATA / "news_signals.jsonl")}

    async def run() -> CycleInput:
        async with open_sources(load(config, {}, flags)) as sources:
            assert [type(s) for s in sources.signals] == [JsonlSignals, FeedsSource]
            return await sources.load(AS_OF)

    cycle_input = asyncio.run(run())
    signals, rejected = decode_signals(cycle_input.signals, cycle_input.signals_source)
    assert rejected == []
    assert cycle_input.signals_source == str(DATA / "news_signals.jsonl")
    assert signals[0].source == "file" and {s.source for s in signals[1:]} == {
        "FRB: Press Release - All Releases"
    }
    assert cycle_input.stats.feeds_ok == 1 and cycle_input.stats.news_signals == len(signals) - 1


def test_synthetic_markets_bring_their_own_signals_unless_a_file_is_named():
    """The embedded default keeps its behaviour: synthetic signals, or the file's instead (left
    in its file, for the engine's workers to read)."""
    own = _load(**{"sources.markets": "synthetic", "sources.synthetic_markets": 20})
    assert own.signals and own.signals_source == "synthetic signals"
    file = _load(**{"sources.markets": "synthetic", "sources.synthetic_markets": 20,
                    "sources.signals": str(DATA / "news_signals.jsonl")})
    assert file.signals == LinesFile(str(DATA / "news_signals.jsonl"))
    assert read_lines(file.signals) == (DATA / "news_signals.jsonl").read_bytes()


def test_a_missing_markets_file_is_an_input_error():
    """A file that is not there is reported with its path (exit 2 on the command line)."""
    with pytest.raises(InputError, match=r"no-such\.jsonl: no such file"):
        _load(**{"sources.markets": "no-such.jsonl"})


def test_the_shipped_polymarket_example_is_a_valid_configuration():
    """config/examples/polymarket.toml loads and names the live sources (nothing is fetched)."""
    example = DATA.parent.parent / "config" / "examples" / "polymarket.toml"
    config = load(example, {}, {})
    sources = open_sources(config)
    assert type(sources.markets) is PolymarketSource
    assert [type(s) for s in sources.signals] == [FeedsSource]
    assert all(feed.startswith("https://") for feed in config.sources.feeds)
