"""The Redis bus: one pub/sub connection per process, however many subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import redis.asyncio as redis

from app.bus import RedisBus
from tests.conftest import REDIS, require

URL = f"redis://{REDIS[0]}:{REDIS[1]}/0"


async def test_150_subscriptions_share_one_connection_and_all_receive() -> None:
    require("Redis", REDIS)
    bus = RedisBus(URL, prefix=f"t{uuid.uuid4().hex[:8]}")
    async with contextlib.AsyncExitStack() as stack:
        subs = [
            await stack.enter_async_context(bus.subscribe([f"request:{i % 3}"])) for i in range(150)
        ]
        await bus.publish("request:1", {"seq": 1})
        received = await asyncio.gather(*(sub.get(2.0) for sub in subs))
        admin = redis.Redis.from_url(URL)
        clients = await admin.client_list()
        await admin.aclose()
    await bus.close()
    assert sum(1 for r in received if r == {"seq": 1}) == 50
    assert all(r is None for i, r in enumerate(received) if i % 3 != 1)
    mine = [c for c in clients if c.get("name") == bus.client_name]
    assert 1 <= len(mine) <= 2  # the shared subscriber, and one for publishing


async def test_publishing_while_redis_is_unreachable_does_not_raise() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0")
    await bus.publish("request:x", {"seq": 1})
    assert not await bus.ping()
    await bus.close()
