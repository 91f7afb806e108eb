"""The resources actors use, built lazily on the worker's own event loop, and the
launcher that runs their stages there.

Async engines and HTTP clients belong to the loop that created them; Dramatiq runs
async actors on its own loop thread, so the API's resources cannot be shared.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any

from dramatiq.asyncio import get_event_loop_thread

from app.bus import EventBus
from app.config import Settings
from app.deps import Deps, build_bus, build_deps
from app.queue import JobQueue


class StageLauncher:
    """Runs stages on the worker's event loop, at most `limit` at once, without holding
    the Dramatiq thread that fetched the message for the stage's whole life.

    A stage spends most of its time waiting (on the database, on a vendor): were each
    one to hold a thread, a worker would run only as many stages at once as it has
    threads. A thread now waits only while `limit` stages are already running, which
    is also the worker's backpressure. The message is acknowledged when its stage
    starts; a stage lost with its process is found by the sweeper (its job's heartbeat
    stops, or its job waits with no message), as DESIGN §4 has it for any lost message.
    """

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._running: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()

    def launch(self, stage: Coroutine[Any, Any, None]) -> None:
        """Called from a Dramatiq thread: waits for a free slot, then starts `stage`."""
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            stage.close()
            raise RuntimeError("the AsyncIO middleware's event loop is not running")
        self._slots.acquire()
        try:
            future = asyncio.run_coroutine_threadsafe(stage, loop_thread.loop)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._running.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._running.discard(future)
        self._slots.release()

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    async def drain(self, timeout: float) -> None:
        """On the loop: waits up to `timeout` seconds for the running stages to end."""
        with self._lock:
            running = [asyncio.wrap_future(future) for future in self._running]
        if running:
            await asyncio.wait(running, timeout=timeout)


class WorkerRuntime:
    def __init__(self, settings: Settings, *, bus: EventBus | None, queue: JobQueue) -> None:
        """`bus` None: build one on the worker's loop (a Redis bus, in a worker process)."""
        self.settings = settings
        self._bus, self._queue = bus, queue
        self._deps: Deps | None = None
        self._lock = asyncio.Lock()
        self.stages = StageLauncher(settings.stage_concurrency)

    async def deps(self) -> Deps:
        if self._deps is None:
            async with self._lock:
                if self._deps is None:
                    bus = self._bus or build_bus(self.settings)
                    self._deps = build_deps(self.settings, bus=bus, queue=self._queue)
        return self._deps

    async def aclose(self, drain_seconds: float = 10.0) -> None:
        """Lets the running stages end (up to `drain_seconds`), then closes what they use.
        A stage cut short (or started meanwhile) leaves its job to the sweeper, like any
        stage lost with its process. (Pausing the Dramatiq worker first took seconds.)"""
        await self.stages.drain(drain_seconds)
        if self._deps is not None:
            if self._bus is None:
                await self._deps.bus.close()
            await self._deps.aclose()
            self._deps = None
