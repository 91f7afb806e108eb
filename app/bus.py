"""The event bus: publish after commit, fan out to every live subscription.

A bus is only a fast path. Subscriptions treat the `request_events` table as the
truth, so a lost or dropped message costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

Payload = dict[str, Any]


class Subscription(Protocol):
    async def get(self, timeout: float) -> Payload | None:
        """The next message, or None when `timeout` seconds pass without one."""
        ...


class EventBus(Protocol):
    async def publish(self, channel: str, payload: Payload) -> None:
        """Deliver to current subscribers; never raises (a failure is logged)."""
        ...

    def subscribe(
        self, channels: list[str]
    ) -> contextlib.AbstractAsyncContextManager[Subscription]: ...

    async def close(self) -> None: ...


def request_channel(request_id: str) -> str:
    return f"request:{request_id}"


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"


class _LocalSubscription:
    """One subscriber's queue, bound to the event loop it was created on."""

    def __init__(self, maxsize: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Payload] = asyncio.Queue(maxsize=maxsize)

    def offer(self, payload: Payload) -> None:
        # A full queue drops the message: the subscriber sees a gap in seq and
        # backfills from the table, so slowness never blocks a publisher.
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(payload)

    async def get(self, timeout: float) -> Payload | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class InProcessBus:
    """Fan-out inside one process; safe to publish from worker threads and other loops."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._lock = threading.Lock()
        self._subs: dict[str, set[_LocalSubscription]] = {}

    async def publish(self, channel: str, payload: Payload) -> None:
        with self._lock:
            targets = list(self._subs.get(channel, ()))
        for sub in targets:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, payload)
            except RuntimeError:  # the subscriber's loop has closed
                log.debug("dropping message for a closed loop", extra={"channel": channel})

    @contextlib.asynccontextmanager
    async def subscribe(self, channels: list[str]) -> AsyncIterator[Subscription]:
        sub = _LocalSubscription(self._queue_size)
        with self._lock:
            for channel in channels:
                self._subs.setdefault(channel, set()).add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                for channel in channels:
                    subs = self._subs.get(channel)
                    if subs is not None:
                        subs.discard(sub)
                        if not subs:
                            del self._subs[channel]

    def subscriber_count(self) -> int:
        with self._lock:
            return len({sub for subs in self._subs.values() for sub in subs})

    async def close(self) -> None:
        with self._lock:
            self._subs.clear()
