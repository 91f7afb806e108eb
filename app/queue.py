"""The job queue as the app sees it: send a stage message by name, after commit.

The broker is Dramatiq's: a StubBroker consumed by worker threads inside the API
process when embedded, a RedisBroker shared with separate worker processes in
production. Actors live in `workers/`; the app only needs their names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage

from app.config import Settings
from app.observability import request_id

DEFAULT_QUEUE = "default"


@dataclass(frozen=True, slots=True)
class StageMessage:
    """A message for one pipeline actor: its name, positional args and a delay."""

    stage: str
    args: tuple[Any, ...] = ()
    delay_seconds: float = 0.0
    queue: str = field(default=DEFAULT_QUEUE)


class JobQueue(Protocol):
    def send(self, message: StageMessage) -> None: ...


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
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CurrentMessage())
    broker.declare_queue(DEFAULT_QUEUE)
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
                actor_name=message.stage,
                args=message.args,
                kwargs={},
                options={"request_id": rid} if rid else {},
            ),
            delay=delay_ms,
        )

    def depths(self) -> dict[str, int]:
        """Messages waiting per queue, delayed ones included."""
        names = set(self.broker.get_declared_queues()) | set(
            self.broker.get_declared_delay_queues()
        )
        client = getattr(self.broker, "client", None)
        if client is not None:  # RedisBroker keeps each queue as a list of message ids
            namespace = getattr(self.broker, "namespace", "dramatiq")
            return {name: int(client.llen(f"{namespace}:{name}")) for name in names}
        return {name: self.broker.queues[name].qsize() for name in names}
