"""Notifications: what a running daemon tells a webhook (`[notify]`).

Six events, chosen by `notify.events`: `open` and `close` (one per paper position opened or
closed, once its cycle is written), `halt` and `resume` (the halt rules stopped the portfolio
from opening positions, or a halt was lifted), `unhealthy` and `recovered` (`/healthz` turned
503, with its reason, or 200 again; a daemon that is stopping is neither). Health is looked at
after every cycle and every `HEALTH_POLL_S` seconds between, so a verdict that changes while
a cycle runs is told too; only changes are told, not every failed cycle of an outage.

Each event is one POST to `notify.webhook_url`, in `notify.format`: pomabotd's own JSON
(`event`, `time`, `host`, `text`, `details`), or the payload of a Slack (`{"text"}`, with
`&`, `<` and `>` escaped as Slack asks, so a market's title cannot ping a channel) or Discord
(`{"content"}`, mentions switched off) incoming webhook.

Nothing a receiver does can hold a cycle. A cycle only puts its events in a bounded queue
(`QUEUE_SIZE`) and goes on; one task posts them, in order, through
`pomabotd.sources.http.post`: a deadline per attempt (`DEADLINE_S`), retries of a 5xx, a 429 or
a connection error with backoff, no redirect followed. At most `notify.max_per_minute` events
are queued in any 60 seconds; one over that, or one that finds the queue full (a receiver that
hangs drains it one deadline at a time), is dropped. Drops and failures are counted
(`pomabotd_notifications_total{result}`) and logged: a failure once per event, with the
webhook's URL shown by scheme and host only (the rest of it is the secret); drops once per
run of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import msgspec

from pomabotd.config import NotifyConfig
from pomabotd.cycle import CycleReport
from pomabotd.daemon.state import DaemonState
from pomabotd.domain.models import CloseEvent, Position
from pomabotd.errors import FetchError
from pomabotd.log import logger
from pomabotd.money import usd
from pomabotd.redact import redact_secret_url
from pomabotd.sources.http import USER_AGENT, HttpLimits, post

__all__ = [
    "DEADLINE_S",
    "HEALTH_POLL_S",
    "QUEUE_SIZE",
    "Event",
    "Notifications",
    "cycle_events",
    "payload",
]

#: Events waiting to be posted, at most; more are dropped (`queue_full`).
QUEUE_SIZE: Final = 100
#: Seconds one POST may take, from connecting to the response's status line.
DEADLINE_S: Final = 10.0
#: Seconds between two looks at the daemon's health.
HEALTH_POLL_S: Final = 1.0
#: Seconds a stopping daemon gives the queue to empty before it lets the rest go.
FLUSH_S: Final = 2.0
_WINDOW_S: Final = 60.0
_LIMITS: Final = HttpLimits(deadline_s=DEADLINE_S, max_bytes=0, retry_attempts=2,
                            retry_max_wait_s=5.0)
#: Longest text a format's receiver takes: Discord refuses more than 2,000 characters.
_TEXT_LIMIT: Final = {"json": 4000, "slack": 3000, "discord": 2000}
_ENCODER: Final = msgspec.json.Encoder()


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One thing to tell: its kind (one of `NOTIFY_EVENTS`), when, a sentence, and the
    figures behind it."""

    kind: str
    time: datetime
    text: str
    details: dict[str, Any]


def cycle_events(
    report: CycleReport, held: Mapping[str, Position], when: datetime
) -> list[Event]:
    """The events of a written cycle: a halt lifted, each close, each open, a halt tripped
    (in the order they happened in the cycle). `held` maps the position ids open before it
    to their positions, for what a close line does not repeat (the question, the side)."""
    cycle_id = report.metrics.cycle_id
    events: list[Event] = []
    step = report.halt
    if step.lifted is not None:
        by = ("a resume request" if step.lifted == "resume"
              else f"a configuration change ({', '.join(step.changed)})")
        events.append(Event(
            kind="resume", time=when,
            text=f"halt lifted by {by} at cycle {cycle_id}: positions may open again",
            details={"cycle_id": cycle_id, "lifted_by": step.lifted,
                     "changed": list(step.changed)},
        ))
    events += [_close(close, held.get(close.position_id), when) for close in report.closed]
    events += [_open(position, when) for position in report.opened]
    if step.tripped:
        state = step.state
        events.append(Event(
            kind="halt", time=when,
            text=(f"halted at cycle {cycle_id} by the {state.rule} rule, opening no positions "
                  f"until `pomabotd resume` or a change of the decision settings: "
                  f"{state.reason}"),
            details={"cycle_id": cycle_id, "rule": state.rule, "reason": state.reason},
        ))
    return events


def _open(position: Position, when: datetime) -> Event:
    return Event(
        kind="open", time=when,
        text=(f'opened {position.side} on "{position.question}" at {position.entry_price:g} '
              f"for {usd(position.size_usd)} (edge {position.edge:.1f} points; stop "
              f"{position.stop_price:g}, target {position.target_price:g}), cycle "
              f"{position.cycle_id}"),
        details=msgspec.to_builtins(position),
    )


def _close(close: CloseEvent, position: Position | None, when: datetime) -> Event:
    pnl = usd(close.pnl_usd)
    what = (f'{position.side} on "{position.question}"' if position is not None
            else f"position {close.position_id}")
    details = msgspec.to_builtins(close)
    if position is not None:
        details |= {"question": position.question, "side": position.side,
                    "entry_price": position.entry_price}
    return Event(
        kind="close", time=when,
        text=(f"closed {what} at {close.exit_price:g} ({close.exit_reason.replace('_', ' ')}): "
              f"{'+' if round(close.pnl_usd, 2) > 0 else ''}{pnl}, cycle "
              f"{close.cycle_id}"),
        details=details,
    )


def payload(event: Event, format_: str, host: str) -> bytes:
    """The body to post for `event` in `format_` (`json`, `slack` or `discord`)."""
    text = _shortened(f"pomabotd on {host}: {event.text}", _TEXT_LIMIT[format_])
    body: dict[str, Any]
    if format_ == "slack":
        body = {"text": text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")}
    elif format_ == "discord":
        body = {"content": text, "allowed_mentions": {"parse": []}}
    else:
        body = {"event": event.kind, "time": event.time, "host": host, "text": text,
                "details": event.details}
    return _ENCODER.encode(body)


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class Notifications:
    """The daemon's notifier: reads `[notify]` from the state's configuration as it stands
    (a reload takes effect with the next event) and counts into `state.notifications`.
    `start` it on the running loop, `aclose` it on the way out."""

    def __init__(self, state: DaemonState) -> None:
        self._state = state
        self._host = socket.gethostname()
        self._queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self._recent: deque[float] = deque()
        self._dropping = False
        self._healthy = True
        self._reason: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    @property
    def _settings(self) -> NotifyConfig:
        return self._state.config.notify

    def start(self) -> None:
        """Start posting and watching the daemon's health."""
        self._client = httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            follow_redirects=False, timeout=httpx.Timeout(DEADLINE_S),
        )
        self._tasks = [asyncio.create_task(self._post_all()),
                       asyncio.create_task(self._watch_health())]

    def cycle(self, report: CycleReport, held: Mapping[str, Position]) -> None:
        """Tell what a written cycle did (see `cycle_events`), then look at the health."""
        for event in cycle_events(report, held, datetime.now(UTC)):
            self._emit(event)
        self.check_health()

    def check_health(self) -> None:
        """Tell a change of the daemon's health since the last look."""
        state = self._state
        if state.stopping:
            return
        healthy, body = state.health()
        reason = body.get("reason")
        if healthy == self._healthy:
            if not healthy:
                self._reason = reason
            return
        now = datetime.now(UTC)
        if healthy:
            self._emit(Event(kind="recovered", time=now,
                             text=f"healthy again (it was: {self._reason})",
                             details={"after": self._reason}))
        else:
            self._emit(Event(kind="unhealthy", time=now, text=f"unhealthy: {reason}",
                             details={"reason": reason}))
        self._healthy, self._reason = healthy, reason

    def _emit(self, event: Event) -> None:
        """Queue `event` if it is wanted and within the limits; never waits."""
        settings = self._settings
        if not settings.webhook_url or event.kind not in settings.events:
            return
        now = time.monotonic()
        recent = self._recent
        while recent and now - recent[0] >= _WINDOW_S:
            recent.popleft()
        if len(recent) >= settings.max_per_minute:
            self._drop(event, "rate_limited",
                       f"notify.max_per_minute ({settings.max_per_minute}) reached")
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._drop(event, "queue_full",
                       f"{QUEUE_SIZE} notifications already wait for the webhook")
            return
        recent.append(now)
        self._dropping = False

    def _drop(self, event: Event, result: str, why: str) -> None:
        self._state.notifications[result] += 1
        if self._dropping:
            return
        self._dropping = True
        logger.bind(event="notify_dropped", kind=event.kind, result=result).warning(
            "notification {!r} dropped: {}; until one is queued again, drops are only counted "
            "(pomabotd_notifications_total)", event.kind, why,
        )

    async def _post_all(self) -> None:
        assert self._client is not None
        while True:
            event = await self._queue.get()
            try:
                await self._post(self._client, event)
            finally:
                self._queue.task_done()

    async def _post(self, client: httpx.AsyncClient, event: Event) -> None:
        settings = self._settings
        url = settings.webhook_url
        if not url:
            return
        shown = redact_secret_url(url)
        counts = self._state.notifications
        try:
            await post(client, url, payload(event, settings.format, self._host), _LIMITS,
                       shown=shown, what="notify")
        except FetchError as exc:
            counts["failed"] += 1
            logger.bind(event="notify_failed", kind=event.kind, url=shown).warning(
                "notification {!r} not delivered: {}", event.kind, str(exc)
            )
        except Exception as exc:  # a bug must not end the task that posts every event
            counts["failed"] += 1
            logger.bind(event="notify_failed", kind=event.kind, url=shown).opt(
                exception=exc).error("notification {!r} not delivered: {}: {}", event.kind,
                                     type(exc).__name__, str(exc))
        else:
            counts["sent"] += 1

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_POLL_S)
            self.check_health()

    async def aclose(self) -> None:
        """Give the queue `FLUSH_S` to empty, then stop posting and close the connections."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), FLUSH_S)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None
