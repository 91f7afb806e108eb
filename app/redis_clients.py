"""The asyncio Redis clients of a process (the event bus's, and the one shared by rate
limits, vendor slots, the auth cache and persisted queries), made alike.

After Redis restarts, every connection a pool kept from before is dead, and redis-py
finds out only by using one; `Redis.from_url` retries nothing, so each stale connection
failed one command (a health check flapped to 503 after the outage had ended, a rate
limit check failed). A command that fails on a broken connection is now sent again,
twice at most, on a new one. A PUBLISH sent again may arrive twice, which subscribers
already take in their stride (each event is delivered by its `seq`, once).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError


def connect(url: str, **options: Any) -> Redis:
    """A client of `url` that sends a command again on a fresh connection when its
    connection turns out broken (0.05 s, then 0.1 s later)."""
    return Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[ConnectionError, TimeoutError],
        **options,
    )
