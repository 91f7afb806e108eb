"""Dependency checks for `/health/detailed`: each with its status and latency."""

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


async def _database(deps: Deps) -> None:
    async with deps.db.read() as session:
        await session.execute(text("SELECT 1"))


async def _bus(deps: Deps) -> None:
    if isinstance(deps.bus, RedisBus) and not await deps.bus.ping():
        raise ConnectionError("redis did not answer")


def _broker(deps: Deps, broker: Any) -> Check:
    async def check() -> None:
        client = getattr(broker, "client", None)  # RedisBroker; the stub has none
        if client is not None:
            await asyncio.to_thread(client.ping)

    return check


async def _run(check: Check) -> dict[str, Any]:
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


async def detailed(deps: Deps, broker: Any) -> tuple[bool, dict[str, Any]]:
    """(healthy, report): every dependency checked concurrently, none waited on long."""
    checks: dict[str, Check] = {
        "database": lambda: _database(deps),
        "redis": lambda: _bus(deps),
        "broker": _broker(deps, broker),
        "storage": deps.storage.ping,
    }
    results = await asyncio.gather(*(_run(check) for check in checks.values()))
    report = dict(zip(checks, results, strict=True))
    healthy = all(r["status"] == "ok" for r in results)
    return healthy, {"status": "ok" if healthy else "degraded", "checks": report}
