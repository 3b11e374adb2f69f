"""A repeated log line is written once per window with a count, whoever logs it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pomabotd.log import configure_logging, logger


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """Logging into a JSON-lines file with a short repeat window; the default setup after."""
    path = tmp_path / "pomabotd.log"
    configure_logging("INFO", "json", str(path), repeat_window_s=1.0)
    yield path
    configure_logging()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_flood_of_one_line_is_one_line_and_a_count(log_file: Path) -> None:
    """2,000 identical warnings within the window: the first is written, then one line with
    the same fields says how many more there were; other lines pass untouched."""
    for _ in range(2_000):
        logger.bind(event="status_accept_failed").warning("cannot accept a connection")
    logger.bind(event="other").info("a different line")
    time.sleep(1.5)
    lines = _lines(log_file)
    flood = [line for line in lines if line.get("event") == "status_accept_failed"]
    assert [line.get("repeated") for line in flood] == [None, 1_999]
    assert flood[1]["message"] == ("cannot accept a connection [repeated 1999 more times in "
                                   "1 s]")
    assert flood[1]["level"] == "WARNING"
    assert [line["message"] for line in lines if line.get("event") == "other"] == [
        "a different line"]


def test_asyncios_repeated_accept_error_is_counted_too(log_file: Path) -> None:
    """The standard library's records (asyncio's accept error) go through the same limit."""
    asyncio_log = logging.getLogger("asyncio")
    for _ in range(500):
        asyncio_log.error("socket.accept() out of system resource")
    time.sleep(1.5)
    lines = [line for line in _lines(log_file) if line.get("logger") == "asyncio"]
    assert len(lines) == 2 and lines[1]["repeated"] == 499


def test_a_line_after_its_window_is_written_again(log_file: Path) -> None:
    """Once the window has closed, the same line is written again (a new window)."""
    logger.warning("again and again")
    time.sleep(1.2)
    logger.warning("again and again")
    time.sleep(1.2)
    assert [line["message"] for line in _lines(log_file)] == ["again and again"] * 2
