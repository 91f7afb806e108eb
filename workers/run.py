"""`lumi worker`: a process of Dramatiq worker threads running the pipeline stages."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from prometheus_client import start_http_server

from app.config import Settings
from app.heap import tune_collector
from app.metrics import WORKER_REGISTRY
from app.queue import WORKER_TIMEOUT_MS, DramatiqQueue, build_broker
from workers.actors import declare_actors
from workers.health import HealthServer
from workers.poller import Poller
from workers.runtime import WorkerRuntime
from workers.sweeper import Sweeper
from workers.watchdog import ConsumerWatchdog
from workers.webhooks import WebhookCourier

log = logging.getLogger(__name__)


def run_worker(settings: Settings, *, threads: int | None = None) -> int:
    if settings.broker == "embedded":
        log.error("LUMI_BROKER is 'embedded': the API runs the stages itself; set it to 'redis'")
        return 2
    broker = build_broker(settings)
    runtime = WorkerRuntime(settings, bus=None, queue=DramatiqQueue(broker))
    declare_actors(broker, runtime)
    worker = dramatiq.Worker(
        broker,
        worker_threads=threads or settings.worker_threads,
        worker_timeout=WORKER_TIMEOUT_MS,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping after the current messages", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.worker_metrics_port:
        start_http_server(
            settings.worker_metrics_port, addr=settings.host, registry=WORKER_REGISTRY
        )
    health = None
    if settings.worker_health_port:  # bound before the start: a taken port stops it here
        health = HealthServer(settings.host, settings.worker_health_port, worker)
        health.start()
    worker.start()
    loop_thread = get_event_loop_thread()
    assert loop_thread is not None, "the AsyncIO middleware starts it with the worker"
    sweeper = Sweeper(runtime)
    sweeper.start(loop_thread.loop)
    poller = Poller(runtime)  # this process's 3D polls, many jobs per round
    poller.start(loop_thread.loop)
    webhooks = WebhookCourier(runtime)  # this process's webhook deliveries
    webhooks.start(loop_thread.loop)
    tune_collector()
    log.info("worker started with %s threads", worker.worker_threads)
    # Until a signal: this thread restarts consumer threads that die (workers/watchdog.py).
    mended = ConsumerWatchdog(worker).watch(stop, settings.worker_watchdog_seconds)
    webhooks.stop()
    poller.stop()
    sweeper.stop()
    if loop_thread is not None:
        loop_thread.run_coroutine(runtime.aclose())
    worker.stop(timeout=10_000)
    broker.close()
    if health is not None:
        health.stop()
    return 0 if mended else 1
