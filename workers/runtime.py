"""The resources actors use, built lazily on the worker's own event loop, and the
launcher that runs their stages there.

Async engines and HTTP clients belong to the loop that created them; Dramatiq runs
async actors on its own loop thread, so the API's resources cannot be shared.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any

from dramatiq.asyncio import get_event_loop_thread

from app.bus import EventBus
from app.config import Settings
from app.deps import Deps, build_bus, build_deps
from app.queue import JobQueue

log = logging.getLogger(__name__)


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


class LoopService:
    """A coroutine a worker process runs on its event loop for its whole life (the
    sweeper, the 3D poller), started and stopped from another thread.

    `stop` lets a round under way end, waiting up to STOP_SECONDS, rather than
    cancelling it mid-query: a cancelled session goes back to its pool in the
    background, and the runtime may dispose of the engine first, leaving that
    connection open for good. `run` returns once `stopping` is set."""

    STOP_SECONDS = 10.0

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self._future: concurrent.futures.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def stopping(self) -> asyncio.Event:
        return self._stopping or asyncio.Event()

    async def run(self) -> None:
        raise NotImplementedError

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Made here, not in `run`: a `stop` that comes before `run` starts still counts.
        # (An Event binds to its loop only when first awaited.)
        self._stopping = asyncio.Event()
        self._future = asyncio.run_coroutine_threadsafe(self.run(), loop)

    def stop(self) -> None:
        future, self._future = self._future, None
        if future is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing runs
            self._loop.call_soon_threadsafe(self._set_stopping)
        try:
            future.result(timeout=self.STOP_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()  # one that hangs must not hold up shutdown
        except concurrent.futures.CancelledError:
            pass  # the loop went first
        except Exception:  # it ended either way; it logged its own failure
            log.debug("%s ended with an error", type(self).__name__, exc_info=True)

    def _set_stopping(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
