"""The rate limiter: a burst, then one operation per interval, the exact wait, in memory
and in a real Redis shared by several limiters (as by several API processes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.errors import RateLimited
from app.ratelimit import MemoryRateLimiter, Rate, RateLimiter, RedisRateLimiter, Throttle
from tests.conftest import REDIS, require

SIXTY = Rate(per_minute=60, burst=3)  # one a second, three at once


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_burst_passes_then_one_per_interval_with_the_exact_wait() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    assert [await limiter.hit([("k", SIXTY)]) for _ in range(3)] == [(0.0, -1)] * 3
    wait, index = await limiter.hit([("k", SIXTY)])
    assert index == 0
    assert wait == pytest.approx(1.0)
    clock.now += 0.5
    assert (await limiter.hit([("k", SIXTY)]))[0] == pytest.approx(0.5)  # refusals don't count
    clock.now += 0.5
    assert await limiter.hit([("k", SIXTY)]) == (0.0, -1)
    assert (await limiter.hit([("k", SIXTY)]))[0] == pytest.approx(1.0)
    assert await limiter.hit([("other", SIXTY)]) == (0.0, -1)  # keys are independent
    clock.now += 10  # a quiet key is whole again, but no more than its burst
    assert [(await limiter.hit([("k", SIXTY)]))[0] for _ in range(4)] == [0, 0, 0, 1.0]


async def test_an_operation_refused_by_one_limit_counts_against_none() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    tight = Rate(per_minute=60, burst=1)
    assert await limiter.hit([("address", SIXTY), ("user", tight)]) == (0.0, -1)
    wait, index = await limiter.hit([("address", SIXTY), ("user", tight)])
    assert (wait, index) == (pytest.approx(1.0), 1)
    # The address spent one of its three, not two.
    assert [(await limiter.hit([("address", SIXTY)]))[0] for _ in range(3)] == [0, 0, 1.0]


async def test_idle_keys_are_forgotten_when_the_table_is_full() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock, max_keys=10)
    for n in range(10):
        await limiter.hit([(f"k{n}", SIXTY)])
    clock.now += 2
    await limiter.hit([("busy", SIXTY)])
    assert len(limiter._tat) == 1


async def test_the_throttle_names_the_scope_and_the_retry_delay() -> None:
    clock = Clock()
    throttle = Throttle(MemoryRateLimiter(clock), per_user=Rate(60, 1), per_address=Rate(600, 100))
    await throttle.check(address="10.0.0.1", user_id="u1")
    with pytest.raises(RateLimited) as refused:
        await throttle.check(address="10.0.0.1", user_id="u1")
    assert refused.value.extensions == {"retryAfter": 1.0, "scope": "user"}
    await throttle.check(address="10.0.0.1", user_id="u2")  # another user is not held back
    await throttle.check(address="10.0.0.1", user_id=None)  # anonymous: the address only


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    require("Redis", REDIS)
    client = Redis(host=REDIS[0], port=REDIS[1])
    yield client
    await client.aclose()


async def test_limiters_sharing_redis_share_one_budget(redis: Redis) -> None:
    prefix = f"lumi-test-{uuid.uuid4().hex[:8]}"
    one, two = (RedisRateLimiter(redis, prefix=prefix) for _ in range(2))
    rate = Rate(per_minute=60, burst=4)
    limiters: list[RateLimiter] = [one, two, one, two]
    results = [await limiter.hit([("user:u", rate)]) for limiter in limiters]
    assert results == [(0.0, -1)] * 4
    wait, index = await two.hit([("user:u", rate)])
    assert index == 0
    assert 0.9 < wait <= 1.0
    ttl = await redis.pttl(f"{prefix}:ratelimit:user:u")
    assert 3000 < ttl <= 4000  # the key lives only as long as it matters
    await asyncio.sleep(wait)
    assert await one.hit([("user:u", rate)]) == (0.0, -1)
    await redis.delete(f"{prefix}:ratelimit:user:u")


async def test_concurrent_hits_in_redis_never_exceed_the_burst(redis: Redis) -> None:
    prefix = f"lumi-test-{uuid.uuid4().hex[:8]}"
    limiters = [RedisRateLimiter(redis, prefix=prefix) for _ in range(4)]
    rate = Rate(per_minute=6, burst=10)  # one per 10 s: no refill during the test
    results = await asyncio.gather(
        *(limiters[n % 4].hit([("ip:x", rate), ("user:y", rate)]) for n in range(50))
    )
    assert sum(1 for wait, _ in results if wait == 0) == 10
    await redis.delete(f"{prefix}:ratelimit:ip:x", f"{prefix}:ratelimit:user:y")


async def test_an_unreachable_redis_lets_operations_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    limiter = RedisRateLimiter(client, prefix="lumi-test")
    assert await limiter.hit([("user:u", SIXTY)]) == (0.0, -1)
    assert "rate limits are off" in caplog.text
    await client.aclose()
