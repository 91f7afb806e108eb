"""Per-vendor concurrency limits that hold across every worker process.

A slot is held by a named holder (a job attempt) until released or until its lease
runs out, so a holder that died cannot keep a slot forever; a long job renews its
lease. Redis-backed when processes share Redis, in memory when embedded.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol


class SlotLimiter(Protocol):
    async def acquire(self, vendor: str, holder: str, *, limit: int, lease: float) -> bool:
        """Takes (or renews) `holder`'s slot when fewer than `limit` are taken."""
        ...

    async def release(self, vendor: str, holder: str) -> None: ...

    async def in_use(self, vendor: str) -> int: ...


class MemoryLimiter:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self._slots: dict[str, dict[str, float]] = {}
        self._lock = asyncio.Lock()
        self._clock = clock

    def _live(self, vendor: str) -> dict[str, float]:
        now = self._clock()
        slots = self._slots.setdefault(vendor, {})
        for holder in [h for h, until in slots.items() if until <= now]:
            del slots[holder]
        return slots

    async def acquire(self, vendor: str, holder: str, *, limit: int, lease: float) -> bool:
        async with self._lock:
            slots = self._live(vendor)
            if holder not in slots and len(slots) >= limit:
                return False
            slots[holder] = self._clock() + lease
            return True

    async def release(self, vendor: str, holder: str) -> None:
        async with self._lock:
            self._slots.get(vendor, {}).pop(holder, None)

    async def in_use(self, vendor: str) -> int:
        async with self._lock:
            return len(self._live(vendor))


# KEYS[1]: the vendor's sorted set of holders scored by lease end (ms).
# ARGV: holder, limit, lease (ms). Redis's own clock: one for every process, and no
# second round trip to read it.
_ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.max(1, lease) + 60000)
return 1
"""


class RedisLimiter:
    """Slots as a sorted set per vendor; one Lua script makes take-or-refuse atomic."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)

    def _key(self, vendor: str) -> str:
        return f"{self._prefix}:slots:{vendor}"

    async def _now_ms(self) -> int:
        seconds, micros = await self._redis.time()  # one clock for every process
        return int(seconds) * 1000 + int(micros) // 1000

    async def acquire(self, vendor: str, holder: str, *, limit: int, lease: float) -> bool:
        args = [holder, limit, int(lease * 1000)]
        return bool(await self._acquire(keys=[self._key(vendor)], args=args))

    async def release(self, vendor: str, holder: str) -> None:
        await self._redis.zrem(self._key(vendor), holder)

    async def in_use(self, vendor: str) -> int:
        now = await self._now_ms()
        return int(await self._redis.zcount(self._key(vendor), now + 1, "+inf"))
