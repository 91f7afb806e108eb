"""Every error a client sees carries `extensions.code`; unexpected ones are masked.

Strawberry hands every error of every transport (HTTP, both websocket protocols,
subscription streams) to `Schema.process_errors` exactly once before it is sent,
so that is where codes are set and internals are hidden.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.exceptions import MissingQueryError, StrawberryGraphQLError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionContext

from app.errors import LumiError
from app.graphql.execution import LumiExecutor
from app.graphql.gate import Documents
from app.observability import request_id

log = logging.getLogger("app.graphql")

INTERNAL_MESSAGE = "internal error"

# What the request asked for cannot be run as asked: no query, an operation name that
# names none, an operation type this transport does not carry.
_BAD_REQUESTS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)
# graphql-core's hints, for when they would reveal the schema (introspection off).
_SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


def classify(error: GraphQLError) -> tuple[str, bool]:
    """(code, expose): which code the error gets, and whether its message is safe to show."""
    original = error.original_error
    if isinstance(original, LumiError):
        return original.code, True
    if isinstance(error, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED", True
    if isinstance(original, _BAD_REQUESTS):
        return "BAD_REQUEST", True
    if original is None:
        # graphql-core's own errors: validation, variable coercion, unknown fields.
        if error.path is None:
            return "GRAPHQL_VALIDATION_FAILED", True
        return "BAD_USER_INPUT", True
    if isinstance(original, GraphQLError | StrawberryGraphQLError):
        code = (original.extensions or {}).get("code")
        return (str(code), True) if code else ("BAD_USER_INPUT", True)
    return "INTERNAL", False


class LumiSchema(strawberry.Schema):
    """The schema; `documents` parses and validates its operations within the limits."""

    def __init__(self, *args: Any, documents: Documents | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("execution_context_class", LumiExecutor)
        super().__init__(*args, **kwargs)
        self.documents = documents or Documents()

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            shape_error(error, execution_context)
            if self.documents.hide_suggestions:  # validation hides its own; this catches the rest
                error.message = _SUGGESTION.sub("", error.message)


def shape_error(error: GraphQLError, execution_context: ExecutionContext | None) -> None:
    extensions: dict[str, Any] = dict(error.extensions or {})
    if "code" in extensions:
        return  # shaped already (a subscription result passes through twice)
    code, expose = classify(error)
    original = error.original_error
    if isinstance(original, LumiError):
        extensions.update(original.extensions)
        log.info("graphql error %s: %s", code, error.message)
    elif not expose:
        # The request id is the X-Request-Id of the HTTP request or websocket the client
        # sent (or was answered with); the incident id tells errors of one request apart.
        incident = uuid.uuid4().hex[:16]
        rid = request_id.get()
        operation = execution_context.operation_name if execution_context else None
        log.error(
            "internal error %s of request %s in operation %s",
            incident,
            rid,
            operation,
            exc_info=(type(original), original, original.__traceback__) if original else None,
        )
        error.message = INTERNAL_MESSAGE
        error.original_error = None
        extensions["incidentId"] = incident
        if rid:
            extensions["requestId"] = rid
    extensions["code"] = code
    error.extensions = extensions
