"""graphql-transport-ws as its specification says, plus what strawberry leaves out.

Strawberry closes 4400 (invalid message), 4401 (subscribe before ack), 4403 (a
connection_init whose token is refused), 4408 (no connection_init in time), 4409
(duplicate id) and 4429 (a second connection_init). This handler adds:
- 4403 when a connection that sent no token subscribes (every subscription needs one);
- server pings on a quiet connection, so proxies and clients learn it is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from graphql import GraphQLError, OperationType
from graphql.language import OperationDefinitionNode
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    Message,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import OperationMessage

from app.graphql.context import Context
from app.graphql.errors import LumiSchema
from app.graphql.gate import Documents


def is_subscription(documents: Documents, query: str, operation_name: str | None) -> bool:
    """Whether the operation is a subscription. The document is read within the same
    size and token limits (and through the same cache) as every operation: a parse
    here, before any check, is what one anonymous message used to freeze the process."""
    try:
        document = documents.parse(query)
    except GraphQLError:
        return False  # the operation itself answers the refusal
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None or (definition.name and definition.name.value == operation_name)
        ):
            return definition.operation is OperationType.SUBSCRIPTION
    return False


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    ping_interval: float = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_sent = asyncio.get_running_loop().time()
        self._pinger: asyncio.Task[None] | None = None

    async def handle(self) -> None:
        if self.ping_interval > 0:
            self._pinger = asyncio.create_task(self._ping_when_quiet())
        try:
            await super().handle()
        finally:
            if self._pinger is not None:
                self._pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pinger

    async def _ping_when_quiet(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            quiet = loop.time() - self._last_sent
            if quiet < self.ping_interval:
                await asyncio.sleep(self.ping_interval - quiet)
                continue
            if self.connection_acknowledged:
                with contextlib.suppress(Exception):  # the connection is closing
                    await self.send_message({"type": "ping"})
            else:
                self._last_sent = loop.time()

    async def send_message(self, message: Message) -> None:
        self._last_sent = asyncio.get_running_loop().time()
        await super().send_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged and await self._needs_a_token(message):
            await self.websocket.close(code=4403, reason="Forbidden")
            return
        await super().handle_subscribe(message)

    async def _needs_a_token(self, message: SubscribeMessage) -> bool:
        payload = message.get("payload") or {}
        query = payload.get("query")
        if not isinstance(query, str):
            return False
        assert isinstance(self.schema, LumiSchema)
        if not is_subscription(self.schema.documents, query, payload.get("operationName")):
            return False
        return await self.context.viewer() is None


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws protocol. A message for a peer that has gone is dropped:
    strawberry's handler sends `complete` as an operation ends, and when that was
    because the socket closed, the send raised out of the operation's task ("Task
    exception was never retrieved")."""

    async def send_message(self, message: OperationMessage) -> None:
        with contextlib.suppress(WebSocketDisconnected):
            await super().send_message(message)
