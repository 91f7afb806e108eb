"""Rate limits per user and per client address: a generic cell rate algorithm (GCRA).

Each key keeps one number, the theoretical arrival time (TAT) of its next operation:
every allowed operation pushes it one interval (60 s / rate) further, and an
operation is refused while the TAT runs more than `burst - 1` intervals ahead of
now; the wait until it no longer does is the exact retry delay. In Redis (one Lua
script, Redis's own clock) when API processes share Redis, in memory when embedded.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from app.errors import RateLimited

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rate:
    per_minute: int
    burst: int

    @property
    def interval(self) -> float:
        return 60.0 / self.per_minute

    @property
    def tolerance(self) -> float:
        return (self.burst - 1) * self.interval


class RateLimiter(Protocol):
    async def hit(self, limits: list[tuple[str, Rate]]) -> tuple[float, int]:
        """Counts one operation against every (key, rate) unless one of them refuses it.

        Answers (0, -1) when allowed, else (seconds to wait, index of the refusing limit).
        """
        ...


class MemoryRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self._tat: dict[str, float] = {}
        self._clock = clock
        self._max_keys = max_keys

    async def hit(self, limits: list[tuple[str, Rate]]) -> tuple[float, int]:
        now = self._clock()
        tats = [max(self._tat.get(key, now), now) for key, _ in limits]
        for index, ((_, rate), tat) in enumerate(zip(limits, tats, strict=True)):
            if (wait := tat - now - rate.tolerance) > 0:
                return wait, index
        if len(self._tat) >= self._max_keys:
            self._forget_idle(now)
        for (key, rate), tat in zip(limits, tats, strict=True):
            self._tat[key] = tat + rate.interval
        return 0.0, -1

    def _forget_idle(self, now: float) -> None:
        """A key whose TAT has passed is as good as new: dropping it changes nothing."""
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]


# KEYS: one TAT (ms) per limit. ARGV: interval and tolerance (ms) of each, in turn.
# Returns {wait ms, 1-based index of the refusing limit}, or {0, 0} when allowed.
_HIT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local tats = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local wait = tat - now - tonumber(ARGV[2 * i])
  if wait > 0 then return {math.ceil(wait), i} end
  tats[i] = tat
end
for i, key in ipairs(KEYS) do
  local next_tat = tats[i] + tonumber(ARGV[2 * i - 1])
  redis.call('SET', key, tostring(next_tat), 'PX', math.max(1, math.ceil(next_tat - now)))
end
return {0, 0}
"""


class RedisRateLimiter:
    """Shared by every API process. A Redis outage lets operations through (and says so)."""

    def __init__(self, redis: Any, *, prefix: str) -> None:
        self._script = redis.register_script(_HIT)
        self._prefix = prefix
        self._warned_at = -math.inf

    async def hit(self, limits: list[tuple[str, Rate]]) -> tuple[float, int]:
        args: list[float] = []
        for _, rate in limits:
            args += [round(rate.interval * 1000, 3), round(rate.tolerance * 1000, 3)]
        try:
            wait_ms, index = await self._script(
                keys=[f"{self._prefix}:ratelimit:{key}" for key, _ in limits], args=args
            )
        except Exception as exc:  # fail open: limits must not take the API down
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("rate limits are off while Redis is unreachable: %s", exc)
            return 0.0, -1
        return int(wait_ms) / 1000, int(index) - 1


class Throttle:
    """The configured limits of one operation: per client address, and per user if known."""

    def __init__(self, limiter: RateLimiter, *, per_user: Rate | None, per_address: Rate | None):
        self.limiter = limiter
        self._per_user = per_user
        self._per_address = per_address

    async def check(self, *, address: str | None, user_id: str | None) -> None:
        limits: list[tuple[str, Rate]] = []
        scopes: list[str] = []
        if self._per_address and address:
            limits.append((f"ip:{address}", self._per_address))
            scopes.append("address")
        if self._per_user and user_id:
            limits.append((f"user:{user_id}", self._per_user))
            scopes.append("user")
        if not limits:
            return
        wait, index = await self.limiter.hit(limits)
        if wait > 0:
            raise RateLimited(retry_after=wait, scope=scopes[index])
