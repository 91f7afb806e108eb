"""Subscriptions over HTTP, for clients that cannot keep a websocket (proxies, serverless
front ends, curl): graphql-sse in its "distinct connections mode" (`Accept:
text/event-stream`, by POST or GET) and the multipart subscriptions of Apollo Client and
urql (`Accept: multipart/mixed;subscriptionSpec=1.0`).

Strawberry picks the transport from Accept and runs the operation as a stream (its
refusals and errors become `next` results, as graphql-sse asks). This mixin sends the
stream its own way:
- each SSE `next` event carries `id:`, the event's cursor (`seq` for `requestUpdates`,
  `userSeq` for `myRequestUpdates`), so the Last-Event-ID a reconnecting client sends
  resumes it (with `afterSeq` as well, the later of the two wins);
- SSE lines end in LF: urql splits events at a blank LF line and never at CRLF;
- the operation runs like a websocket's, holding no pooled connection while it waits
  (`Context.begin_stream`), and outside the HTTP admission slots (`GraphQLApp._http`
  gives its slot back before the body is sent);
- a client that goes away is noticed at once (`http.disconnect`, not the next failed
  heartbeat), and the operation is closed before the response returns, so its
  subscription slot and its session are free when the exchange ends;
- a shutdown ends the stream after `LUMI_SHUTDOWN_GRACE_SECONDS` (uvicorn's graceful
  timeout) without `complete`, so that its client resumes on another instance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, GraphQLRequestProtocol
from strawberry.http.streaming import (
    HTTPStreamTransport,
    JSONEncoder,
    MultipartSubscriptionTransport,
    SSETransport,
)
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
from strawberry.types import ExecutionResult, SubscriptionExecutionResult

from app.graphql.context import Context
from app.graphql.responses import accept_ranks

if TYPE_CHECKING:
    from strawberry.asgi import GraphQL

    _View = GraphQL[Context, None]
else:
    _View = object

# Every subscription protocol of the view (its `subscription_protocols`): both websocket
# protocols, and the two over HTTP that this module sends.
SUBSCRIPTION_PROTOCOLS = (
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    GRAPHQL_SSE_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
_JSON_TYPES = ("application/graphql-response+json", "application/json", "application/graphql+json")
# No proxy may cache or buffer an event stream (nginx buffers unless told not to).
_NOT_BUFFERED = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


class EventStreamTransport(SSETransport):
    """graphql-sse events: `next` with the `id:` of its cursor, lines ending in LF."""

    def accepts(self, accept: str) -> bool:
        # urql lists text/event-stream after the JSON types for a query, which wants one
        # JSON answer (graphql-response+json, cacheable over GET), not a stream.
        return super().accepts(accept) and prefers(accept, "text/event-stream")

    def encode_next_with_id(
        self, response: GraphQLHTTPResponse, encode_json: JSONEncoder, cursor: int | None
    ) -> str:
        event = self.encode_next(response, encode_json)
        return event if cursor is None else f"id: {cursor}\n{event}"

    def encode_event(self, event: str, data: str | None = None) -> str:
        if data and ("\r" in data or "\n" in data):
            raise ValueError("SSE event data must not contain newlines")
        # An empty `data:` still makes a browser dispatch the event; `data: ` with its
        # space is a " " that urql would try to parse as JSON.
        return f"event: {event}\ndata: {data}\n\n" if data else f"event: {event}\ndata:\n\n"

    def encode_comment(self, comment: str) -> str:
        return f": {comment}\n\n"


def prefers(accept: str, media_type: str) -> bool:
    """Whether Accept ranks `media_type` at least as high as every JSON media type (by
    quality, then by order)."""
    ranks = accept_ranks(accept)
    wanted = ranks.get(media_type, (0.0, 0))
    return wanted[0] > 0 and all(wanted >= ranks.get(json, (0.0, 0)) for json in _JSON_TYPES)


def last_event_id(request: Request) -> int | None:
    """The cursor a reconnecting SSE client resent, or None. We only send numbers."""
    value = request.headers.get("last-event-id", "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise HTTPException(400, "Last-Event-ID must be the `id` of an event this endpoint sent")
    return int(value)


class StreamedOperation:
    """The results of an operation sent as a stream, and the context it runs in (whose
    `event_cursor` the subscription sets as it yields each event)."""

    def __init__(self, results: SubscriptionExecutionResult, context: Context) -> None:
        self.results = results
        self.context = context

    def __aiter__(self) -> StreamedOperation:
        return self

    async def __anext__(self) -> Any:
        return await self.results.__anext__()

    async def aclose(self) -> None:
        aclose = getattr(self.results, "aclose", None)
        if aclose is not None:
            await aclose()

    def take_cursor(self) -> int | None:
        cursor, self.context.event_cursor = self.context.event_cursor, None
        return cursor


class HTTPSubscriptions(_View):
    """Mixed into the GraphQL view: operations sent with a streaming Accept (see the
    module docstring). `stream_heartbeat_seconds` is `LUMI_HTTP_STREAM_HEARTBEAT_SECONDS`."""

    stream_heartbeat_seconds: float = 15.0
    stream_transport_classes_by_protocol: Mapping[str, type[HTTPStreamTransport]] = {
        GRAPHQL_SSE_PROTOCOL: EventStreamTransport,
        MULTIPART_SUBSCRIPTION_PROTOCOL: MultipartSubscriptionTransport,
    }

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        streams = isinstance(request_data, GraphQLRequestData) and bool(
            self._get_stream_transport(request_data.protocol)
        )
        if streams:
            await context.begin_stream(last_event_id(request))
        result = await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )
        if streams and isinstance(result, SubscriptionExecutionResult):
            return StreamedOperation(result, context)
        return result

    async def _create_streaming_response(
        self,
        request: Request,
        result: SubscriptionExecutionResult,
        protocol: GraphQLRequestProtocol,
        sub_response: Response,
    ) -> Response:
        # Strawberry's own (heartbeats merged by two tasks and a queue, a disconnect seen
        # only when a write fails) knows neither cursors nor our context.
        transport = self._get_stream_transport(protocol)
        assert transport is not None
        assert isinstance(result, StreamedOperation)
        heartbeat = transport.heartbeat_message(self.encode_json_string)
        return EventStream(
            self._frames(request, result, transport),
            heartbeat=heartbeat,
            interval=self.stream_heartbeat_seconds,
            # Multipart: the first heartbeat is also the preamble urql skips, so that
            # it takes the first event for an event.
            opening=heartbeat if transport.send_initial_heartbeat else None,
            headers=_headers(sub_response, transport),
        )

    async def _frames(
        self, request: Request, operation: StreamedOperation, transport: HTTPStreamTransport
    ) -> AsyncGenerator[str, None]:
        pending: list[Any] = []
        async with contextlib.aclosing(operation) as results:
            async for value in results:
                response, pending = await self._process_stream_result(request, value, pending)
                cursor = operation.take_cursor()
                if isinstance(transport, EventStreamTransport):
                    yield transport.encode_next_with_id(response, self.encode_json_string, cursor)
                else:
                    yield transport.encode_next(response, self.encode_json_string)
        yield transport.encode_complete()


def _headers(sub_response: Response, transport: HTTPStreamTransport) -> MutableHeaders:
    headers = MutableHeaders(raw=list(sub_response.headers.raw))
    for name, value in {**transport.headers, **_NOT_BUFFERED}.items():
        headers[name] = value  # replaces a header of the same name in any case
    return headers


Emit = Callable[[str], Awaitable[None]]


class EventStream(StreamingResponse):
    """A body of frames with a heartbeat whenever it has been quiet for `interval`
    seconds. It ends with the frames, or as soon as the client goes away; either way
    the frames (and the operation behind them) are closed before it returns."""

    def __init__(
        self,
        frames: AsyncGenerator[str, None],
        *,
        heartbeat: str,
        interval: float,
        opening: str | None,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(frames, headers=headers)
        self.frames = frames
        self.heartbeat = heartbeat
        self.interval = interval
        self.opening = opening
        self._last_sent = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lock = asyncio.Lock()  # a heartbeat never lands inside a frame

        async def emit(chunk: str) -> None:
            async with lock:
                await send(
                    {"type": "http.response.body", "body": chunk.encode(), "more_body": True}
                )
                self._last_sent = asyncio.get_running_loop().time()

        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if self.opening is not None:
            await emit(self.opening)
        self._last_sent = asyncio.get_running_loop().time()
        await self._stream(emit, receive)
        # After the last frame; or, cut short, without one that says `complete`, so the
        # client resumes. Nothing reaches a client that has gone.
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, emit: Emit, receive: Receive) -> None:
        pump = asyncio.create_task(self._pump(emit))
        beat = asyncio.create_task(self._beat(emit))
        gone = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # uvicorn's shutdown, LUMI_SHUTDOWN_GRACE_SECONDS after it began: the stream
            # ends here rather than with a traceback in the log for each one.
            pass
        finally:
            for task in (pump, beat, gone):
                task.cancel()
            await asyncio.gather(pump, beat, gone, return_exceptions=True)
        if not pump.cancelled() and (error := pump.exception()) is not None:
            raise error  # cut short; uvicorn logs it

    async def _pump(self, emit: Emit) -> None:
        async with contextlib.aclosing(self.frames) as frames:
            async for frame in frames:
                await emit(frame)

    async def _beat(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        while True:
            quiet = loop.time() - self._last_sent
            if quiet >= self.interval:
                await emit(self.heartbeat)
            else:
                await asyncio.sleep(self.interval - quiet)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone. (Anything else is the end of a body already read:
    an empty `http.request` when the request had none, a GET's.)"""
    while (await receive())["type"] != "http.disconnect":
        pass
