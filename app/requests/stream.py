"""Every event, once, in order: the subscription algorithm of DESIGN §3.

Subscribe to the bus first, replay what the table holds after the client's cursor,
then stream live messages, dropping any already sent. A gap in the numbering, or the
bus dropping or regaining its connection, sends the stream back to the table, so a
lost publish costs only latency. While the bus is down each stream re-reads the table
every few seconds. While it is up, the safety net for a publish lost on the
publisher's side is `Rechecks`: one process-wide look at the latest numbers of every
followed request and user, waking only the streams that are behind (ten thousand
idle subscriptions each re-reading its own events cost a whole core).

Past its replay, a stream whose transport can send on its own (graphql-transport-ws,
app/graphql/live.py) goes on as a `LiveFollow`: the same rules, driven by the bus's
and the rechecks' calls, with no task or suspended generator while it waits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession

from app.bus import RESYNC, EventBus, Payload
from app.db import Database
from app.tables import RequestEvent
from app.tables.base import UtcDateTime

log = logging.getLogger(__name__)

# The events of a key (a request id or a user id) after a cursor.
Fetch = Callable[[AsyncSession, str, int], Awaitable[list[RequestEvent]]]
# The latest cursor of each key (a request id or a user id), for many keys at once.
Latest = Callable[[AsyncSession, Sequence[str]], Awaitable[dict[str, int]]]
BATCH = 500
OUTAGE_RECHECK = 2.0  # seconds between table re-reads while the bus is disconnected
QUEUE_LIMIT = 1000  # messages a live stream holds before it drops (and backfills) the rest


@dataclass(frozen=True, slots=True)
class Follow:
    """What to follow: a bus channel, how to read the key's events after a cursor, where
    the cursor lives in an event (`seq` for one request, `user_seq` for a user's
    requests), and, for `Rechecks`, the followed key and how to read the latest cursors.
    (Functions of the key rather than closures over it: one lives as long as its
    subscription.)"""

    channel: str
    fetch: Fetch
    cursor_field: str
    is_last: Callable[[RequestEvent], bool]
    key: str
    latest: Latest


class Watched(Protocol):
    """What `Rechecks` needs of a stream: its key, the cursor it has sent, a wake-up."""

    key: str
    last: int

    def wake(self) -> None: ...


class _Follower:
    __slots__ = ("key", "last", "wake")

    def __init__(self, key: str, last: int, wake: Callable[[], None]) -> None:
        self.key, self.last, self.wake = key, last, wake


Key = TypeVar("Key")
Follower = TypeVar("Follower")


class Ticking(Generic[Key, Follower]):
    """Followers by key, and one task that runs a round every `interval` seconds while
    any are followed (the rounds of a whole process: one query for all its followers,
    not one per follower). It starts with the first follower and stops with the last."""

    NAME = "ticking"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._followers: dict[Key, set[Follower]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    def add(self, key: Key, follower: Follower) -> None:
        self._followers.setdefault(key, set()).add(follower)
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._closing = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name=self.NAME)

    def discard(self, key: Key, follower: Follower) -> None:
        followers = self._followers.get(key)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._followers[key]

    async def aclose(self) -> None:
        """Stops the rounds and waits for one under way to finish, rather than
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
                await self.round()
            except Exception:  # the next round will tell; followers re-read when woken
                log.warning("%s round failed", self.NAME, exc_info=True)

    async def round(self) -> int:
        """One round; how many followers it woke."""
        raise NotImplementedError


class Rechecks(Ticking[Latest, Watched]):
    """The safety re-read of every quiet stream of a process, every `interval` seconds:
    one query per few hundred followed keys asks for their latest cursors, and only a
    stream that is behind re-reads its events. It runs while anything is followed."""

    NAME = "subscription-rechecks"
    CHUNK = 500

    def __init__(self, db: Database, interval: float) -> None:
        super().__init__(interval)
        self._db = db

    @contextlib.contextmanager
    def watching(self, latest: Latest, follower: Watched) -> Iterator[None]:
        self.add(latest, follower)
        try:
            yield
        finally:
            self.discard(latest, follower)

    async def round(self) -> int:
        return await self.check()

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


_COLUMNS = tuple(
    column.name
    for column in RequestEvent.__table__.columns  # type: ignore[attr-defined]
)


class PublishedEvent:
    """An event as it was published: the row's fields, read-only, without SQLAlchemy's
    instrumentation. Built for each subscriber of each event, a table row cost ~70 µs,
    a third of a delivery."""

    __slots__ = _COLUMNS

    def __init__(self, values: dict[str, Any]) -> None:
        for name in _COLUMNS:
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a published event is read-only ({name})")

    def model_dump(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS}


def event_from_payload(payload: dict[str, Any]) -> RequestEvent:
    """An event row from its published JSON (table models do not parse their input)."""
    values = dict(payload)
    for name in _TIMES:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    if any(name not in values for name in _COLUMNS):
        return RequestEvent(**values)  # from a publisher that left defaults out
    # Read as a row is: by its attributes.
    return cast("RequestEvent", PublishedEvent(values))


async def _read(db: Database, spec: Follow, after: int) -> list[RequestEvent]:
    """The table's events after the cursor. A function of its own, so the session is
    gone once it returns: a subscription's frame lives as long as the subscription."""
    async with db.read() as session:
        return await spec.fetch(session, spec.key, after)


async def follow(
    db: Database,
    bus: EventBus,
    spec: Follow,
    *,
    after: int,
    rechecks: Rechecks,
    live: Callable[[int], LiveSink | None] | None = None,
) -> AsyncIterator[RequestEvent]:
    """The stream's events. With `live`, once the replay is done and nothing waits to be
    read, `live(cursor)` may take the rest: the stream then goes on as a `LiveFollow`
    delivering to the sink it returned, and this generator ends at once."""
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
                if live is not None and bus.connected and not sub.pending():
                    sink = live(at.last)
                    if sink is not None:
                        # Attached before `sub` goes, with no await between: no message
                        # falls between the two, and none was waiting in `sub`.
                        LiveFollow(db, bus, spec, at.last, rechecks, sink).start()
                        return
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


class LiveSink(Protocol):
    """Where a `LiveFollow` delivers: each event in order, then the end."""

    async def emit(self, event: RequestEvent) -> None: ...

    async def end(self, error: Exception | None) -> None:
        """After the last event (a final status), or after a failure to read the table;
        never after `LiveFollow.stop`."""
        ...

    def attach(self, follow: LiveFollow) -> None:
        """The follow that delivers to this sink, so that the sink can stop it."""
        ...


class LiveFollow:
    """The live part of `follow` with no task, generator or queue of its own while it
    waits: the bus and the rechecks call `offer` and `wake`, and a short task delivers
    what came (or re-reads the table) and ends. The rules are `follow`'s: a cursor
    already sent is dropped, the next one is delivered, a gap or a wake-up re-reads the
    table after the cursor, and while the bus is down the table is re-read every
    OUTAGE_RECHECK seconds. Ten thousand idle ones cost a few objects each rather than
    a task and a dozen suspended frames (app/graphql/live.py hands them over)."""

    __slots__ = (
        "_bus",
        "_db",
        "_inbox",
        "_rechecks",
        "_sink",
        "_spec",
        "_task",
        "_timer",
        "key",
        "last",
        "loop",
    )

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        spec: Follow,
        last: int,
        rechecks: Rechecks,
        sink: LiveSink,
    ) -> None:
        self.key, self.last = spec.key, last
        self.loop = asyncio.get_running_loop()
        self._db, self._bus, self._spec, self._rechecks, self._sink = db, bus, spec, rechecks, sink
        self._inbox: collections.deque[Payload] | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._sink.attach(self)
        self._bus.attach([self._spec.channel], self)
        self._rechecks.add(self._spec.latest, self)

    def stop(self) -> None:
        """No more events (the client completed the operation, or went away)."""
        self._close()
        if self._task is not None:
            self._task.cancel()

    def _close(self) -> None:
        self._bus.detach([self._spec.channel], self)
        self._rechecks.discard(self._spec.latest, self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def wake(self) -> None:
        self.offer(RESYNC)

    def offer(self, payload: Payload) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = collections.deque()
        if len(inbox) >= QUEUE_LIMIT:
            return  # as a full bus subscription does: the gap is read from the table
        inbox.append(payload)
        if self._task is None:
            self._task = self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._inbox:
                if await self._take(self._inbox.popleft()):
                    return
        except Exception as error:  # the table could not be read: the stream ends
            log.warning("live subscription failed", exc_info=True)
            self._close()
            await self._sink.end(error)
        finally:
            self._task = None
            if not self._inbox:
                self._inbox = None  # an idle stream holds no queue

    async def _take(self, payload: Payload) -> bool:
        """Delivers what `payload` brings; whether the stream has ended."""
        if not payload:
            return await self._backfill()  # woken, or the bus dropped or came back
        cursor = int(payload[self._spec.cursor_field])
        if cursor <= self.last:
            return False  # already sent (replayed, or a duplicate publish)
        if cursor > self.last + 1:
            return await self._backfill()  # a gap
        return await self._emit(event_from_payload(payload))

    async def _backfill(self) -> bool:
        while True:
            rows = await _read(self._db, self._spec, self.last)
            for row in rows:
                if await self._emit(row):
                    return True
            if len(rows) < BATCH:
                break
        if not self._bus.connected and self._timer is None:
            self._timer = self.loop.call_later(OUTAGE_RECHECK, self._recheck)
        return False

    def _recheck(self) -> None:
        self._timer = None
        self.wake()

    async def _emit(self, event: RequestEvent) -> bool:
        await self._sink.emit(event)
        self.last = getattr(event, self._spec.cursor_field)
        if self._spec.is_last(event):
            self._close()
            await self._sink.end(None)
            return True
        return False
