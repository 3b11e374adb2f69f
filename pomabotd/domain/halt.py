"""The halt rules in operation: what they remember between cycles, and how a cycle moves it on.

`research.halt_verdict` judges a sequence of closed positions; a running portfolio needs more:
the closes judged so far (kept across restarts, in `state.json`), a halt that stays in force once
tripped (it is lifted only on purpose), and a fresh start after it is lifted, so that the same
closes do not trip it again at once. `HaltState` is that memory and `advance` moves it through
one cycle:

1. A halt in force is lifted by a resume request, or by a change of the settings that make the
   decisions (`settings`: the caller passes the `[risk]` and `[strategy]` keys and the evaluator)
   since it tripped. Lifting starts a new window at this cycle: only what closes from now on is
   judged.
2. While no halt is in force, the cycle's closes join the window and the rules judge the whole
   window; a verdict that halts latches, with the cycle and the settings it tripped under.

The window keeps only what the rules can still use (`compact_window`): every close with a known
outcome (the coverage and confidence rules) and the trailing run of invalidated exits (the
streak rule), so it grows with resolved positions only. A cycle's own closes are judged before
they are compacted, so a streak among them counts even when a later close of the same cycle
ends it.

`recover` rebuilds the state after a crash cut `state.json` short of the last finished cycles,
from their position lines and the `halted` flag their metrics lines carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, TypeAlias, cast, get_args

from msgspec import Struct, structs

from pomabotd.domain.models import CloseEvent, Position
from pomabotd.domain.research import (
    ClosedPosition,
    HaltRule,
    HaltRules,
    closed_positions,
    halt_verdict,
)

__all__ = [
    "HaltState",
    "HaltStep",
    "Lift",
    "Settings",
    "advance",
    "compact_window",
    "recover",
]

#: The settings a halt was judged under: dotted configuration key -> value.
Settings: TypeAlias = dict[str, str | int | float | bool]
#: Why a halt was lifted.
Lift = Literal["resume", "configuration"]

_RULES: tuple[str, ...] = get_args(HaltRule)


class HaltState(Struct, frozen=True, kw_only=True):
    """What the halt rules remember between cycles.

    `judging_since` is the first cycle whose closes are judged (1, or the cycle a halt was lifted
    in); `window` the closes judged, compacted. While `halted`, `rule` and `reason` say why,
    `since_cycle` is the cycle that tripped it and `settings` what was in force then (None when
    recovered from the files, which do not record it: the next cycle adopts its own).
    """

    judging_since: int = 1
    window: tuple[ClosedPosition, ...] = ()
    halted: bool = False
    rule: HaltRule | None = None
    reason: str | None = None
    since_cycle: int | None = None
    settings: Settings | None = None


class HaltStep(Struct, frozen=True, kw_only=True):
    """One cycle's move: the new state, and what changed (`lifted`, its `changed` settings
    keys, `tripped`) for the caller to log once the cycle is written."""

    state: HaltState
    lifted: Lift | None = None
    changed: tuple[str, ...] = ()
    tripped: bool = False


def advance(
    state: HaltState,
    *,
    cycle_id: int,
    closed: Sequence[ClosedPosition],
    rules: HaltRules,
    settings: Settings | None,
    resume: bool,
) -> HaltStep:
    """Move `state` through cycle `cycle_id`, whose closes are `closed` (in close order).

    `resume` says a resume request is pending; without a halt in force it changes nothing.
    `settings` None means the caller does not know them: no configuration change is seen.
    """
    lifted: Lift | None = None
    changed: tuple[str, ...] = ()
    if state.halted:
        if resume:
            lifted = "resume"
        elif settings is None:
            pass
        elif state.settings is None:
            state = structs.replace(state, settings=dict(settings))
        elif state.settings != settings:
            lifted = "configuration"
            changed = _changed_keys(state.settings, settings)
        if lifted is not None:
            state = HaltState(judging_since=cycle_id)
    if state.halted:
        return HaltStep(state=state)
    # The cycle's closes are judged whole: a run of invalidations inside them that another
    # close ends is no trailing run, and compacting first would drop it unjudged.
    judged = (*state.window, *closed)
    window = compact_window(judged)
    verdict = halt_verdict(judged, rules)
    if not verdict.halted:
        return HaltStep(
            state=structs.replace(state, window=window), lifted=lifted, changed=changed
        )
    tripped = structs.replace(
        state,
        window=window,
        halted=True,
        rule=verdict.rule,
        reason=verdict.reason,
        since_cycle=cycle_id,
        settings=None if settings is None else dict(settings),
    )
    return HaltStep(state=tripped, lifted=lifted, changed=changed, tripped=True)


def compact_window(closed: Iterable[ClosedPosition]) -> tuple[ClosedPosition, ...]:
    """The closes the rules can still use, in order: those with an outcome, and the trailing
    run of invalidated exits. The rules judge this exactly as they judge `closed`."""
    kept: list[ClosedPosition] = []
    streak: list[ClosedPosition] = []
    for close in closed:
        if close.exit_reason == "invalidated":
            streak.append(close)
            continue
        streak.clear()
        if close.outcome is not None:
            kept.append(close)
    return (*kept, *streak)


def recover(
    state: HaltState,
    carried: Sequence[Position],
    events: Sequence[Position | CloseEvent],
    cycles: Sequence[int],
    halted: Mapping[int, str | None],
) -> HaltState:
    """Bring `state` forward over finished cycles it does not count yet.

    `carried` are the positions open when `state` was saved, `events` the position lines of
    the later cycles, `cycles` their ids in order, and `halted` the reason of each of them
    whose metrics line says it was halted. A cycle written halted latches the halt with its
    reason; one written not halted after a halted state was lifted in it (by a resume or a
    configuration change), so the window starts again there. Raises HistoryError for a close
    of a position never opened.
    """
    open_now: dict[str, Position] = {p.position_id: p for p in carried}
    events_of: dict[int, list[Position | CloseEvent]] = {}
    for event in events:
        events_of.setdefault(event.cycle_id, []).append(event)
    for cycle_id in cycles:
        cycle_events = events_of.get(cycle_id, [])
        closed = closed_positions((*open_now.values(), *cycle_events))
        for event in cycle_events:
            if isinstance(event, Position):
                open_now[event.position_id] = event
            else:
                open_now.pop(event.position_id, None)
        was_halted = cycle_id in halted
        if state.halted and not was_halted:
            state = HaltState(judging_since=cycle_id)
        if state.halted:
            continue
        window = compact_window((*state.window, *closed))
        if was_halted:
            reason = halted[cycle_id]
            state = structs.replace(
                state, window=window, halted=True, rule=_rule_of(reason), reason=reason,
                since_cycle=cycle_id, settings=None,
            )
        else:
            state = structs.replace(state, window=window)
    return state


def _changed_keys(before: Settings, after: Settings) -> tuple[str, ...]:
    keys = sorted(set(before) | set(after))
    return tuple(key for key in keys if before.get(key) != after.get(key))


def _rule_of(reason: str | None) -> HaltRule | None:
    """The rule a verdict's reason names first (`invalidation_streak: ...`)."""
    name = (reason or "").split(":", 1)[0]
    return cast(HaltRule, name) if name in _RULES else None
