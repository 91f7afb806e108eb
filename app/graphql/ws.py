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
from collections.abc import AsyncGenerator
from contextlib import aclosing
from json import JSONDecodeError
from typing import TYPE_CHECKING, Any, cast

from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import OperationMessage
from strawberry.types.execution import ExecutionResult, PreExecutionError

from app.graphql.context import Context
from app.graphql.live import Handoff, LiveOperation, offer, offered

if TYPE_CHECKING:
    from strawberry.schema.schema import StreamResult

# Operations of one process setting up at once over graphql-transport-ws (see `setups`).
WS_SETUPS = 32


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """Sends every message as a text frame. Strawberry sends a binary frame whenever the
    view's JSON encoder returns bytes, as a fast encoder does for HTTP bodies; but both
    websocket protocols carry JSON text, and browser clients parse only text frames."""

    async def send_json(self, message: Any) -> None:
        try:
            await self.ws.send_text(self.view.encode_json_string(message))
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        """Strawberry's, without keeping the last message's text while the next is awaited
        (for a subscription's whole life, on a quiet connection)."""
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                try:
                    yield self.view.decode_json(await self.ws.receive_text())
                except JSONDecodeError as e:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from e
        except KeyError as e:
            raise NonTextMessageReceived from e
        except WebSocketDisconnect:  # pragma: no cover
            pass


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
    """Strawberry's handler, with server pings, and subscriptions that run without a task
    once live (app/graphql/live.py): `run_operation` offers each operation a handoff,
    and an operation taken over stays open with no task until its stream ends, the
    client completes it or the socket closes."""

    pinger: Pinger = Pinger(0)  # create_app gives each app's handlers a pinger of its own
    # How many operations of the process may be setting up at once (create_app gives each
    # app one): until its first result or its handoff, an operation holds a task and a
    # dozen frames, ~20 KiB. Ten thousand clients subscribing at once held all of it at
    # the same time, and a process keeps memory it has once had.
    setups: asyncio.Semaphore | None = None
    setup_seconds = 5.0  # the longest an operation holds its place among `setups`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_sent = asyncio.get_running_loop().time()
        self._live: dict[str, LiveOperation] | None = None

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        # Cancelled (or done) by now; kept, it held a task and its exception for the
        # connection's life.
        self.connection_init_timeout_task = None

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Strawberry's, except that an operation whose live phase was taken over
        (`Handoff.take`) ends its task without `complete`: it goes on without one."""
        if self.setups is not None:
            await self.setups.acquire()
        handoff = Handoff(self, operation, self.setups.release if self.setups else None)
        offer(handoff)  # seen by the resolvers this task runs, and by nothing else
        # One that neither yields nor goes live (the bus is down: it polls the table)
        # gives its place back all the same.
        timer = asyncio.get_running_loop().call_later(self.setup_seconds, handoff.settle)
        try:
            result_source = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=self.context,
                root_value=self.root_value,
                operation_name=operation.operation_name,
            )
            async with aclosing(result_source):
                await self._send_result_stream(operation, result_source)
            if handoff.taken:
                # This task ends here, and the live operation keeps its own template of
                # the document and variables.
                operation.task = None
                operation.query, operation.variables = "", None
                return
            await operation.send_operation_message({"id": operation.id, "type": "complete"})
        except _OperationStreamClosed:
            return
        except Exception as error:  # pragma: no cover - as strawberry's
            await self.handle_task_exception(error)
            with contextlib.suppress(Exception):
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise
        finally:
            timer.cancel()
            handoff.close()

    async def _send_result_stream(
        self, operation: Operation[Context, None], result_source: StreamResult
    ) -> None:
        """Strawberry's; the operation has set up once its first result is here."""
        is_first_result = True
        async for result in result_source:
            if is_first_result:
                handoff = offered()
                if handoff is not None:
                    handoff.settle()
                if isinstance(result, PreExecutionError):
                    await self._handle_pre_execution_error(operation, result)
                    return
            if not isinstance(result, ExecutionResult):
                await self._reject_incremental_delivery(operation)
                return
            await operation.send_next(result)
            is_first_result = False

    async def handle_message(self, message: Message) -> None:
        try:
            await super().handle_message(message)
        finally:
            # Strawberry's loop keeps the last message while it awaits the next: the
            # subscribe message (its document and variables, taken by the operation) for
            # a subscription's whole life.
            if isinstance(message, dict):
                cast("dict[str, object]", message).clear()

    def adopt(self, live: LiveOperation) -> None:
        if self._live is None:
            self._live = {}
        self._live[live.id] = live

    def forget_live(self, operation_id: str) -> None:
        """A live operation has ended on its own: its id is free again."""
        if self._live is not None:
            self._live.pop(operation_id, None)
        self.operations.pop(operation_id, None)

    async def cleanup_operation(self, operation_id: str) -> None:
        live = self._live.pop(operation_id, None) if self._live else None
        if live is None:
            await super().cleanup_operation(operation_id)
            return
        self.operations.pop(operation_id, None)
        live.stop()

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
