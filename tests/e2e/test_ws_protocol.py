"""graphql-transport-ws close codes, shown with raw websocket frames."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import Server, start_server, stop_server, token_for

pytestmark = pytest.mark.e2e

SUBSCRIBE = {
    "query": "subscription { myRequestUpdates { seq status } }",
}
GALLERY = {"query": "{ publicModels(first: 1) { edges { node { id } } } }"}


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp("ws")
    server = start_server(
        data_dir,
        name="ws",
        LUMI_WS_INIT_TIMEOUT_SECONDS="1",
        LUMI_WS_PING_INTERVAL_SECONDS="0.5",
        LUMI_MAX_SUBSCRIPTIONS_PER_CONNECTION="2",
        LUMI_MAX_SUBSCRIPTIONS_PER_USER="3",
    )
    yield server
    stop_server(server)


@asynccontextmanager
async def connect(server: Server) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(server.ws, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        yield ws


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def receive(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), timeout)
    # JSON text, as the protocol says: browsers' clients parse nothing else.
    assert isinstance(frame, str), f"a binary frame: {frame!r}"
    return dict(json.loads(frame))


async def closed_with(ws: ClientConnection, timeout: float = 5) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def init(ws: ClientConnection, user: str | None = "ws-user") -> None:
    payload = {"Authorization": f"Bearer {token_for(user)}"} if user else {}
    await send(ws, {"type": "connection_init", "payload": payload})
    assert (await receive(ws))["type"] == "connection_ack"


async def test_an_invalid_message_closes_4400(ws_server: Server) -> None:
    async with connect(ws_server) as ws:
        await init(ws)
        await send(ws, {"type": "nonsense"})
        assert await closed_with(ws) == 4400
    async with connect(ws_server) as ws:
        await ws.send("this is not json")
        assert await closed_with(ws) == 4400


async def test_subscribe_before_ack_closes_4401(ws_server: Server) -> None:
    async with connect(ws_server) as ws:
        await send(ws, {"id": "1", "type": "subscribe", "payload": SUBSCRIBE})
        assert await closed_with(ws) == 4401


async def test_a_bad_token_closes_4403(ws_server: Server) -> None:
    async with connect(ws_server) as ws:
        await send(ws, {"type": "connection_init", "payload": {"Authorization": "Bearer nope"}})
        assert await closed_with(ws) == 4403


async def test_a_missing_token_refuses_the_subscription_and_keeps_the_socket(
    ws_server: Server,
) -> None:
    """GraphiQL and other graphql-ws clients show an operation's `error`; a close made
    them reconnect in a loop without ever saying why."""
    async with connect(ws_server) as ws:
        await init(ws, user=None)
        await send(ws, {"id": "s", "type": "subscribe", "payload": SUBSCRIBE})
        refused = await receive(ws)
        assert (refused["type"], refused["id"]) == ("error", "s")
        assert refused["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        # The same socket still serves public queries, and the id is free again.
        await send(ws, {"id": "s", "type": "subscribe", "payload": GALLERY})
        answer = await receive(ws)
        assert (answer["type"], answer["id"]) == ("next", "s")
        assert (await receive(ws))["type"] == "complete"


async def test_the_legacy_protocol_also_refuses_with_an_error(ws_server: Server) -> None:
    async with websockets.connect(ws_server.ws, subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
        await send(ws, {"type": "connection_init", "payload": {}})
        assert (await receive(ws))["type"] == "connection_ack"
        await send(ws, {"id": "1", "type": "start", "payload": SUBSCRIBE})
        while (message := await receive(ws))["type"] == "ka":
            pass
        assert (message["type"], message["id"]) == ("error", "1")
        payload = message["payload"]
        errors = payload if isinstance(payload, list) else payload.get("errors", [payload])
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
        # The socket stays open: the next operation is answered too.
        await send(ws, {"id": "2", "type": "start", "payload": SUBSCRIBE})
        while (message := await receive(ws))["type"] == "ka":
            pass
        assert (message["type"], message["id"]) == ("error", "2"), message


async def test_no_connection_init_in_time_closes_4408(ws_server: Server) -> None:
    async with connect(ws_server) as ws:
        assert await closed_with(ws, timeout=5) == 4408


async def test_a_duplicate_operation_id_closes_4409(ws_server: Server) -> None:
    async with connect(ws_server) as ws:
        await init(ws)
        await send(ws, {"id": "same", "type": "subscribe", "payload": SUBSCRIBE})
        await send(ws, {"id": "same", "type": "subscribe", "payload": SUBSCRIBE})
        assert await closed_with(ws) == 4409


async def test_a_second_connection_init_closes_4429(ws_server: Server) -> None:
    async with connect(ws_server) as ws:
        await init(ws)
        await send(ws, {"type": "connection_init", "payload": {}})
        assert await closed_with(ws) == 4429


async def test_ping_is_answered_and_a_quiet_connection_is_pinged(ws_server: Server) -> None:
    async with connect(ws_server) as ws:
        await init(ws)
        await send(ws, {"type": "ping"})
        assert (await receive(ws))["type"] == "pong"
        assert (await receive(ws, timeout=3))["type"] == "ping"  # the server's own
        await send(ws, {"type": "pong"})
        await send(ws, {"id": "s", "type": "subscribe", "payload": SUBSCRIBE})
        await asyncio.sleep(0.2)
        await send(ws, {"id": "s", "type": "complete"})


async def refusals(ws: ClientConnection, window: float = 0.5) -> list[tuple[str, dict[str, Any]]]:
    """(operation id, error) of every subscription refused within `window` seconds
    (the server's pings on this quiet connection are not refusals)."""
    refused = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window
    while (left := deadline - loop.time()) > 0:
        try:
            message = await receive(ws, timeout=left)
        except TimeoutError:
            break
        if message["type"] == "error":
            refused.append((message["id"], message["payload"][0]))
        elif message["type"] == "next" and message["payload"].get("errors"):
            refused.append((message["id"], message["payload"]["errors"][0]))
    return refused


async def test_subscriptions_per_connection_and_per_user_are_limited(ws_server: Server) -> None:
    user = "ws-many"
    async with connect(ws_server) as first, connect(ws_server) as second:
        await init(first, user)
        await init(second, user)
        for n in range(3):
            await send(first, {"id": f"a{n}", "type": "subscribe", "payload": SUBSCRIBE})
        [(refused_id, error)] = await refusals(first)
        assert error["extensions"]["code"] == "LIMIT_EXCEEDED"
        assert error["extensions"]["scope"] == "connection"
        assert error["extensions"]["limit"] == 2
        # The second connection may hold one more: the user's third.
        await send(second, {"id": "b0", "type": "subscribe", "payload": SUBSCRIBE})
        await send(second, {"id": "b1", "type": "subscribe", "payload": SUBSCRIBE})
        [(_, error)] = await refusals(second)
        assert error["extensions"]["scope"] == "user"
        assert error["extensions"]["limit"] == 3
        # Completing one gives its slot back.
        held = next(f"a{n}" for n in range(3) if f"a{n}" != refused_id)
        await send(first, {"id": held, "type": "complete"})
        await asyncio.sleep(0.2)
        await send(second, {"id": "b2", "type": "subscribe", "payload": SUBSCRIBE})
        assert await refusals(second) == []
    # Closed connections give theirs back too.
    await asyncio.sleep(0.3)
    async with connect(ws_server) as third:
        await init(third, user)
        await send(third, {"id": "c0", "type": "subscribe", "payload": SUBSCRIBE})
        await send(third, {"id": "c1", "type": "subscribe", "payload": SUBSCRIBE})
        assert await refusals(third) == []


async def test_permessage_deflate_is_not_negotiated_by_default(ws_server: Server) -> None:
    """Small event messages gain little from it; each connection would hold ~40 KiB more."""
    async with connect(ws_server) as ws:  # the client offers it
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await init(ws)
