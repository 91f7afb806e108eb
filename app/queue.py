"""The job queue as the app sees it: send a stage message by name, after commit.

The broker is Dramatiq's: a StubBroker consumed by worker threads inside the API
process when embedded, a RedisBroker shared with separate worker processes in
production. Actors live in `workers/`; the app only needs their names.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.middleware import AsyncIO, CurrentMessage

from app.config import Settings
from app.observability import request_id

DEFAULT_QUEUE = "default"
# One queue per request priority; workers take high before default before low.
QUEUES = ("high", "default", "low")
PRIORITY = {"high": 0, "default": 10, "low": 20}  # Dramatiq: lower runs first
# A job's queue on its row (`generation_jobs.queue_rank`): its place in that order.
QUEUE_RANK = {queue: rank for rank, queue in enumerate(QUEUES)}
# The longest an idle consumer sleeps between fetches (Dramatiq's default is 1 s). It
# also bounds how late a delayed message (a 3D poll, a retry) starts: a due message
# waits for the delay queue's consumer to move it, then for the work queue's to fetch it.
WORKER_TIMEOUT_MS = 100


def actor_name(stage: str, queue: str) -> str:
    """Each stage has one actor per queue, so a message's queue sets its priority."""
    return stage if queue == DEFAULT_QUEUE else f"{stage}_{queue}"


@dataclass(frozen=True, slots=True)
class StageMessage:
    """A message for one pipeline actor: its name, positional args and a delay."""

    stage: str
    args: tuple[Any, ...] = ()
    delay_seconds: float = 0.0
    queue: str = field(default=DEFAULT_QUEUE)


class JobQueue(Protocol):
    def send(self, message: StageMessage) -> None: ...

    def outstanding_job_ids(self) -> set[str]: ...


class Outstanding(dramatiq.Middleware):
    """The in-process broker's messages not yet processed, by the job they run.

    Lets the sweeper tell a job whose message waits in the queue from one whose message
    was lost; with the Redis broker the queues themselves are read instead.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, str] = {}
        self._lock = threading.Lock()

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        with self._lock:
            self._jobs[message.message_id] = str(message.args[0]) if message.args else ""

    def _done(self, message: Any) -> None:
        with self._lock:
            self._jobs.pop(message.message_id, None)

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        self._done(message)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._done(message)

    def job_ids(self) -> set[str]:
        with self._lock:
            return set(self._jobs.values())

    def forget(self) -> None:
        with self._lock:
            self._jobs.clear()


def build_broker(settings: Settings) -> dramatiq.Broker:
    """The broker named by settings, with the middleware async actors need."""
    broker: dramatiq.Broker
    if settings.broker == "redis":
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=settings.redis_url, namespace=f"{settings.redis_namespace}:jobs"
        )
    else:
        broker = StubBroker()
        broker.add_middleware(Outstanding())
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CurrentMessage())
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


class DramatiqQueue:
    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def send(self, message: StageMessage) -> None:
        delay_ms = int(message.delay_seconds * 1000) or None
        # The request id travels with the message, so the actor's log lines carry it.
        rid = request_id.get()
        self.broker.enqueue(
            dramatiq.Message(
                queue_name=message.queue,
                actor_name=actor_name(message.stage, message.queue),
                args=message.args,
                kwargs={},
                options={"request_id": rid} if rid else {},
            ),
            delay=delay_ms,
        )

    def _redis(self) -> tuple[Any, str] | None:
        client = getattr(self.broker, "client", None)
        if client is None:
            return None
        return client, getattr(self.broker, "namespace", "dramatiq")

    def outstanding_job_ids(self) -> set[str]:
        """Jobs with a message in the broker: queued, delayed or being processed."""
        redis = self._redis()
        if redis is None:
            for middleware in self.broker.middleware:
                if isinstance(middleware, Outstanding):
                    return middleware.job_ids()
            return set()
        client, namespace = redis
        found: set[str] = set()
        for queue in QUEUES:
            for name in (queue, dq_name(queue)):
                # Queued, delayed and unacknowledged messages all stay in this hash.
                for _, raw in client.hscan_iter(f"{namespace}:{name}.msgs", count=500):
                    args = json.loads(raw).get("args") or [""]
                    found.add(str(args[0]))
        return found

    def purge(self, queue: str) -> int:
        """Drops every message waiting in `queue` (and its delayed messages)."""
        redis = self._redis()
        dropped = 0
        for name in (queue, dq_name(queue)):
            if redis is None:
                waiting = self.broker.queues.get(name)
                if waiting is not None:
                    dropped += waiting.qsize()
                    self.broker.flush(name)
                continue
            client, namespace = redis
            dropped += int(client.hlen(f"{namespace}:{name}.msgs"))
            client.delete(f"{namespace}:{name}", f"{namespace}:{name}.msgs")
        return dropped

    def depths(self) -> dict[str, int]:
        """Messages waiting per queue, delayed ones included."""
        names = set(self.broker.get_declared_queues()) | set(
            self.broker.get_declared_delay_queues()
        )
        redis = self._redis()
        if redis is not None:  # RedisBroker keeps each queue as a list of message ids
            client, namespace = redis
            return {name: int(client.llen(f"{namespace}:{name}")) for name in names}
        return {name: self.broker.queues[name].qsize() for name in names}
