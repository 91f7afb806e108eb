"""The GraphQL endpoint over HTTP and websockets: strawberry's ASGI view, answering
every refused request as a JSON GraphQL error with `extensions.code`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError

from app.errors import LumiError
from app.graphql.context import Context

_CONTEXT = "lumi.context"  # where an HTTP exchange's context waits for its end

_REQUEST_ERROR_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def request_error(status: int, message: str) -> JSONResponse:
    """A request the GraphQL endpoint cannot run, as a GraphQL response with a code."""
    code = _REQUEST_ERROR_CODES.get(status, "BAD_REQUEST")
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status
    )


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view, answering every refused request as a JSON GraphQL error
    with `extensions.code` (strawberry answers plain text) and never with a 500."""

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

    # At most this many HTTP operations run at once (`LUMI_MAX_CONCURRENT_OPERATIONS`).
    admission: asyncio.Semaphore | None = None

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.admission or contextlib.nullcontext():
            try:
                response = await self.run(Request(scope, receive))
            except HTTPException as exc:
                response = request_error(exc.status_code, exc.reason)
            context = scope.get(_CONTEXT)
            if context is not None:  # its connection goes back before the answer is sent
                await context.end_reads()
        await response(scope, receive, send)

    def parse_json(self, data: str | bytes) -> Any:
        """A JSON object, or a 400: bodies of `null`, `42`, invalid UTF-8 or arrays nested
        past the parser's recursion limit are refused here, not by a traceback."""
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise HTTPException(400, "the request body is not valid JSON") from exc
        if not isinstance(parsed, dict):
            raise HTTPException(400, "the request must be a JSON object")
        return parsed

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        context = Context(request.app.state.deps, request, response)
        if not isinstance(request, WebSocket):
            request.scope[_CONTEXT] = context
        return context

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        try:
            await context.authenticate_connection()
        except LumiError as exc:
            raise ConnectionRejectionError({"code": exc.code, "message": exc.message}) from exc
        return None
