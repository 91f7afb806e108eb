"""graphql-transport-ws as its specification says, plus what strawberry leaves out.

Strawberry closes 4400 (invalid message), 4401 (subscribe before ack), 4403 (a
connection_init whose token is refused), 4408 (no connection_init in time), 4409
(duplicate id) and 4429 (a second connection_init). A connection that sent no token is
acknowledged: it may run public queries, and a subscription it may not run (every one
needs a token) answers that operation with an `error` message, code UNAUTHENTICATED,
on a socket that stays open. Closing it 4403 instead made graphql-ws clients such as
GraphiQL's reconnect in a loop without ever showing why. This handler adds server pings
on a quiet connection (`Pinger`), so proxies and clients learn it is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
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


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """Sends every message as a text frame. Strawberry sends a binary frame whenever the
    view's JSON encoder returns bytes, as a fast encoder does for HTTP bodies; but both
    websocket protocols carry JSON text, and browser clients parse only text frames."""

    async def send_json(self, message: Any) -> None:
        try:
            await self.ws.send_text(self.view.encode_json_string(message))
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class Pinger:
    """Pings every quiet graphql-transport-ws connection of a process from one task.

    A task per connection (each sleeping until its own connection's next ping) cost
    every live subscription a task, a coroutine and a timer. This one wakes every tenth
    of the interval and pings the connections that have sent nothing for about an
    interval, each ping a short task of its own so that one slow peer holds up no other.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._handlers: set[TransportWSHandler] = set()
        self._sending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, handler: TransportWSHandler) -> None:
        if self.interval <= 0:
            return
        self._handlers.add(handler)
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._task = asyncio.create_task(self._run(), name="websocket-pinger")

    def discard(self, handler: TransportWSHandler) -> None:
        self._handlers.discard(handler)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        for pending in [task, *self._sending]:
            if pending is not None and pending.get_loop() is asyncio.get_running_loop():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = max(self.interval / 10, 0.05)
        while self._handlers:
            await asyncio.sleep(tick)
            now = loop.time()
            for handler in list(self._handlers):
                if now - handler.last_sent < self.interval - tick / 2:
                    continue
                handler.last_sent = now
                if handler.connection_acknowledged:
                    sending = asyncio.create_task(handler.ping())
                    self._sending.add(sending)
                    sending.add_done_callback(self._sending.discard)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    pinger: Pinger = Pinger(0)  # create_app gives each app's handlers a pinger of its own

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_sent = asyncio.get_running_loop().time()

    async def handle(self) -> None:
        self.pinger.add(self)
        try:
            await super().handle()
        finally:
            self.pinger.discard(self)

    async def ping(self) -> None:
        with contextlib.suppress(Exception):  # the connection is closing
            await self.send_message({"type": "ping"})

    async def send_message(self, message: Message) -> None:
        self.last_sent = asyncio.get_running_loop().time()
        await super().send_message(message)


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws protocol. A message for a peer that has gone is dropped:
    strawberry's handler sends `complete` as an operation ends, and when that was
    because the socket closed, the send raised out of the operation's task ("Task
    exception was never retrieved")."""

    async def send_message(self, message: OperationMessage) -> None:
        with contextlib.suppress(WebSocketDisconnected):
            await super().send_message(message)
