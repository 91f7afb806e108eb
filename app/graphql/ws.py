"""graphql-transport-ws as its specification says, plus what strawberry leaves out.

Strawberry closes 4400 (invalid message), 4401 (subscribe before ack), 4403 (a
connection_init whose token is refused), 4408 (no connection_init in time), 4409
(duplicate id) and 4429 (a second connection_init). A connection that sent no token is
acknowledged: it may run public queries, and a subscription it may not run (every one
needs a token) answers that operation with an `error` message, code UNAUTHENTICATED,
on a socket that stays open. Closing it 4403 instead made graphql-ws clients such as
GraphiQL's reconnect in a loop without ever showing why. This handler adds server pings
on a quiet connection, so proxies and clients learn it is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    Message,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import OperationMessage

from app.graphql.context import Context


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


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws protocol. A message for a peer that has gone is dropped:
    strawberry's handler sends `complete` as an operation ends, and when that was
    because the socket closed, the send raised out of the operation's task ("Task
    exception was never retrieved")."""

    async def send_message(self, message: OperationMessage) -> None:
        with contextlib.suppress(WebSocketDisconnected):
            await super().send_message(message)
