"""Live subscriptions over graphql-transport-ws (app/graphql/live.py): once replayed, a
subscription waits with no task of its own, and still delivers every event once, in
order, with `complete` after the last; a client's `complete` stops it at once.

The gateway runs in this process and is spoken to in raw ASGI websocket messages, so a
test sees exactly what a client would, and the tasks the process holds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette

from app.bus import request_channel
from app.deps import Deps
from app.graphql.relay import global_id
from app.main import create_app
from app.requests import repository
from app.unit import event_payload
from tests.conftest import token_for
from tests.requests.test_stream import SilentBus
from tests.workers.test_pipeline import a_viewer, deliver, submit

FOLLOW = """subscription Follow($id: ID!, $after: Int! = 0) {
  requestUpdates(id: $id, afterSeq: $after) { seq status }
}"""


class Socket:
    """One client websocket to the app, as raw ASGI messages."""

    def __init__(self, app: Starlette, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.to_server: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.to_client: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"gateway"),
                (b"sec-websocket-protocol", b"graphql-transport-ws"),
                *headers,
            ],
            "subprotocols": ["graphql-transport-ws"],
            "server": ("gateway", 80),
            "client": ("127.0.0.1", 50000),
        }
        self.task = asyncio.create_task(app(scope, self.to_server.get, self.to_client.put))

    async def open(self, user: str) -> None:
        await self.to_server.put({"type": "websocket.connect"})
        self.accepted = await self._frame()
        assert self.accepted["type"] == "websocket.accept"
        await self.send({"type": "connection_init", "payload": {"token": token_for(user)}})
        assert (await self.receive())["type"] == "connection_ack"

    async def send(self, message: dict[str, Any]) -> None:
        await self.to_server.put({"type": "websocket.receive", "text": json.dumps(message)})

    async def receive(self, timeout: float = 5) -> dict[str, Any]:
        while True:
            frame = await self._frame(timeout)
            assert frame["type"] == "websocket.send", frame
            message = dict(json.loads(frame["text"]))
            if message["type"] != "ping":
                return message

    async def _frame(self, timeout: float = 5) -> dict[str, Any]:
        return await asyncio.wait_for(self.to_client.get(), timeout)

    async def until_complete(self, operation_id: str) -> list[int]:
        """The seqs of `operation_id`'s events up to its `complete` (others' fail)."""
        seqs = []
        while (message := await self.receive())["type"] != "complete":
            assert message["type"] == "next", message
            assert message["id"] == operation_id, message
            seqs.append(message["payload"]["data"]["requestUpdates"]["seq"])
        assert message["id"] == operation_id
        return seqs

    async def close(self) -> None:
        await self.to_server.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 5)


@asynccontextmanager
async def gateway(deps: Deps) -> AsyncIterator[Starlette]:
    """The app on the test's deps (in-process bus, a queue the test delivers by hand)."""
    app = create_app(deps.settings)
    app.state.deps = deps
    sockets: list[Socket] = []
    app.state.sockets = sockets
    try:
        yield app
    finally:
        for socket in sockets:
            if not socket.task.done():
                await socket.close()


async def connect(app: Starlette, user: str) -> Socket:
    socket = Socket(app)
    app.state.sockets.append(socket)
    await socket.open(user)
    return socket


def subscribe(request_id: str, after: int = 0) -> dict[str, Any]:
    return {"query": FOLLOW, "variables": {"id": request_id, "after": after}}


async def settled() -> int:
    """The tasks alive once what is under way has finished."""
    for _ in range(20):
        await asyncio.sleep(0.01)
    return len(asyncio.all_tasks())


async def test_idle_live_subscriptions_hold_no_task_and_still_deliver_every_event(
    deps: Deps,
) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    async with gateway(deps) as app:
        sockets = [await connect(app, "alice") for _ in range(10)]
        before = await settled()
        for socket in sockets:
            await socket.send({"id": "1", "type": "subscribe", "payload": subscribe(request_id)})
        for socket in sockets:  # the replay: the request's first event
            first = await socket.receive()
            assert first["payload"]["data"]["requestUpdates"]["seq"] == 1
        idle = await settled() - before
        await deliver(deps)  # the whole pipeline, published live
        async with deps.db.read() as session:
            last = len(await repository.events_after(session, request_id, 0))
        for socket in sockets:
            assert await socket.until_complete("1") == list(range(2, last + 1))
    # Each used to keep a task (and a dozen suspended frames, ~20 KiB) while it waited.
    assert idle < len(sockets) / 2, f"{idle} more tasks for {len(sockets)} idle subscriptions"


async def test_a_live_subscription_backfills_a_gap_and_drops_duplicates(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    async with gateway(deps) as app:
        socket = await connect(app, "alice")
        await socket.send({"id": "1", "type": "subscribe", "payload": subscribe(request_id)})
        assert (await socket.receive())["payload"]["data"]["requestUpdates"]["seq"] == 1
        await settled()  # live by now
        bus = deps.bus
        deps.bus = SilentBus(bus)  # type: ignore[assignment]
        await deliver(deps)  # every publish of the run is lost...
        deps.bus = bus
        async with deps.db.read() as session:
            history = await repository.events_after(session, request_id, 0)
        channel = request_channel(request_id)
        # ...but the first one after the replay, twice, and then the last one.
        for event in (history[1], history[1], history[0], history[-1]):
            await bus.publish(channel, event_payload(event))
        assert await socket.until_complete("1") == list(range(2, len(history) + 1))


async def test_a_completed_live_subscription_stops_and_frees_its_id(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    async with gateway(deps) as app:
        socket = await connect(app, "alice")
        await socket.send({"id": "1", "type": "subscribe", "payload": subscribe(request_id)})
        assert (await socket.receive())["payload"]["data"]["requestUpdates"]["seq"] == 1
        await settled()
        await socket.send({"id": "1", "type": "complete"})
        # The same id again (a 4409 close while the first still ran), resuming after 1.
        await socket.send({"id": "1", "type": "subscribe", "payload": subscribe(request_id, 1)})
        await settled()
        await deliver(deps)
        async with deps.db.read() as session:
            last = len(await repository.events_after(session, request_id, 0))
        # Each event once: the completed subscription sent none of them.
        assert await socket.until_complete("1") == list(range(2, last + 1))


async def test_a_live_event_resolves_its_nested_fields_for_the_viewer(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    query = """subscription Follow($id: ID!) {
      requestUpdates(id: $id) { seq request { id status } }
    }"""
    async with gateway(deps) as app:
        socket = await connect(app, "alice")
        await socket.send(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": query, "variables": {"id": request_id}},
            }
        )
        assert (await socket.receive())["payload"]["data"]["requestUpdates"]["seq"] == 1
        await settled()
        await deliver(deps)
        received = []
        while (message := await socket.receive())["type"] == "next":
            received.append(message["payload"])
    assert all("errors" not in payload for payload in received), received
    requests = [payload["data"]["requestUpdates"]["request"] for payload in received]
    assert {request["id"] for request in requests} == {global_id("GenerationRequest", request_id)}
    assert requests[-1]["status"] == "COMPLETED"


async def test_live_subscriptions_differing_in_a_variable_each_get_their_own_selection(
    deps: Deps,
) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    query = """subscription Follow($id: ID!, $withStatus: Boolean!) {
      requestUpdates(id: $id) { seq status @include(if: $withStatus) }
    }"""
    async with gateway(deps) as app:
        sockets = {flag: await connect(app, "alice") for flag in (True, False)}
        for flag, socket in sockets.items():
            variables = {"id": request_id, "withStatus": flag}
            payload = {"query": query, "variables": variables}
            await socket.send({"id": "1", "type": "subscribe", "payload": payload})
            await socket.receive()
        await settled()
        await deliver(deps)
        shapes = {}
        for flag, socket in sockets.items():
            message = await socket.receive()
            shapes[flag] = set(message["payload"]["data"]["requestUpdates"])
    assert shapes == {True: {"seq", "status"}, False: {"seq"}}


async def test_a_websocket_handshake_answers_with_its_request_id(deps: Deps) -> None:
    async with gateway(deps) as app:
        given = Socket(app, [(b"x-request-id", b"f" * 32)])
        app.state.sockets.append(given)
        await given.open("alice")
        made = await connect(app, "alice")
    assert (b"x-request-id", b"f" * 32) in given.accepted["headers"]
    assert [v for k, v in made.accepted["headers"] if k == b"x-request-id"] != []
