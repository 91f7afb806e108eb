"""The process's one ticker for `requestQueue` subscriptions.

Queue positions are not events (10,000 waiting jobs moving up one place would write
10,000 events per job started), so they are polled - once a second per API process,
not once per subscriber: while anyone watches, one read of the whole line (and of
the measured durations, every few seconds) gives every watched request its figures,
and only the watchers whose figures changed are woken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime

from app.db import Database
from app.requests import queue_position
from app.requests.queue_position import NOT_WAITING, QueueEstimate
from app.requests.stream import Ticking
from app.tables import utcnow

# Times that moved less than this are not news (an estimate drifts as time passes).
SLACK_SECONDS = 5.0


def changed(old: QueueEstimate, new: QueueEstimate) -> bool:
    """Whether `new` is worth a message to a client that has `old`."""
    if old.position != new.position:
        return True
    return _moved(old.start, new.start) or _moved(old.completion, new.completion)


def _moved(old: datetime | None, new: datetime | None) -> bool:
    if old is None or new is None:
        return old is not new
    return abs((new - old).total_seconds()) >= SLACK_SECONDS


class _Watcher:
    __slots__ = ("latest", "request_id", "woken")

    def __init__(self, request_id: str, latest: QueueEstimate) -> None:
        self.request_id = request_id
        self.latest = latest
        self.woken = asyncio.Event()

    def offer(self, estimate: QueueEstimate) -> None:
        self.latest = estimate
        self.woken.set()


class QueueWatch(Ticking[str, _Watcher]):
    """Watchers by request; a task that ticks every `interval` seconds while any exist."""

    NAME = "queue-watch"

    def __init__(self, db: Database, interval: float = 1.0) -> None:
        super().__init__(interval)
        self._db = db
        self.passes = 0  # ticks done (for tests and the benchmark)

    async def current(self, request_id: str) -> QueueEstimate:
        async with self._db.read() as session:
            found = await queue_position.estimates_of(session, [request_id], recent=True)
        return found.get(request_id, NOT_WAITING)

    async def follow(self, request_id: str) -> AsyncIterator[QueueEstimate]:
        """The request's figures now, then each change - at most one a `interval` -
        until it no longer waits (that last value, with a null position, included)."""
        watcher = _Watcher(request_id, NOT_WAITING)
        self.add(request_id, watcher)
        try:
            sent = await self.current(request_id)
            watcher.latest = sent  # the ticker wakes it for what differs from this
            watcher.woken.clear()
            yield sent
            while sent.waiting:
                last = time.monotonic()
                await watcher.woken.wait()
                watcher.woken.clear()
                pause = self.interval - (time.monotonic() - last)
                if pause > 0:  # a change within the second waits for its end
                    await asyncio.sleep(pause)
                if changed(sent, watcher.latest):
                    sent = watcher.latest
                    yield sent
        finally:
            self.discard(request_id, watcher)

    async def round(self) -> int:
        return await self.tick()

    async def tick(self) -> int:
        """One pass: reads the line once, offers each watcher its request's figures;
        returns how many watchers it woke."""
        wanted = set(self._followers)
        if not wanted:
            return 0
        now = utcnow()
        async with self._db.read() as session:
            order = await queue_position.line(session, now)
            measured = await queue_position.recent_durations(session)
        found = queue_position.estimates_from_line(order, measured, now, wanted)
        woken = 0
        for request_id in wanted:
            estimate = found.get(request_id, NOT_WAITING)
            for watcher in list(self._followers.get(request_id, ())):
                if changed(watcher.latest, estimate):
                    watcher.offer(estimate)
                    woken += 1
        self.passes += 1
        return woken
