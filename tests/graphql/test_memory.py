"""What an operation allocates goes when it is done: a live subscription holds the same
memory after its thousandth event as after its hundredth, and a finished HTTP operation
leaves nothing for the garbage collector, whose full collections stop the event loop
for every client at once."""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager

import httpx
import strawberry
from graphql.execution.collect_fields import FieldDetails

from app.config import Settings
from app.graphql.context import Context
from app.graphql.errors import LumiSchema
from app.main import create_app
from tests.conftest import token_for


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
    # graphql-core's per-event executors shared one memo that kept ~12 objects per event
    assert grown < 200, f"{grown} objects more after 2,000 events"


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """What becomes garbage only the collector can free (reference cycles) meanwhile."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[object] = []
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


GALLERY = """query Gallery { publicModels(first: 20) {
  edges { node { id name likeCount likedByMe owner { displayName } } }
  pageInfo { hasNextPage endCursor } } }"""


async def test_a_finished_http_operation_leaves_no_cycles_behind(settings: Settings) -> None:
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {token_for('ada')}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            for _ in range(3):  # warm: the viewer's row, statement caches
                await client.post("/graphql", json={"query": GALLERY}, headers=headers)
            with cyclic_garbage() as garbage:
                for _ in range(10):
                    answer = await client.post("/graphql", json={"query": GALLERY}, headers=headers)
                    assert answer.json()["data"]["publicModels"]["pageInfo"]
            contexts = [o for o in garbage if isinstance(o, Context)]
            fields = [o for o in garbage if isinstance(o, FieldDetails)]
    # Before: each operation's context (request, scope, loaders) and executor (collected
    # fields, results) sat in cycles until a collection.
    assert (len(contexts), len(fields)) == (0, 0)
