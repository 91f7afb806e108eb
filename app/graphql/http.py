"""The GraphQL endpoint over HTTP and websockets: strawberry's ASGI view, speaking the
GraphQL-over-HTTP specification.

- Media types: `application/graphql-response+json` when the client's Accept prefers it,
  where a request error (nothing was executed, so the answer has no `data`) is a 4xx;
  else `application/json`, where every well-formed GraphQL response is a 200.
- Queries over GET as well as POST. A mutation over GET is 405 (`Allow: POST`); a
  subscription needs a streaming transport and is refused without one.
- Batches (a JSON array): each operation runs in turn, alone, as if sent by itself.
- Persisted queries (`persisted.py`), over GET and POST.
- The response cache (`app/models/cache.py`) answers public queries before anything else runs.
- Every refused request is a JSON GraphQL response with `extensions.code`.
- multipart/form-data POSTs: the GraphQL multipart request specification (`uploadImage`),
  each of its operations checked and run as a JSON POST's would be; only with a header
  that needs a CORS preflight (`_check_preflighted`), so no other site can send one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, GraphQLRequestProtocol
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult, SubscriptionExecutionResult
from strawberry.types.graphql import OperationType

from app.errors import LumiError
from app.graphql.context import Context
from app.graphql.ide import graphiql_page
from app.graphql.responses import (
    COUNTED,
    GRAPHQL_RESPONSE,
    JSON,
    RequestRefused,
    cache_headers,
    encode_json,
    is_request_error,
    negotiate,
    request_error,
    response_status,
)
from app.graphql.streams import HTTPSubscriptions
from app.graphql.ws import TextWebSocketAdapter

_CONTEXT = "lumi.context"  # where an HTTP exchange's context waits for its end
_MEDIA_TYPE = "lumi.media_type"  # the media type the exchange answers in

_SUBSCRIPTION_TRANSPORTS = (
    "subscriptions are not run over plain HTTP: use a websocket (graphql-transport-ws), "
    "or stream over HTTP with `Accept: text/event-stream` (graphql-sse) or "
    "`Accept: multipart/mixed;subscriptionSpec=1.0`"
)


class GraphQLApp(HTTPSubscriptions, GraphQL[Context, None]):
    """Strawberry's ASGI view, answering as the GraphQL-over-HTTP specification asks, every
    refused request as a JSON GraphQL error with `extensions.code`, and never with a 500."""

    websocket_adapter_class = TextWebSocketAdapter
    # At most this many HTTP operations run at once (`LUMI_MAX_CONCURRENT_OPERATIONS`).
    admission: asyncio.Semaphore | None = None
    # The most operations one batch may hold (`LUMI_GRAPHQL_MAX_BATCH`).
    max_batch: int = 10

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["type"] == "http":
                await self._http(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            # The scope holds the context, which holds the request, which holds the
            # scope: popped, the exchange's objects go by reference counting.
            context = scope.pop(_CONTEXT, None)
            if context is not None:
                await context.finish()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        media_type = scope[_MEDIA_TYPE] = negotiate(Headers(scope=scope).get("accept"))
        request = Request(scope, receive)
        async with self.admission or contextlib.nullcontext():
            try:
                response = await self._cached(request, media_type) or await self.run(request)
            except RequestRefused as exc:
                response = exc.response(media_type)
            except HTTPException as exc:
                allow = {"Allow": "GET, POST"} if exc.status_code == 405 else None
                response = request_error(
                    exc.status_code, exc.reason, media_type=media_type, headers=allow
                )
            context = scope.get(_CONTEXT)
            if context is not None:  # its connection goes back before the answer is sent
                await context.end_reads()
            await request.close()  # a multipart body's spooled files (uploadImage)
        await response(scope, receive, send)

    async def _cached(self, request: Request, media_type: str) -> Response | None:
        """The answer of the response cache, when it has one (app/models/cache.py)."""
        cache = request.app.state.deps.response_cache
        if cache is None:
            return None
        response: Response | None = await cache.answer(self.schema, request, media_type)
        return response

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        """For a browser (Accept: text/html) asking for no operation; a persisted query
        over GET has no `query`, and `*/*` is what HTTP libraries send, not browsers."""
        params = request.query_params
        return (
            request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and params.get("query") is None
            and params.get("extensions") is None
        )

    async def render_graphql_ide(self, request: Request) -> Response:
        """Our GraphiQL page (app/graphql/ide.py), its files served by the gateway."""
        return await graphiql_page(request, request.app.state.deps.settings)

    def parse_json(self, data: str | bytes) -> Any:
        """A JSON object or a batch of them, or a 400: bodies of `null`, `42`, invalid
        UTF-8 or arrays nested past the parser's recursion limit are refused here, not by
        a traceback."""
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise RequestRefused("the request is not valid JSON", status=400) from exc
        if isinstance(parsed, list):
            if not parsed or not all(isinstance(item, dict) for item in parsed):
                raise RequestRefused(
                    "a batch must be a non-empty JSON array of GraphQL requests", status=400
                )
        elif not isinstance(parsed, dict):
            raise RequestRefused("the request must be a JSON object", status=400)
        return parsed

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        _check_preflighted(request)
        data = await super().parse_http_body(request)
        for item in data if isinstance(data, list) else [data]:
            _check_parameters(item)
        return data

    def _validate_batch_request(
        self, request_data: list[GraphQLRequestData], protocol: GraphQLRequestProtocol
    ) -> None:
        if transport := self._get_stream_transport(protocol):
            raise RequestRefused(transport.batching_error, status=400)
        if len(request_data) > self.max_batch:
            raise RequestRefused(
                f"the batch holds {len(request_data)} operations, more than the limit of "
                f"{self.max_batch}: send the rest in another request",
                code="LIMIT_EXCEEDED",
                status=400,
                extensions={"limit": self.max_batch, "scope": "batch"},
            )

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        if isinstance(request_data, list):
            # One after the other, in order: a mutation's effects are seen by the
            # operations after it, and a batch holds one admission slot, not ten.
            return [
                await self._batched(request, request_adapter, item, context, sub_response)
                for item in request_data
            ]
        named = await _resolve_persisted(context, request_data)
        result = await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )
        if request_adapter.method == "GET" and isinstance(result, ExecutionResult):
            _cache_headers(request, sub_response, result, named, context)
        cache = context.deps.response_cache
        if cache is not None and isinstance(result, ExecutionResult) and result.data is not None:
            cache.learn(self.schema, request_data.query, request_data.operation_name)
        return result

    async def _batched(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData,
        context: Context,
        sub_response: Response,
    ) -> ExecutionResult:
        """One operation of a batch, as if sent alone: its own context (loaders, reads),
        the rate limits and the cost limits; a refusal answers only this operation."""
        alone = Context(context.deps, context.request, context.response)
        try:
            await _resolve_persisted(alone, request_data)
            return await self.execute_single(
                request, request_adapter, sub_response, alone, None, request_data
            )
        except RequestRefused as refused:
            return refused.result()
        finally:
            await alone.finish()

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Queries over GET; queries and mutations over POST. Subscriptions stream, and
        strawberry sends those to its streaming transports before it gets here."""
        method = request_adapter.method
        allowed = {OperationType.QUERY}
        if method == "POST":
            allowed.add(OperationType.MUTATION)
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except InvalidOperationTypeError as exc:
            raise _not_over(exc.operation_type) from exc
        except MissingQueryError as exc:
            raise RequestRefused("no GraphQL query found in the request", status=400) from exc
        except CannotGetOperationTypeError as exc:  # the gate answers these first
            raise RequestRefused(exc.as_http_error_reason()) from exc

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        if request.scope.get(_MEDIA_TYPE) == GRAPHQL_RESPONSE and is_request_error(result):
            response.pop("data", None)  # the specification: nothing executed, no `data`
        return response

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        response = await super().get_sub_response(request)
        response.media_type = request.scope.get(_MEDIA_TYPE, JSON)
        return response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media_type = sub_response.media_type or JSON
        status = sub_response.status_code or response_status(response_data, media_type)
        response = Response(self.encode_json(response_data), status, media_type=media_type)
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        return response

    def encode_json(self, data: object) -> bytes:
        return encode_json(data)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        deps = request.app.state.deps
        if request.scope.get(COUNTED):  # the response cache counted it, then passed it on
            deps = deps.response_cache.uncounted
        context = Context(deps, request, response)
        if not isinstance(request, WebSocket):
            request.scope[_CONTEXT] = context
        return context

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        try:
            await context.authenticate_connection()
        except LumiError as exc:
            raise ConnectionRejectionError({"code": exc.code, "message": exc.message}) from exc
        return None


# Headers a browser sends cross-site only after a CORS preflight the origin must pass
# (`Authorization` carries the bearer token; the others are what Apollo's clients send).
_PREFLIGHTED = ("authorization", "apollo-require-preflight", "x-apollo-operation-name")


def _check_preflighted(request: AsyncHTTPRequestAdapter) -> None:
    """A multipart/form-data POST is a "simple" request: any page may make a browser send
    one cross-site without asking. It must carry a header that needs a preflight, so
    only the origins LUMI_CORS_ORIGINS lists can (CSRF; Apollo Server does the same)."""
    if not (request.content_type or "").lower().startswith("multipart/"):
        return
    if not any(request.headers.get(name) for name in _PREFLIGHTED):
        raise RequestRefused(
            "a multipart request must carry an Authorization header (or "
            "Apollo-Require-Preflight): without one, any web page could send it",
            status=400,
        )


def _check_parameters(data: GraphQLRequestData) -> None:
    """What strawberry checks of a single request, for each request of a batch too, and
    `operationName` as well."""
    checks = (
        ("query", data.query, str, "a string"),
        ("operationName", data.operation_name, str, "a string"),
        ("variables", data.variables, dict, "an object"),
        ("extensions", data.extensions, dict, "an object"),
    )
    for name, value, kind, described in checks:
        if value is not None and not isinstance(value, kind):
            raise RequestRefused(
                f"the request's `{name}` must be {described} or null, if provided", status=400
            )


async def _resolve_persisted(context: Context, data: GraphQLRequestData) -> bool:
    """Puts the document a persisted query names in `data`; whether it was named so."""
    queries = context.deps.persisted_queries
    if queries is None:
        return False
    try:
        data.query, named = await queries.resolve(data.query, data.extensions)
    except LumiError as exc:
        raise RequestRefused.of(exc) from exc
    return named


def _not_over(operation: OperationType) -> RequestRefused:
    if operation is OperationType.MUTATION:
        return RequestRefused(
            "mutations are not run over GET: send them with POST",
            code="METHOD_NOT_ALLOWED",
            status=405,
            headers={"Allow": "POST"},
        )
    return RequestRefused(_SUBSCRIPTION_TRANSPORTS, status=400)


def _cache_headers(
    request: Request,
    sub_response: Response,
    result: ExecutionResult,
    named: bool,
    context: Context,
) -> None:
    """A GET answer an HTTP cache may share: an anonymous persisted query's (its URL is
    short and stable) that went without an error, for a few seconds. Anything sent with
    a token, or anything else, is kept by no cache."""
    anonymous = "authorization" not in request.headers
    public = named and anonymous and not result.errors
    cache_headers(sub_response.headers, public, context.deps.settings)
