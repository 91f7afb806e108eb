"""A vendor's request-rate quota, booked by every process that calls it, and vendor slots
renewed many at a time."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from providers.limits import MemoryLimiter, MemoryRequestRate, RedisLimiter, RedisRequestRate
from tests.conftest import REDIS, require
from tests.providers.test_registry import Clock


async def test_bookings_in_memory_follow_one_another_at_the_rate() -> None:
    clock = Clock()
    rates = MemoryRequestRate(clock=clock)
    waits = [await rates.reserve("hunyuan:poll", per_second=20) for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.05, 0.1])
    assert await rates.reserve("hunyuan:poll", per_second=20, count=10) == pytest.approx(0.15)
    after = await rates.reserve("hunyuan:poll", per_second=20)
    assert after == pytest.approx(0.65)  # after the ten
    assert await rates.reserve("hunyuan:submit", per_second=20) == 0.0  # its own quota
    clock.now = 10.0
    assert await rates.reserve("hunyuan:poll", per_second=20) == 0.0  # idle: no debt


async def test_bookings_in_redis_share_one_quota_across_processes() -> None:
    require("Redis", REDIS)
    from redis.asyncio import Redis

    prefix = f"lumi-test-{uuid.uuid4().hex[:8]}"
    clients = [Redis(host=REDIS[0], port=REDIS[1]) for _ in range(2)]
    rates = [RedisRequestRate(client, prefix=prefix) for client in clients]
    try:
        bookings = [rates[i % 2].reserve("hunyuan:poll", per_second=20) for i in range(40)]
        waits = sorted(await asyncio.gather(*bookings))
        # forty turns, one every 50 ms, whichever process asked (each wait counts from
        # its own moment of asking, a few ms apart): never 21 within a second
        spans = [later - first for first, later in zip(waits, waits[20:], strict=False)]
        assert min(spans) >= 0.97
        assert waits[-1] >= 1.9
        bulk = await rates[0].reserve("hunyuan:poll", per_second=20, count=20)
        after = await rates[1].reserve("hunyuan:poll", per_second=20)
        assert after - bulk >= 0.99
    finally:
        await clients[0].delete(f"{prefix}:rate:hunyuan:poll")
        for client in clients:
            await client.aclose()


async def test_renewing_slots_extends_only_those_still_held() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    for holder in ("a", "b"):
        assert await limiter.acquire("v", holder, limit=2, lease=10)
    await limiter.release("v", "b")
    clock.now = 5
    await limiter.renew("v", ["a", "b"], lease=20)
    clock.now = 15
    assert await limiter.in_use("v") == 1  # a, renewed; b is not taken back by a renewal


async def test_renewing_slots_in_redis_extends_only_those_still_held() -> None:
    require("Redis", REDIS)
    from redis.asyncio import Redis

    prefix = f"lumi-test-{uuid.uuid4().hex[:8]}"
    client = Redis(host=REDIS[0], port=REDIS[1])
    limiter = RedisLimiter(client, prefix=prefix)
    try:
        for holder in ("a", "b"):
            assert await limiter.acquire("v", holder, limit=2, lease=0.2)
        await limiter.release("v", "b")
        await limiter.renew("v", ["a", "b"], lease=30)
        await asyncio.sleep(0.3)
        assert await limiter.in_use("v") == 1
        assert not await limiter.acquire("v", "c", limit=1, lease=30)  # a still holds
    finally:
        await client.delete(f"{prefix}:slots:v")
        await client.aclose()
