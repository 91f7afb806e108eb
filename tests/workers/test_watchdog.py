"""A worker's consumer threads: one that dies as Dramatiq's do in a Redis outage is
started again by the watchdog, and the worker's health endpoint tells the truth."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO
from dramatiq.worker import ConsumerThread

from app.metrics import WORKER_REGISTRY
from tests.e2e.test_redis_outage import OwnRedis
from workers import watchdog
from workers.health import HealthServer
from workers.watchdog import ConsumerWatchdog

DELAYED = "default.DQ"

# A consumer killed here dies of an unhandled exception, as in the wild.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


class Running:
    """A Dramatiq worker on a redis-server of its own, with one actor and `/health`."""

    def __init__(self, redis_url: str) -> None:
        self.broker = RedisBroker(url=redis_url, namespace="watchdog")  # type: ignore[no-untyped-call]
        self.broker.add_middleware(AsyncIO())  # the health endpoint checks its loop too
        self.ran: list[int] = []
        self.actor = dramatiq.Actor(
            self.ran.append,
            broker=self.broker,
            actor_name="record",
            queue_name="default",
            priority=0,
            options={"max_retries": 0},
        )
        self.worker = dramatiq.Worker(self.broker, worker_threads=1, worker_timeout=50)
        self.health = HealthServer("127.0.0.1", 0, self.worker)  # 0: any free port

    def health_report(self) -> tuple[int, dict[str, Any]]:
        response = httpx.get(f"http://127.0.0.1:{self.health.port}/health", timeout=5)
        return response.status_code, response.json()

    def kill_delayed_consumer(self) -> ConsumerThread:
        """Kills the delay queue's consumer the way a Redis outage does: moving a due
        message fails with redis-py's ConnectionError, and so does the cleanup after."""

        def refused(*_: object) -> None:
            raise redis.ConnectionError("Error 111 connecting to Redis. Connection refused.")

        thread = self.worker.consumers[DELAYED]
        thread.handle_delayed_messages = refused  # type: ignore[method-assign]
        thread.close = refused  # type: ignore[method-assign]
        thread.join(timeout=5)
        assert not thread.is_alive()
        del thread.close  # for Worker.stop at the end, once Redis is "back"
        return thread


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    own = OwnRedis(tmp_path)
    own.start()
    try:
        built = Running(f"redis://127.0.0.1:{own.port}/0")
        built.health.start()
        built.worker.start()
        try:
            yield built
        finally:
            built.worker.stop(timeout=2000)
            built.broker.close()
            built.health.stop()
    finally:
        own.stop()


def sample(name: str) -> float | None:
    """The worker's metric `name` for the delay queue's consumer, as /metrics shows it."""
    return WORKER_REGISTRY.get_sample_value(name, {"queue": DELAYED})


def eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_dead_consumer_is_started_again_and_health_reports_it(running: Running) -> None:
    status, report = running.health_report()
    assert status == 200
    assert report["consumers"] == {"default": "ok", DELAYED: "ok"}
    assert report["eventLoop"] == "ok"
    restarts = sample("lumi_worker_consumer_restarts_total") or 0

    dead = running.kill_delayed_consumer()
    status, report = running.health_report()  # dead, and nothing has restored it yet
    assert (status, report["status"]) == (503, "down")
    assert report["consumers"] == {"default": "ok", DELAYED: "dead"}

    stop = threading.Event()
    watching = threading.Thread(target=ConsumerWatchdog(running.worker).watch, args=(stop, 0.05))
    watching.start()
    try:
        eventually(lambda: running.health_report()[0] == 200)
        assert running.worker.consumers[DELAYED] is not dead
        assert sample("lumi_worker_consumers_alive") == 1
        assert sample("lumi_worker_consumer_restarts_total") == restarts + 1
        running.actor.send_with_options(args=(7,), delay=100)  # moved by the new consumer
        eventually(lambda: running.ran == [7])
    finally:
        stop.set()
        watching.join()


def test_a_consumer_stopped_on_purpose_is_left_stopped(running: Running) -> None:
    thread = running.worker.consumers[DELAYED]
    thread.stop()  # what Worker.stop does first when the worker shuts down
    thread.join(timeout=5)
    ConsumerWatchdog(running.worker).check()
    assert running.worker.consumers[DELAYED] is thread
    assert running.health_report()[0] == 503
    assert sample("lumi_worker_consumers_alive") == 0


def test_the_watchdog_gives_up_when_a_consumer_cannot_be_started_again(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Unstartable(ConsumerThread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(watchdog, "ConsumerThread", Unstartable)
    running.kill_delayed_consumer()
    # False: `lumi worker` then exits non-zero, and its supervisor starts a new one.
    assert ConsumerWatchdog(running.worker).watch(threading.Event(), 0.01) is False
