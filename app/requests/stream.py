"""Every event, once, in order: the subscription algorithm of DESIGN §3.

Subscribe to the bus first, replay what the table holds after the client's cursor,
then stream live messages, dropping any already sent. A gap in the numbering, or the
bus dropping or regaining its connection, sends the stream back to the table, so a
lost publish costs only latency. While the bus is down each stream re-reads the table
every few seconds. While it is up, the safety net for a publish lost on the
publisher's side is `Rechecks`: one process-wide look at the latest numbers of every
followed request and user, waking only the streams that are behind (ten thousand
idle subscriptions each re-reading its own events cost a whole core).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.bus import RESYNC, EventBus
from app.db import Database
from app.tables import RequestEvent
from app.tables.base import UtcDateTime

log = logging.getLogger(__name__)

Fetch = Callable[[AsyncSession, int], Awaitable[list[RequestEvent]]]
# The latest cursor of each key (a request id or a user id), for many keys at once.
Latest = Callable[[AsyncSession, Sequence[str]], Awaitable[dict[str, int]]]
BATCH = 500
OUTAGE_RECHECK = 2.0  # seconds between table re-reads while the bus is disconnected


@dataclass(frozen=True, slots=True)
class Follow:
    """What to follow: a bus channel, how to read the table after a cursor, where the
    cursor lives in an event (`seq` for one request, `user_seq` for a user's requests),
    and, for `Rechecks`, the followed key and how to read the latest cursors."""

    channel: str
    fetch: Fetch
    cursor_field: str
    is_last: Callable[[RequestEvent], bool]
    key: str
    latest: Latest


class _Follower:
    __slots__ = ("key", "last", "wake")

    def __init__(self, key: str, last: int, wake: Callable[[], None]) -> None:
        self.key, self.last, self.wake = key, last, wake


class Rechecks:
    """The safety re-read of every quiet stream of a process, every `interval` seconds:
    one query per few hundred followed keys asks for their latest cursors, and only a
    stream that is behind re-reads its events. It runs while anything is followed."""

    CHUNK = 500

    def __init__(self, db: Database, interval: float) -> None:
        self.interval = interval
        self._db = db
        self._followers: dict[Latest, set[_Follower]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    @contextlib.contextmanager
    def watching(self, latest: Latest, follower: _Follower) -> Iterator[None]:
        self._followers.setdefault(latest, set()).add(follower)
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._closing = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="subscription-rechecks")
        try:
            yield
        finally:
            followers = self._followers.get(latest)
            if followers is not None:
                followers.discard(follower)
                if not followers:
                    del self._followers[latest]

    async def aclose(self) -> None:
        """Stops the rechecks and waits for a round under way to finish, rather than
        cancelling it mid-query: a cancelled read closes its session in the background,
        and the database may be disposed of before that connection comes back."""
        task, self._task = self._task, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            self._closing.set()
            await task

    async def _run(self) -> None:
        while self._followers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._closing.wait()
            if self._closing.is_set():
                return
            try:
                await self.check()
            except Exception:  # the next round will tell; streams re-read when woken
                log.warning("subscription recheck failed", exc_info=True)

    async def check(self) -> int:
        """Wakes the streams that are behind the table; how many it woke."""
        woken = 0
        for latest, followers in list(self._followers.items()):
            waiting = list(followers)
            for start in range(0, len(waiting), self.CHUNK):
                if self._closing.is_set():
                    return woken
                chunk = waiting[start : start + self.CHUNK]
                async with self._db.read() as session:
                    newest = await latest(session, sorted({f.key for f in chunk}))
                for follower in chunk:
                    if newest.get(follower.key, 0) > follower.last:
                        follower.wake()
                        woken += 1
        return woken


_TIMES = tuple(
    column.name
    for column in RequestEvent.__table__.columns  # type: ignore[attr-defined]
    if isinstance(column.type, UtcDateTime)
)


def event_from_payload(payload: dict[str, Any]) -> RequestEvent:
    """An event row from its published JSON (table models do not parse their input)."""
    values = dict(payload)
    for name in _TIMES:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    return RequestEvent(**values)


async def _read(db: Database, spec: Follow, after: int) -> list[RequestEvent]:
    """The table's events after the cursor. A function of its own, so the session is
    gone once it returns: a subscription's frame lives as long as the subscription."""
    async with db.read() as session:
        return await spec.fetch(session, after)


async def follow(
    db: Database, bus: EventBus, spec: Follow, *, after: int, rechecks: Rechecks
) -> AsyncIterator[RequestEvent]:
    async with bus.subscribe([spec.channel]) as sub:
        at = _Follower(spec.key, after, lambda: sub.offer(RESYNC))
        with rechecks.watching(spec.latest, at):
            while True:
                rows = await _read(db, spec, at.last)
                for event in rows:
                    yield event
                    at.last = getattr(event, spec.cursor_field)
                    if spec.is_last(event):
                        return
                if len(rows) == BATCH:
                    continue  # more history to replay
                rows.clear()  # a quiet subscription holds no replayed rows
                while True:
                    # Connected: wait for the bus (or a recheck's wake-up) as long as it
                    # takes; disconnected: re-read the table every few seconds.
                    payload = await sub.get(None if bus.connected else OUTAGE_RECHECK)
                    if not payload:
                        break  # woken, quiet in an outage, or the bus dropped or returned
                    cursor = int(payload[spec.cursor_field])
                    if cursor <= at.last:
                        continue  # already sent (replayed, or a duplicate publish)
                    if cursor > at.last + 1:
                        break  # a gap: backfill from the table
                    event = event_from_payload(payload)
                    yield event
                    at.last = cursor
                    if spec.is_last(event):
                        return
