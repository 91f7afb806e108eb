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

    async def renew(self, vendor: str, holders: list[str], *, lease: float) -> None:
        """Extends the leases of `holders`' slots (those they still hold) in one call."""
        ...

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

    async def renew(self, vendor: str, holders: list[str], *, lease: float) -> None:
        async with self._lock:
            slots = self._live(vendor)
            until = self._clock() + lease
            for holder in holders:
                if holder in slots:
                    slots[holder] = max(slots[holder], until)

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


# KEYS[1]: as above. ARGV: lease (ms), then the holders whose slots to extend.
_RENEW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', 'GT', until_ms, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + 60000)
return 0
"""


class RedisLimiter:
    """Slots as a sorted set per vendor; one Lua script makes take-or-refuse atomic."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

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

    async def renew(self, vendor: str, holders: list[str], *, lease: float) -> None:
        if holders:
            await self._renew(keys=[self._key(vendor)], args=[int(lease * 1000), *holders])

    async def in_use(self, vendor: str) -> int:
        now = await self._now_ms()
        return int(await self._redis.zcount(self._key(vendor), now + 1, "+inf"))


class RequestRate(Protocol):
    """A vendor's request-rate quota, shared by every process that calls it.

    `reserve` books the next `count` requests under `key` at `per_second` and answers
    how many seconds from now the first of them may go; the rest follow one interval
    (1 / per_second) apart. Booking, not refusing: every caller gets a turn in the
    order it asked, and the quota is never exceeded however many processes ask.
    """

    async def reserve(self, key: str, *, per_second: float, count: int = 1) -> float: ...


class MemoryRequestRate:
    """One process's bookings (the embedded mode): a theoretical arrival time per key."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._next: dict[str, float] = {}
        self._clock = clock

    async def reserve(self, key: str, *, per_second: float, count: int = 1) -> float:
        now: float = self._clock()
        first = max(self._next.get(key, now), now)
        self._next[key] = first + count / per_second
        return first - now


# KEYS[1]: the key's next free moment (µs, Redis's clock). ARGV: interval (µs), count.
# Returns the wait (µs) before the first booked request.
_RESERVE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local first = tonumber(redis.call('GET', KEYS[1])) or now
if first < now then first = now end
local after = first + tonumber(ARGV[1]) * tonumber(ARGV[2])
local ttl = math.ceil((after - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', ttl)
return math.floor(first - now)
"""


class RedisRequestRate:
    """Bookings in Redis (one Lua script, Redis's own clock): every worker process shares
    a vendor's quota. A Redis outage falls back to this process's own bookings."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._reserve = client.register_script(_RESERVE)
        self._fallback = MemoryRequestRate()

    async def reserve(self, key: str, *, per_second: float, count: int = 1) -> float:
        interval = max(1, round(1_000_000 / per_second))
        try:
            wait = await self._reserve(keys=[f"{self._prefix}:rate:{key}"], args=[interval, count])
        except Exception:  # the vendor's quota still holds within this process
            return await self._fallback.reserve(key, per_second=per_second, count=count)
        return int(wait) / 1_000_000
