"""A graphql-transport-ws subscription past its replay, with no task of its own.

Strawberry runs each operation of a websocket as a task that drives a chain of
suspended generators (its stream and its extensions' hooks, graphql-core's mapping of
events to results, the resolver and the follow algorithm) for as long as the
subscription lives: some twenty frames, a task and an executor for each idle
subscription, most of what one cost. Here the handler (app/graphql/ws.py) offers each
operation's task a `Handoff`; a resolver that has replayed its history and would now
wait for the bus takes it, and hands its stream to a `LiveFollow`
(app/requests/stream.py) delivering to a `LiveOperation`. The operation's task then
ends without `complete`, and each later event is executed against the operation's
selection set by a `Template` shared by every subscription with the same document and
variables, and sent as a `next` message of the same shape strawberry sends.

Other transports (legacy graphql-ws, SSE, multipart) take no handoff and stream as
before.
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    Node,
    VariableNode,
    Visitor,
    get_operation_ast,
    visit,
)
from graphql.execution import execute_subscription_event
from starlette.websockets import WebSocketDisconnect
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    NextMessage,
    NextMessagePayload,
)

from app.graphql.context import Context
from app.graphql.errors import LumiSchema
from app.graphql.execution import LumiExecutor

if TYPE_CHECKING:
    from app.graphql.ws import TransportWSHandler
    from app.requests.stream import LiveFollow

# A send to a peer that has gone: the handler's shutdown stops the operation.
_GONE = (WebSocketDisconnected, WebSocketDisconnect, OSError, RuntimeError)
_TEMPLATES = 256

_offered: ContextVar[Handoff | None] = ContextVar("lumi_live_handoff", default=None)


def offered() -> Handoff | None:
    """The handoff the transport running this operation offers, if any."""
    return _offered.get()


def offer(handoff: Handoff) -> None:
    """Offers `handoff` to the operation this task runs (a task's context is its own)."""
    _offered.set(handoff)


class Handoff:
    """One operation's offer to take over its live phase."""

    __slots__ = ("_settled", "handler", "operation", "taken")

    def __init__(
        self,
        handler: TransportWSHandler,
        operation: Operation[Context, None],
        settled: Callable[[], None] | None = None,
    ) -> None:
        self.handler: TransportWSHandler | None = handler
        self.operation: Operation[Context, None] | None = operation
        self.taken = False
        self._settled = settled

    def close(self) -> None:
        """The operation's task is done. (A task it started, such as the bus's reader,
        keeps a copy of its context, this handoff included: it should not keep the
        connection too.)"""
        self.settle()
        self.handler = self.operation = None

    def settle(self) -> None:
        """The operation has set up (it is taken, has a first result, or has ended):
        `settled` is called, once."""
        settled, self._settled = self._settled, None
        if settled is not None:
            settled()

    def take(
        self, convert: Callable[[Any], object], release: Callable[[], None]
    ) -> LiveOperation | None:
        """A sink for the operation's next events: each goes through `convert` (to the
        value its subscription field yields), and `release` is called once as the
        operation ends. None when the operation is over or cannot be taken."""
        handler, operation = self.handler, self.operation
        if handler is None or operation is None or operation.completed:
            return None
        if handler.operations.get(operation.id) is not operation:
            return None
        schema = handler.schema
        if not isinstance(schema, LumiSchema):
            return None
        template = Template.of(
            schema, operation.query, operation.operation_name, operation.variables
        )
        if template is None:
            return None
        live = LiveOperation(handler, operation.id, template, convert, release)
        handler.adopt(live)
        self.taken = True
        self.settle()
        return live


class Template:
    """An operation's executor without a root value or context, shared by every live
    subscription of the same document, operation name and variables; each event runs
    on a copy of it (graphql-core's per-event executor)."""

    __slots__ = ("executor", "schema")
    _made: collections.OrderedDict[tuple[int, str, str | None, str], Template] = (
        collections.OrderedDict()
    )

    def __init__(self, schema: LumiSchema, executor: LumiExecutor) -> None:
        self.schema = schema
        self.executor = executor

    @classmethod
    def of(
        cls,
        schema: LumiSchema,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> Template | None:
        try:
            document = schema.documents.parse(query)
        except GraphQLError:
            return None
        try:
            # Variables that only pick the stream (`requestUpdates(id: $id)`) change no
            # event's result: one template serves every value of them.
            picked = _only_pick_the_stream(document, operation_name)
            values = "" if picked else json.dumps(variables, sort_keys=True)
        except (TypeError, ValueError):
            return None
        key = (id(schema), query, operation_name, values)
        found = cls._made.get(key)
        if found is not None and found.schema is schema:
            cls._made.move_to_end(key)
            return found
        executor = LumiExecutor.build(
            schema._schema,
            document,
            raw_variable_values=variables,
            operation_name=operation_name,
        )
        if not isinstance(executor, LumiExecutor):
            return None  # variables that do not coerce: strawberry answered them already
        made = cls._made[key] = cls(schema, executor)
        if len(cls._made) > _TEMPLATES:
            cls._made.popitem(last=False)
        return made

    async def render(self, value: object, context: Context) -> NextMessagePayload:
        """The `next` payload of one event, as strawberry's handler builds it."""
        executor = self.executor.build_per_event_executor(value)
        executor.context_value = context
        run = execute_subscription_event(executor)
        result = await run if executor.is_awaitable(run) else cast("ExecutionResult", run)
        payload: NextMessagePayload = {"data": result.data}
        if result.errors:
            self.schema.process_errors(result.errors)
            payload["errors"] = [error.formatted for error in result.errors]
        return payload


class LiveOperation:
    """The sink of one live subscription: renders each event and sends it as `next` on
    the operation's websocket; `complete` after the last."""

    __slots__ = ("convert", "follow", "handler", "id", "release", "template")

    def __init__(
        self,
        handler: TransportWSHandler,
        id: str,
        template: Template,
        convert: Callable[[Any], object],
        release: Callable[[], None],
    ) -> None:
        self.handler = handler
        self.id = id
        self.template = template
        self.convert = convert
        self.release: Callable[[], None] | None = release
        self.follow: LiveFollow | None = None

    def attach(self, follow: LiveFollow) -> None:
        self.follow = follow

    async def emit(self, event: object) -> None:
        payload = await self.template.render(self.convert(event), self.handler.context)
        with contextlib.suppress(*_GONE):
            await self.handler.send_message(NextMessage(id=self.id, type="next", payload=payload))

    async def end(self, error: Exception | None) -> None:
        """The stream ended: after its last event, or on a failure (sent as strawberry
        sends an error raised by a subscription: a `next` with it, then `complete`)."""
        self.handler.forget_live(self.id)
        self.follow = None
        self._released()
        with contextlib.suppress(*_GONE):
            if error is not None:
                errors = [GraphQLError(str(error), original_error=error)]
                self.template.schema.process_errors(errors)
                payload: NextMessagePayload = {
                    "data": None,
                    "errors": [e.formatted for e in errors],
                }
                await self.handler.send_message(
                    NextMessage(id=self.id, type="next", payload=payload)
                )
            await self.handler.send_message(CompleteMessage(id=self.id, type="complete"))

    def stop(self) -> None:
        """The client completed the operation, or went away."""
        follow, self.follow = self.follow, None
        if follow is not None:
            follow.stop()
        self._released()

    def _released(self) -> None:
        release, self.release = self.release, None
        if release is not None:
            release()


def _only_pick_the_stream(document: DocumentNode, operation_name: str | None) -> bool:
    """Whether the operation's variables appear only in the arguments of its one root
    field: each event's result is then the same whatever their values. (The root field
    of a subscription resolves to the event itself; its arguments are not read.)"""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.directives or len(operation.selection_set.selections) != 1:
        return False
    root = operation.selection_set.selections[0]
    if not isinstance(root, FieldNode) or root.directives:
        return False
    below = _variables(root.selection_set) if root.selection_set else set()
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            below |= _variables(definition)
    return not below


def _variables(node: Node) -> set[str]:
    names: set[str] = set()

    class Found(Visitor):
        def enter_variable(self, variable: VariableNode, *_: object) -> None:
            names.add(variable.name.value)

    visit(node, Found())
    return names
