"""The pool's view of its workers: busy slots read once, and no worker outliving pomabotd."""

from __future__ import annotations

from pomabotd.engine.pool import busy_slots


class _ClearedBetweenReads:
    """Shared slots whose worker finishes its market right after the supervisor's first read
    of the start time: every later read of that start says 0, as the real array would."""

    def __init__(self, pid: int, started: int) -> None:
        self._values = [pid, started]
        self.reads = 0

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index: int) -> int:
        value = self._values[index]
        if index == 1:
            self.reads += 1
            self._values[1] = 0  # the worker clears its slot as soon as it was read
        return value


def test_a_slot_cleared_between_reads_is_not_a_market_started_at_zero() -> None:
    """A start time that turns to 0 while it is read is reported with the value read, once."""
    slots = _ClearedBetweenReads(pid=4242, started=123_456_789)
    assert busy_slots(slots) == [(4242, 123_456_789)]
    assert slots.reads == 1
    assert busy_slots(slots) == []


def test_idle_and_killed_workers_are_not_busy() -> None:
    """Only slots with a start time, of workers not already killed, are busy."""
    slots = [11, 0, 12, 500, 13, 900]
    assert busy_slots(slots) == [(12, 500), (13, 900)]
    assert busy_slots(slots, killed={13}) == [(12, 500)]
