"""What the API's health endpoints check, each check with its status and latency.

- `/health` (liveness): the process answers. Nothing else: restarting a pod cures no
  outage of a dependency.
- `/health/ready` (readiness): what this pod needs to serve at all, the database. Not
  Redis, the broker or storage: every pod shares them, so an outage of one would take
  the whole fleet out of service at once, while the API still serves reads and its
  subscriptions fall back to re-reading the event table (DESIGN §3). A pod that cannot
  reach the database serves nothing (sign-in and every read need it), and the others
  may still reach it.
- `/health/detailed`: every dependency, for people and alerts; 503 while one in use is
  down. One the settings do not use (Redis and the broker when embedded) says `not used`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text

from app.bus import RedisBus
from app.deps import Deps

CHECK_TIMEOUT = 2.0

Check = Callable[[], Awaitable[Any]]
Report = tuple[bool, dict[str, Any]]

NOT_USED = "not used"


def _database(deps: Deps) -> Check:
    async def check() -> None:
        async with deps.db.read() as session:
            await session.execute(text("SELECT 1"))

    return check


def _redis(deps: Deps) -> Check | None:
    """Redis as the bus reaches it, else as the shared client does (rate limits, vendor
    slots); None when nothing uses it."""
    bus = deps.bus
    if isinstance(bus, RedisBus):

        async def check() -> None:
            if not await bus.ping():
                raise ConnectionError("redis did not answer")

        return check
    if deps.redis is not None:
        ping: Check = deps.redis.ping
        return ping
    return None


def _broker(broker: Any) -> Check | None:
    client = getattr(broker, "client", None)  # RedisBroker; the in-process one has none
    if client is None:
        return None

    async def check() -> None:
        await asyncio.to_thread(client.ping)

    return check


async def _run(check: Check | None) -> dict[str, Any]:
    if check is None:
        return {"status": NOT_USED}
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
        status, error = "ok", None
    except Exception as exc:
        status, error = "down", type(exc).__name__
    result: dict[str, Any] = {
        "status": status,
        "latencyMs": round((time.perf_counter() - started) * 1000, 2),
    }
    if error:
        result["error"] = error
    return result


async def _report(checks: dict[str, Check | None]) -> Report:
    """(healthy, report): every check run concurrently, none waited on long."""
    results = await asyncio.gather(*(_run(check) for check in checks.values()))
    healthy = all(result["status"] != "down" for result in results)
    report = dict(zip(checks, results, strict=True))
    return healthy, {"status": "ok" if healthy else "degraded", "checks": report}


async def detailed(deps: Deps, broker: Any) -> Report:
    """Every dependency: healthy while none in use is down."""
    return await _report(
        {
            "database": _database(deps),
            "redis": _redis(deps),
            "broker": _broker(broker),
            "storage": deps.storage.ping,
        }
    )


async def ready(deps: Deps) -> Report:
    """Whether this pod can serve: the database answers."""
    return await _report({"database": _database(deps)})
