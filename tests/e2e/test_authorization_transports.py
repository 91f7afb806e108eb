"""Who may do what, over every transport: the same private query and subscription sent by
each actor over each way in to a live `lumi serve`. tests/graphql/test_authorization_matrix.py
covers every root field in-process; this file proves no transport has a way around it
(a transport the gateway offers without an entry here fails)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from gql import GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from app.graphql.streams import SUBSCRIPTION_PROTOCOLS
from tests.conftest import Server, start_server, stop_server, token_for
from tests.e2e.client import create_request, ws_session
from tests.e2e.test_http_subscriptions import MULTIPART, SSE, follow, headers_for

pytestmark = pytest.mark.e2e

OWNER, OTHER = "authz-owner", "authz-other"
ACTORS = (None, OTHER, OWNER)  # anonymous first, the owner's success last
# What each actor gets for the owner's request: an error code, or "ok".
EXPECTED = {None: "UNAUTHENTICATED", OTHER: "NOT_FOUND", OWNER: "ok"}
PROMPT = "a private brass robot toy"

QUERY = "query Q($id: ID!) { request(id: $id) { id prompt } }"
SUBSCRIPTION = "subscription S($id: ID!) { requestUpdates(id: $id, afterSeq: 0) { seq status } }"

# An answer: (data, errors) of one operation, as the transport delivered them.
Answer = tuple[Any, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("authz-transports"),
        name="authz",
        LUMI_LOCAL_LATENCY_SECONDS="0.05",
        LUMI_LOCAL_MODEL_LATENCY_SECONDS="0.2",
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def request_id(gateway: Server) -> str:
    created = asyncio.run(
        create_request(gateway, OWNER, prompt=PROMPT, imageCount=1, autoModel=True)
    )
    return str(created["id"])


def auth(user: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"} if user else {}


def split(body: dict[str, Any]) -> Answer:
    return body.get("data"), body.get("errors") or []


# Queries: one function per way a query reaches the gateway over HTTP.


async def by_post(server: Server, user: str | None, variables: dict[str, Any]) -> Answer:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            server.graphql, json={"query": QUERY, "variables": variables}, headers=auth(user)
        )
    return split(response.json())


async def by_get(server: Server, user: str | None, variables: dict[str, Any]) -> Answer:
    params = {"query": QUERY, "variables": json.dumps(variables)}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(server.graphql, params=params, headers=auth(user))
    return split(response.json())


async def by_batch(server: Server, user: str | None, variables: dict[str, Any]) -> Answer:
    batch = [{"query": "{ __typename }"}, {"query": QUERY, "variables": variables}]
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(server.graphql, json=batch, headers=auth(user))
    first, second = response.json()
    assert first == {"data": {"__typename": "Query"}}
    return split(second)


async def by_persisted_get(server: Server, user: str | None, variables: dict[str, Any]) -> Answer:
    digest = hashlib.sha256(QUERY.encode()).hexdigest()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    async with httpx.AsyncClient(timeout=10) as client:
        # Registered by an anonymous caller: a known hash gives no one more rights.
        await client.post(server.graphql, json={"query": QUERY, "extensions": extensions})
        params = {"variables": json.dumps(variables), "extensions": json.dumps(extensions)}
        response = await client.get(server.graphql, params=params, headers=auth(user))
    return split(response.json())


QUERY_TRANSPORTS: dict[str, Callable[[Server, str | None, dict[str, Any]], Awaitable[Answer]]] = {
    "POST": by_post,
    "GET": by_get,
    "batch": by_batch,
    "persisted GET": by_persisted_get,
}


# Subscriptions: one function per protocol in SUBSCRIPTION_PROTOCOLS.


def over_websocket(protocol: str) -> Callable[..., Awaitable[Answer]]:
    async def run(server: Server, user: str | None, variables: dict[str, Any]) -> Answer:
        events = []
        try:
            async with ws_session(server, user, protocol=protocol) as session:
                request = GraphQLRequest(SUBSCRIPTION, variable_values=variables)
                async with asyncio.timeout(20):
                    async for result in session.subscribe(request):
                        events.append(result["requestUpdates"])
        except TransportQueryError as refused:
            return None, list(refused.errors or [])
        return {"requestUpdates": events}, []

    return run


def over_http(accept: str) -> Callable[..., Awaitable[Answer]]:
    async def run(server: Server, user: str | None, variables: dict[str, Any]) -> Answer:
        body = {"query": SUBSCRIPTION, "variables": variables}
        frames = await follow(server, body, headers_for(user, accept), timeout=20)
        nexts = [frame.data for frame in frames if frame.event == "next"]
        errors = [error for data in nexts for error in data.get("errors") or []]
        events = [data["data"]["requestUpdates"] for data in nexts if data.get("data")]
        return ({"requestUpdates": events} if events else None), errors

    return run


SUBSCRIPTION_TRANSPORTS: dict[str, Callable[..., Awaitable[Answer]]] = {
    "graphql-transport-ws": over_websocket(WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL),
    "graphql-ws": over_websocket(WebsocketsTransport.APOLLO_SUBPROTOCOL),
    "graphql-sse": over_http(SSE),
    "multipart-subscription": over_http(MULTIPART),
}


def test_every_subscription_transport_the_gateway_offers_is_covered() -> None:
    assert set(SUBSCRIPTION_TRANSPORTS) == set(SUBSCRIPTION_PROTOCOLS)


def check(answer: Answer, user: str | None, field: str) -> None:
    data, errors = answer
    where = f"as {user or 'anonymous'}"
    if EXPECTED[user] == "ok":
        assert errors == [], where
        assert data[field], where
        return
    assert errors, where
    assert errors[0]["extensions"]["code"] == EXPECTED[user], (where, errors)
    assert PROMPT not in json.dumps(answer), where
    assert not (data or {}).get(field), where


@pytest.mark.parametrize("transport", QUERY_TRANSPORTS)
async def test_a_private_query_answers_only_its_owner_over_every_transport(
    gateway: Server, request_id: str, transport: str
) -> None:
    for user in ACTORS:
        answer = await QUERY_TRANSPORTS[transport](gateway, user, {"id": request_id})
        check(answer, user, "request")
        if user == OWNER:
            assert answer[0]["request"]["prompt"] == PROMPT


@pytest.mark.parametrize("transport", SUBSCRIPTION_TRANSPORTS)
async def test_a_private_subscription_streams_only_to_its_owner_over_every_transport(
    gateway: Server, request_id: str, transport: str
) -> None:
    for user in ACTORS:
        answer = await SUBSCRIPTION_TRANSPORTS[transport](gateway, user, {"id": request_id})
        check(answer, user, "requestUpdates")
        if user == OWNER:  # the whole history, to its end
            events = answer[0]["requestUpdates"]
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert events[-1]["status"] == "COMPLETED"
