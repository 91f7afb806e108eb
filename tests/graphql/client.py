"""Executing GraphQL in-process with a real Context, as the HTTP endpoint would."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from app.deps import Deps
from app.graphql.context import Context
from app.schema import schema
from tests.conftest import token_for


def http_request(user: str | None, *, token: str | None = None) -> Request:
    """A request as `user` (a token naming them `user`), or with `token` as it is."""
    token = token or (token_for(user) if user else None)
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": headers,
        "query_string": b"",
        "server": ("testserver", 80),
        "scheme": "http",
        "root_path": "",
    }
    return Request(scope)


async def execute(
    deps: Deps,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    user: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    context = Context(deps, http_request(user, token=token), None)
    try:
        result = await schema.execute(query, variable_values=variables, context_value=context)
    finally:
        await context.end_reads()  # as the endpoint does when the exchange is over
    return {"data": result.data, "errors": [e.formatted for e in result.errors or []]}


async def data(
    deps: Deps,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    user: str | None = None,
    token: str | None = None,
) -> Any:
    result = await execute(deps, query, variables, user=user, token=token)
    assert not result["errors"], result["errors"]
    return result["data"]


def code(result: dict[str, Any]) -> str:
    assert result["errors"], result
    return str(result["errors"][0]["extensions"]["code"])
