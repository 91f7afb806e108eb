"""The event bus: publish after commit, fan out to every live subscription.

A bus is only a fast path. Subscriptions treat the `request_events` table as the
truth, so a lost or dropped message costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

Payload = dict[str, Any]


# Offered to every local subscription when the bus drops or regains its connection:
# whatever was published meanwhile may be lost, so the subscriber re-reads the table.
RESYNC: Payload = {}


class Sink(Protocol):
    """Whatever the bus hands a channel's messages to, on the event loop it belongs to."""

    loop: asyncio.AbstractEventLoop

    def offer(self, payload: Payload) -> None:
        """Takes a message (RESYNC: re-read the table); must not block."""
        ...


class Subscription(Sink, Protocol):
    def pending(self) -> int:
        """How many messages wait to be read."""
        ...

    async def get(self, timeout: float | None) -> Payload | None:
        """The next message, or None when `timeout` seconds pass without one (None:
        waits as long as it takes)."""
        ...


class EventBus(Protocol):
    connected: bool  # whether publishes are reaching subscribers right now

    async def publish(self, channel: str, payload: Payload) -> None:
        """Deliver to current subscribers; never raises (a failure is logged)."""
        ...

    def subscribe(
        self, channels: list[str]
    ) -> contextlib.AbstractAsyncContextManager[Subscription]: ...

    def attach(self, channels: list[str], sink: Sink) -> None:
        """Hands `channels`' messages to `sink` from now on, until `detach`. Unlike
        `subscribe` it does not wait for Redis to follow a new channel: it is for taking
        over channels a subscription already follows (see app/requests/stream.py)."""
        ...

    def detach(self, channels: list[str], sink: Sink) -> None: ...

    async def close(self) -> None: ...


def request_channel(request_id: str) -> str:
    return f"request:{request_id}"


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"


class _LocalSubscription:
    """One subscriber's messages, bound to the event loop it was created on.

    A deque and one future to wake a waiting reader: an idle subscription holds no task
    and no timer beyond its own wait (an asyncio.Queue read under wait_for held both).
    """

    __slots__ = ("_items", "_maxsize", "_waiter", "loop")

    def __init__(self, maxsize: int) -> None:
        self.loop = asyncio.get_running_loop()
        self._items: collections.deque[Payload] = collections.deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None

    def pending(self) -> int:
        return len(self._items)

    def offer(self, payload: Payload) -> None:
        # A full subscriber drops the message: it sees a gap in seq and backfills from
        # the table, so slowness never blocks a publisher.
        if len(self._items) >= self._maxsize:
            return
        self._items.append(payload)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: float | None) -> Payload | None:
        if not self._items:
            self._waiter = self.loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        return self._items.popleft() if self._items else None


class _Registry:
    """Which local subscriptions follow which channel."""

    def __init__(self) -> None:
        self.subs: dict[str, set[Sink]] = {}

    def add(self, sub: Sink, channels: list[str]) -> None:
        for channel in channels:
            self.subs.setdefault(channel, set()).add(sub)

    def remove(self, sub: Sink, channels: list[str]) -> None:
        for channel in channels:
            followers = self.subs.get(channel)
            if followers is not None:
                followers.discard(sub)
                if not followers:
                    del self.subs[channel]

    def targets(self, channel: str) -> list[Sink]:
        return list(self.subs.get(channel, ()))

    def count(self) -> int:
        return len({sub for followers in self.subs.values() for sub in followers})


class InProcessBus:
    """Fan-out inside one process; safe to publish from worker threads and other loops."""

    connected = True  # nothing between publisher and subscriber can fail

    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._lock = threading.Lock()
        self._registry = _Registry()

    async def publish(self, channel: str, payload: Payload) -> None:
        with self._lock:
            targets = self._registry.targets(channel)
        for sub in targets:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, payload)
            except RuntimeError:  # the subscriber's loop has closed
                log.debug("dropping message for a closed loop", extra={"channel": channel})

    @contextlib.asynccontextmanager
    async def subscribe(self, channels: list[str]) -> AsyncIterator[Subscription]:
        sub = _LocalSubscription(self._queue_size)
        with self._lock:
            self._registry.add(sub, channels)
        try:
            yield sub
        finally:
            with self._lock:
                self._registry.remove(sub, channels)

    def attach(self, channels: list[str], sink: Sink) -> None:
        with self._lock:
            self._registry.add(sink, channels)

    def detach(self, channels: list[str], sink: Sink) -> None:
        with self._lock:
            self._registry.remove(sink, channels)

    def subscriber_count(self) -> int:
        with self._lock:
            return self._registry.count()

    async def close(self) -> None:
        with self._lock:
            self._registry = _Registry()


class RedisBus:
    """Redis pub/sub with ONE shared subscriber connection per process.

    Local subscriptions register here; a single reader task receives every message for
    the channels they follow and fans it out. (redis-py caps an asyncio pool at 100
    connections: a connection per subscription would fail at the 101st.) When Redis is
    away, publishing logs and returns and subscribers hear nothing, so they fall back
    to re-checking the event table; the reader reconnects and resubscribes.
    """

    def __init__(self, url: str, *, prefix: str = "lumi", queue_size: int = 1000) -> None:
        import redis.asyncio as redis

        from app.redis_clients import connect

        self.client_name = f"{prefix}-bus-{os.getpid()}"
        options: dict[str, Any] = {
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            "client_name": self.client_name,
        }
        # Commands (PUBLISH, PING) are sent again on a fresh connection when theirs broke.
        self._redis = connect(url, **options)
        # The subscription's connection is never silently replaced: a reconnect must be
        # seen by the reader, which then has subscribers re-read what they may have missed.
        self._subscriber = redis.Redis.from_url(url, **options)
        self._prefix = f"{prefix}:events:"
        self._queue_size = queue_size
        self._registry = _Registry()
        self._changed = asyncio.Event()
        self._wanted_version = 0  # bumped by every (un)subscribe
        self._synced = asyncio.Condition()
        self._synced_version = 0  # what the reader has told Redis so far
        self._reader: asyncio.Task[None] | None = None
        self.connected = False
        self._lost = False  # a connection failed since subscribers last re-read the table

    async def publish(self, channel: str, payload: Payload) -> None:
        try:
            await self._redis.publish(self._prefix + channel, json.dumps(payload))
        except Exception as exc:  # a bus outage never fails a stage
            log.warning("event publish failed: %s", type(exc).__name__)

    @contextlib.asynccontextmanager
    async def subscribe(self, channels: list[str]) -> AsyncIterator[Subscription]:
        sub = _LocalSubscription(self._queue_size)
        self._registry.add(sub, channels)
        self._wanted_version += 1
        self._changed.set()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever(), name="redis-bus-reader")
        await self._wait_synced(self._wanted_version)
        try:
            yield sub
        finally:
            self._registry.remove(sub, channels)
            self._wanted_version += 1
            self._changed.set()

    def attach(self, channels: list[str], sink: Sink) -> None:
        self._registry.add(sink, channels)
        self._wanted_version += 1
        self._changed.set()

    def detach(self, channels: list[str], sink: Sink) -> None:
        self._registry.remove(sink, channels)
        self._wanted_version += 1
        self._changed.set()

    async def _wait_synced(self, version: int, timeout: float = 2.0) -> None:
        """Until Redis follows our channels, so no live message falls before the replay.
        Bounded: during an outage the subscription proceeds on table re-checks."""
        async with self._synced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._synced.wait_for(lambda: self._synced_version >= version), timeout
                )

    def subscriber_count(self) -> int:
        return self._registry.count()

    async def _read_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._read_once()
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lost = True
                if self.connected:
                    self.connected = False
                    self._resync_all()  # until it is back, subscribers poll the table
                log.warning("event bus connection lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _read_once(self) -> None:
        async with self._subscriber.pubsub() as pubsub:
            await pubsub.ping()
            self._changed.set()  # (re)subscribe everything after a reconnect
            following = await self._sync_channels(pubsub, set())
            self.connected = True
            if self._lost:  # what was published while we were away is in the table
                self._lost = False
                self._resync_all()
            loop = asyncio.get_running_loop()
            last_ping = loop.time()
            while True:
                following = await self._sync_channels(pubsub, following)
                # A short wait: new subscriptions are sent to Redis at the next turn.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.02)
                if message is not None and message.get("type") == "message":
                    self._fan_out(message)
                elif loop.time() - last_ping > 5:
                    await pubsub.ping()  # notices a dead connection while all is quiet
                    last_ping = loop.time()

    async def _sync_channels(self, pubsub: Any, following: set[str]) -> set[str]:
        if not self._changed.is_set():
            return following
        self._changed.clear()
        version, wanted = self._wanted_version, set(self._registry.subs)
        if added := wanted - following:
            await pubsub.subscribe(*(self._prefix + c for c in added))
        if removed := following - wanted:
            await pubsub.unsubscribe(*(self._prefix + c for c in removed))
        async with self._synced:
            self._synced_version = version
            self._synced.notify_all()
        return wanted

    def _resync_all(self) -> None:
        for followers in list(self._registry.subs.values()):
            for sub in followers:
                sub.offer(RESYNC)

    def _fan_out(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        payload = json.loads(message["data"])
        for sub in self._registry.targets(channel.removeprefix(self._prefix)):
            sub.offer(payload)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self._redis.aclose()
        await self._subscriber.aclose()
