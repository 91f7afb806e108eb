"""Talking to a running gateway the way third-party clients do: httpx and gql."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from gql import Client, GraphQLRequest
from gql.client import AsyncClientSession
from gql.transport.websockets import WebsocketsTransport

from tests.conftest import Server, token_for

EVENT_FIELDS = (
    "requestId seq userSeq status phase step progress progressIsEstimate"
    " message errorCode imageId modelId jobStatus attempt nextAttemptAt"
)

REQUEST_UPDATES = f"""
subscription Follow($id: ID!, $afterSeq: Int!) {{
  requestUpdates(id: $id, afterSeq: $afterSeq) {{ {EVENT_FIELDS} }}
}}"""

CREATE = """
mutation Create($input: CreateRequestInput!) {
  createRequest(input: $input) { id status phase seq }
}"""


async def graphql(
    server: Server,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    user: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    sent = dict(headers or {})
    if user:
        sent["Authorization"] = f"Bearer {token_for(user)}"
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            server.graphql, json={"query": query, "variables": variables or {}}, headers=sent
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def data_of(
    server: Server, query: str, variables: dict[str, Any] | None = None, *, user: str
) -> Any:
    body = await graphql(server, query, variables, user=user)
    assert "errors" not in body, body
    return body["data"]


def error_code(body: dict[str, Any]) -> str:
    assert body.get("errors"), body
    return str(body["errors"][0]["extensions"]["code"])


@asynccontextmanager
async def ws_session(
    server: Server, user: str | None, *, protocol: str = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL
) -> AsyncIterator[AsyncClientSession]:
    payload = {"Authorization": f"Bearer {token_for(user)}"} if user else {}
    transport = WebsocketsTransport(
        url=server.ws, init_payload=payload, subprotocols=[protocol], ping_interval=None
    )
    async with Client(transport=transport, fetch_schema_from_transport=False) as session:
        yield session


async def collect(
    session: AsyncClientSession,
    query: str,
    variables: dict[str, Any],
    *,
    field: str = "requestUpdates",
    until: Any = None,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """Events of one subscription until it ends (or `until(event)` is true)."""
    received: list[dict[str, Any]] = []

    async def run() -> None:
        request = GraphQLRequest(query, variable_values=variables)
        async for result in session.subscribe(request):
            event = result[field]
            received.append(event)
            if until is not None and until(event):
                return

    await asyncio.wait_for(run(), timeout)
    return received


async def create_request(server: Server, user: str, **options: Any) -> dict[str, Any]:
    data = await data_of(
        server, CREATE, {"input": {"prompt": "a brass robot toy", **options}}, user=user
    )
    return dict(data["createRequest"])
