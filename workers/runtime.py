"""The resources actors use, built lazily on the worker's own event loop.

Async engines and HTTP clients belong to the loop that created them; Dramatiq runs
async actors on its own loop thread, so the API's resources cannot be shared.
"""

from __future__ import annotations

import asyncio

from app.bus import EventBus
from app.config import Settings
from app.deps import Deps, build_bus, build_deps
from app.queue import JobQueue


class WorkerRuntime:
    def __init__(self, settings: Settings, *, bus: EventBus | None, queue: JobQueue) -> None:
        """`bus` None: build one on the worker's loop (a Redis bus, in a worker process)."""
        self.settings = settings
        self._bus, self._queue = bus, queue
        self._deps: Deps | None = None
        self._lock = asyncio.Lock()

    async def deps(self) -> Deps:
        if self._deps is None:
            async with self._lock:
                if self._deps is None:
                    bus = self._bus or build_bus(self.settings)
                    self._deps = build_deps(self.settings, bus=bus, queue=self._queue)
        return self._deps

    async def aclose(self) -> None:
        if self._deps is not None:
            if self._bus is None:
                await self._deps.bus.close()
            await self._deps.aclose()
            self._deps = None
