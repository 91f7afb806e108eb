"""A live subscription holds the same memory after its thousandth event as after its
hundredth: what one event's execution allocates goes when the event is sent."""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator

import strawberry

from app.graphql.errors import LumiSchema


@strawberry.type
class Event:
    seq: int
    step: str


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def events(self) -> AsyncGenerator[Event, None]:
        seq = 0
        while True:
            seq += 1
            yield Event(seq=seq, step="working")


def tracked_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


async def test_a_subscription_does_not_grow_with_the_events_it_delivers() -> None:
    schema = LumiSchema(query=Query, subscription=Subscription)
    stream = await schema.subscribe("subscription { events { seq step } }")
    assert not isinstance(stream, strawberry.types.ExecutionResult)
    try:
        for _ in range(200):
            result = await anext(stream)  # warm: caches and the first events
        before = tracked_objects()
        for _ in range(2000):
            result = await anext(stream)
        grown = tracked_objects() - before
        assert result.data == {"events": {"seq": 2200, "step": "working"}}
    finally:
        await stream.aclose()
    # graphql-core's per-event executors shared one memo that kept ~6 objects per event
    assert grown < 200, f"{grown} objects more after 2,000 events"
