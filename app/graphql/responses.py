"""How the GraphQL endpoint answers over HTTP, as the GraphQL-over-HTTP specification asks:
the media type a client prefers, the status of a request error in it, and every refused
request as a GraphQL response with `extensions.code`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from graphql import GraphQLError
from starlette.responses import JSONResponse
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from app.errors import BadRequest, LumiError

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"


def encode_json(data: object) -> bytes:
    """A GraphQL response as compact JSON, with orjson: a gallery page of 20 models takes
    3 µs where `json.dumps` took 55 µs (measured on the benchmark machine). Keys keep their
    order; text goes out as UTF-8 rather than as `\\u` escapes (the same JSON once
    parsed, and what `application/json` means). What orjson refuses, `json.dumps`
    writes as before (strawberry's encoding): integers past 64 bits, and strings with
    a lone surrogate (sent in by a client, echoed in an error), as `\\ud800` escapes.
    A non-finite float is written `null` where `json.dumps` wrote a bare `NaN`, which
    is not JSON; graphql-core never lets one into a result (a Float field refuses it)."""
    try:
        return orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(data, separators=(",", ":")).encode()


_REQUEST_ERROR_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
# A request error's status as application/graphql-response+json; 400 when not listed.
_REQUEST_ERROR_STATUS = {
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "PERSISTED_QUERY_NOT_IN_LIST": 403,
    "RATE_LIMITED": 429,
}


def accept_ranks(accept: str | None) -> dict[str, tuple[float, int]]:
    """Each media type an Accept header lists, ranked by (quality, earlier first): the
    greater tuple is preferred. A type listed twice keeps its first rank."""
    ranks: dict[str, tuple[float, int]] = {}
    for index, part in enumerate((accept or "").split(",")):
        media, *params = part.split(";")
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranks.setdefault(media.strip().lower(), (quality, -index))
    return ranks


def negotiate(accept: str | None) -> str:
    """The media type of the answer: `application/graphql-response+json` when Accept lists
    it above `application/json` (or as high and first), else `application/json`, which
    is also the answer to `*/*` and to no Accept at all (as the specification asks)."""
    ranks = accept_ranks(accept)
    preferred = ranks.get(GRAPHQL_RESPONSE, (0.0, 0))
    return GRAPHQL_RESPONSE if preferred[0] > 0 and preferred > ranks.get(JSON, (0.0, 0)) else JSON


def request_error(
    status: int | None,
    message: str,
    *,
    code: str | None = None,
    media_type: str = JSON,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """A request the GraphQL endpoint does not run, as a GraphQL response with a code, in
    the negotiated media type. `status` None: a GraphQL request error, 200 as
    application/json and 4xx as application/graphql-response+json."""
    if code is None:
        code = _REQUEST_ERROR_CODES.get(status or 400, "BAD_REQUEST")
    if status is None:
        status = _REQUEST_ERROR_STATUS.get(code, 400) if media_type == GRAPHQL_RESPONSE else 200
    error = {"message": message, "extensions": {**(extensions or {}), "code": code}}
    return JSONResponse(
        {"errors": [error]},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
        media_type=media_type,
    )


class RequestRefused(Exception):
    """A request answered instead of run. `status` None: a GraphQL request error (see
    `request_error`); else a refusal at the HTTP level, with that status either way."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "BAD_REQUEST",
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status
        self.headers, self.extensions = headers, extensions

    @classmethod
    def of(cls, error: LumiError) -> RequestRefused:
        # A malformed request is refused at the HTTP level; the rest are GraphQL answers.
        status = 400 if isinstance(error, BadRequest) else None
        return cls(error.message, code=error.code, status=status, extensions=error.extensions)

    def response(self, media_type: str) -> JSONResponse:
        return request_error(
            self.status,
            self.message,
            code=self.code,
            media_type=media_type,
            headers=self.headers,
            extensions=self.extensions,
        )

    def result(self) -> ExecutionResult:
        """The refusal as one operation's answer in a batch."""
        extensions = {**(self.extensions or {}), "code": self.code}
        return ExecutionResult(
            data=None, errors=[GraphQLError(self.message, extensions=extensions)]
        )


def is_request_error(result: Any) -> bool:
    """Whether nothing was executed: no data, and no error at a path (a field's). Parse,
    validation, variable and operation-name errors, and the gate's refusals."""
    errors: list[GraphQLError] = getattr(result, "errors", None) or []
    return bool(errors) and result.data is None and all(e.path is None for e in errors)


def response_status(
    response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], media_type: str
) -> int:
    """200, but a request error's status as application/graphql-response+json."""
    if media_type != GRAPHQL_RESPONSE or not isinstance(response_data, dict):
        return 200
    if "data" in response_data:
        return 200
    errors: Any = response_data.get("errors") or [{}]
    code = (errors[0].get("extensions") or {}).get("code")
    return _REQUEST_ERROR_STATUS.get(str(code), 400)


# Scope key: the response cache (app/models/cache.py) counted this operation against the
# rate limits, then passed it on to be run.
COUNTED = "lumi.counted"


def cache_headers(headers: Any, public: bool, settings: Any) -> None:
    """`Cache-Control` of a GET answer: an anonymous persisted query's (its URL is short
    and stable) that went without an error may be shared for a few seconds; anything
    else, by no cache."""
    max_age = settings.persisted_queries_max_age_seconds
    headers["Cache-Control"] = (
        f"public, max-age={max_age}" if public and max_age > 0 else "private, no-store"
    )
    headers["Vary"] = "Accept, Authorization"
