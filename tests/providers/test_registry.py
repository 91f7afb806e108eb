"""Failover chains, circuit breakers and vendor concurrency slots."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import pytest

from providers.base import (
    ProviderAuthFailed,
    ProviderInvalidRequest,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.limits import MemoryLimiter, RedisLimiter
from providers.registry import BreakerState, Chain, CircuitBreaker, NoProvider
from tests.conftest import REDIS, require


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Vendor:
    """Stands for an adapter: answers with its name or raises what it is told to."""

    name: str
    failures: list[Exception] = field(default_factory=list)
    calls: int = 0

    async def run(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.name


def outage(times: int) -> list[Exception]:
    return [ProviderUnavailable("503") for _ in range(times)]


async def call(chain: Chain[Vendor], only: str | None = None) -> str:
    _, result = await chain.call(lambda vendor: vendor.run(), only=only)
    return result


async def test_the_secondary_serves_while_the_primary_fails_then_its_circuit_opens() -> None:
    clock = Clock()
    primary, secondary = Vendor("primary", outage(100)), Vendor("secondary")
    chain = Chain([primary, secondary], threshold=3, cooldown=30, clock=clock)
    assert [await call(chain) for _ in range(5)] == ["secondary"] * 5
    assert primary.calls == 3  # then the open circuit skips it
    assert chain.breakers["primary"].state is BreakerState.OPEN
    clock.now = 31  # cool-down over: one probe goes to the primary
    assert chain.breakers["primary"].state is BreakerState.HALF_OPEN
    primary.failures.clear()
    assert await call(chain) == "primary"
    assert chain.breakers["primary"].state is BreakerState.CLOSED


async def test_a_failed_probe_opens_the_circuit_again() -> None:
    clock = Clock()
    primary = Vendor("primary", outage(100))
    chain = Chain([primary, Vendor("secondary")], threshold=2, cooldown=10, clock=clock)
    for _ in range(2):
        await call(chain)
    clock.now = 11
    assert await call(chain) == "secondary"  # the probe failed over
    assert primary.calls == 3
    assert chain.breakers["primary"].state is BreakerState.OPEN
    assert await call(chain) == "secondary"
    assert primary.calls == 3  # no second probe before the next cool-down


def test_half_open_lets_one_probe_through_at_a_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failed()
    assert not breaker.allow()
    clock.now = 6
    assert breaker.allow()
    assert not breaker.allow()  # the probe is still out
    breaker.succeeded()
    assert breaker.allow()


async def test_a_refused_prompt_does_not_fail_over_nor_count_against_the_vendor() -> None:
    primary = Vendor("primary", [ProviderRejected("content policy")])
    secondary = Vendor("secondary")
    chain = Chain([primary, secondary], threshold=1)
    with pytest.raises(ProviderRejected):
        await call(chain)
    assert secondary.calls == 0
    assert chain.breakers["primary"].state is BreakerState.CLOSED


async def test_parameters_one_vendor_refuses_fail_over_to_the_next() -> None:
    """A 400 about our parameters (a size this model does not take) is not the user's
    content: the next vendor of the chain may well take the request."""
    primary = Vendor("primary", [ProviderInvalidRequest("size 512x512 not supported")])
    chain = Chain([primary, Vendor("secondary")])
    assert await call(chain) == "secondary"


async def test_bad_credentials_fail_over() -> None:
    chain = Chain([Vendor("primary", [ProviderAuthFailed("401")]), Vendor("secondary")])
    assert await call(chain) == "secondary"


async def test_a_chosen_vendor_is_used_alone() -> None:
    chain = Chain([Vendor("primary", outage(1)), Vendor("secondary")])
    with pytest.raises(ProviderUnavailable):
        await call(chain, only="primary")
    assert await call(chain, only="secondary") == "secondary"


async def test_with_every_circuit_open_the_chain_says_so() -> None:
    chain = Chain([Vendor("a", outage(5)), Vendor("b", outage(5))], threshold=1)
    with pytest.raises(ProviderUnavailable):
        await call(chain)
    with pytest.raises(NoProvider) as raised:
        await call(chain)
    assert raised.value.transient  # retried later, when a cool-down may be over


async def test_memory_slots_hold_a_limit_and_expire_with_their_lease() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    taken = [await limiter.acquire("v", f"job{i}", limit=3, lease=10) for i in range(5)]
    assert taken == [True, True, True, False, False]
    clock.now = 5
    assert await limiter.acquire("v", "job0", limit=3, lease=10)  # renewing one's own
    await limiter.release("v", "job1")
    assert await limiter.acquire("v", "job3", limit=3, lease=10)
    clock.now = 11
    assert await limiter.in_use("v") == 2  # job2 expired; job0 (renewed) and job3 remain


async def test_redis_slots_hold_across_clients_under_contention() -> None:
    require("Redis", REDIS)
    from redis.asyncio import Redis

    prefix = f"lumi-test-{uuid.uuid4().hex[:8]}"
    clients = [Redis(host=REDIS[0], port=REDIS[1]) for _ in range(2)]
    limiters = [RedisLimiter(client, prefix=prefix) for client in clients]
    try:
        attempts = [
            limiters[i % 2].acquire("hunyuan", f"job{i}", limit=3, lease=30) for i in range(20)
        ]
        taken = await asyncio.gather(*attempts)
        assert sum(taken) == 3
        assert await limiters[0].in_use("hunyuan") == 3
        # which three won depends on which connection Redis served first
        await limiters[1].release("hunyuan", f"job{taken.index(True)}")
        assert await limiters[0].in_use("hunyuan") == 2
        assert await limiters[0].acquire("hunyuan", "late", limit=3, lease=0.05)
        await asyncio.sleep(0.1)
        assert await limiters[1].acquire("hunyuan", "after-expiry", limit=3, lease=30)
    finally:
        await clients[0].delete(f"{prefix}:slots:hunyuan")
        for client in clients:
            await client.aclose()
