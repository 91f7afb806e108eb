"""GraphQL over HTTP, against a live `lumi serve`: queries over GET, the media types and
status codes of the specification, operation names, subscriptions sent as plain
requests, automatic persisted queries (in memory, in Redis, allowlisted) and batches."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REDIS, Server, require, start_server, stop_server, token_for

pytestmark = pytest.mark.e2e

GRAPHQL_RESPONSE = "application/graphql-response+json"
APOLLO_ACCEPT = "application/graphql-response+json,application/json;q=0.9"
TYPENAME = "{ __typename }"
ME = "query Me { me { id displayName } }"
RENAME = "mutation Rename($name: String!) { updateMe(input: {displayName: $name}) { displayName } }"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("over-http"),
        name="over-http",
        LUMI_GRAPHQL_MAX_BATCH="3",
        LUMI_GRAPHQL_MAX_COST="200",
    )
    yield server
    stop_server(server)


def sha256(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def persisted(query: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256(query)}}


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


def code(body: Any) -> str | None:
    errors = body.get("errors") or [{}]
    return errors[0].get("extensions", {}).get("code")


def get(server: Server, accept: str = "application/json", **params: Any) -> httpx.Response:
    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
    headers = {"Accept": accept}
    return httpx.get(server.graphql, params=encoded, headers=headers, timeout=10)


def post(
    server: Server, body: Any, accept: str = "application/json", **headers: str
) -> httpx.Response:
    sent = {"Accept": accept, **headers}
    return httpx.post(server.graphql, json=body, headers=sent, timeout=10)


# Queries over GET


def test_a_query_runs_over_get_with_variables_operation_name_and_extensions(
    gateway: Server,
) -> None:
    """urql (since 4), Apollo's useGETForQueries and Relay GET fetchers send queries so;
    the gateway answered 400 "queries are not allowed when using GET"."""
    query = "query A { __typename } query Named($name: String!) { __type(name: $name) { name } }"
    response = get(
        gateway,
        query=query,
        variables={"name": "Query"},
        operationName="Named",
        extensions={"tracing": False},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"__type": {"name": "Query"}}}
    assert response.headers["content-type"] == "application/json"


def test_a_mutation_over_get_is_refused_with_405_and_never_runs(gateway: Server) -> None:
    for accept in ("application/json", GRAPHQL_RESPONSE):
        response = httpx.get(
            gateway.graphql,
            params={"query": RENAME, "variables": json.dumps({"name": "over GET"})},
            headers={"Accept": accept, **bearer("get-mutant")},
        )
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "POST"
        assert response.headers["content-type"] == accept
        assert code(response.json()) == "METHOD_NOT_ALLOWED"
        assert "data" not in response.json()
    me = post(gateway, {"query": ME}, **bearer("get-mutant")).json()
    assert me["data"]["me"]["displayName"] == "get-mutant"


def test_a_browser_still_gets_graphiql_and_other_methods_a_json_405(gateway: Server) -> None:
    page = httpx.get(gateway.graphql, headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "graphiql" in page.text.lower()
    for method in ("PUT", "DELETE", "PATCH"):
        refused = httpx.request(method, gateway.graphql, json={"query": TYPENAME})
        assert refused.status_code == 405, (method, refused.text)
        assert refused.headers["content-type"] == "application/json"
        assert code(refused.json()) == "METHOD_NOT_ALLOWED"


# Media types and status codes


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (APOLLO_ACCEPT, GRAPHQL_RESPONSE),  # Apollo Client 4
        (  # urql
            "application/graphql-response+json, application/graphql+json, application/json",
            GRAPHQL_RESPONSE,
        ),
        ("application/json", "application/json"),
        ("application/json, application/graphql-response+json", "application/json"),
        ("application/graphql-response+json;q=0.5, application/json", "application/json"),
        ("*/*", "application/json"),
        (None, "application/json"),  # the specification: as if application/json
    ],
)
def test_the_answer_takes_the_media_type_the_client_prefers(
    gateway: Server, accept: str | None, media_type: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    if accept is None:
        with httpx.Client() as client:
            client.headers.pop("accept")
            response = client.post(gateway.graphql, json={"query": TYPENAME}, headers=headers)
    else:
        response = httpx.post(gateway.graphql, json={"query": TYPENAME}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.json() == {"data": {"__typename": "Query"}}


REQUEST_ERRORS = [
    ({"query": "{ __typename"}, "GRAPHQL_PARSE_FAILED"),
    ({"query": "{ nosuchfield }"}, "GRAPHQL_VALIDATION_FAILED"),
    (  # a variable that does not fit its type
        {
            "query": "query Q($name: String!) { __type(name: $name) { name } }",
            "variables": {"name": 5},
        },
        "BAD_USER_INPUT",
    ),
    ({"query": "query A { __typename }", "operationName": "B"}, "BAD_REQUEST"),
    ({"query": "{ publicModels(first: 100) { edges { node { id } } } }"}, None),  # cost
]


@pytest.mark.parametrize(("body", "expected"), REQUEST_ERRORS)
def test_a_request_error_is_a_400_without_data_as_graphql_response_json(
    gateway: Server, body: dict[str, Any], expected: str | None
) -> None:
    response = post(gateway, body, accept=APOLLO_ACCEPT)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    answer = response.json()
    assert "data" not in answer
    assert code(answer) == (expected or "GRAPHQL_VALIDATION_FAILED")


@pytest.mark.parametrize(("body", "expected"), REQUEST_ERRORS)
def test_a_request_error_is_a_200_as_application_json(
    gateway: Server, body: dict[str, Any], expected: str | None
) -> None:
    response = post(gateway, body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert code(response.json()) == (expected or "GRAPHQL_VALIDATION_FAILED")


def test_an_error_while_executing_stays_a_200_with_data(gateway: Server) -> None:
    body = {"query": "{ __typename me { id } }"}  # anonymous: `me` fails
    for accept in (APOLLO_ACCEPT, "application/json"):
        response = post(gateway, body, accept=accept)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert "data" in answer
        assert answer["errors"][0]["path"] == ["me"]
        assert code(answer) == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"query": "{ __typename }"', "application/json"),  # invalid JSON
        (b"null", "application/json"),
        (b"[]", "application/json"),  # an empty batch
        (b"[42]", "application/json"),
        (b'{"query": 42}', "application/json"),
        (b'{"query": "{ __typename }", "operationName": 7}', "application/json"),
        (b'{"query": "{ __typename }", "variables": "x"}', "application/json"),
        (b'{"notquery": "{ __typename }"}', "application/json"),
        (b'{"query": "{ __typename }"}', "text/plain"),
    ],
)
@pytest.mark.parametrize("accept", ["application/json", APOLLO_ACCEPT])
def test_a_request_that_is_not_a_graphql_request_is_a_json_400_with_a_code(
    gateway: Server, content: bytes, content_type: str, accept: str
) -> None:
    headers = {"Content-Type": content_type, "Accept": accept}
    response = httpx.post(gateway.graphql, content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == (
        GRAPHQL_RESPONSE if accept == APOLLO_ACCEPT else "application/json"
    )
    assert code(response.json()) == "BAD_REQUEST"


def test_a_get_without_a_query_is_a_json_400_for_anything_but_a_browser(gateway: Server) -> None:
    for accept in ("application/json", "*/*", GRAPHQL_RESPONSE):
        response = httpx.get(gateway.graphql, headers={"Accept": accept})
        assert response.status_code == 400, (accept, response.text)
        assert code(response.json()) == "BAD_REQUEST"


# Operation names


def test_two_operations_and_no_operation_name_are_a_request_error(gateway: Server) -> None:
    """The gateway ran the first one."""
    body = {"query": "query A { __typename } query B { __typename }"}
    response = post(gateway, body, accept=GRAPHQL_RESPONSE)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "operationName" in error["message"]
    assert "A, B" in error["message"]
    ran = post(gateway, {**body, "operationName": "B"}).json()
    assert ran == {"data": {"__typename": "Query"}}


def test_an_unknown_operation_name_is_a_json_request_error(gateway: Server) -> None:
    body = {"query": "query A { __typename }", "operationName": "Missing"}
    as_json = post(gateway, body)
    assert as_json.status_code == 200
    [error] = as_json.json()["errors"]
    assert error == {
        "message": "the document has no operation named 'Missing'",
        "extensions": {"code": "BAD_REQUEST"},
    }
    over_get = get(gateway, accept=GRAPHQL_RESPONSE, **body)
    assert over_get.status_code == 400
    assert over_get.json() == {"errors": [error]}


# Subscriptions sent as plain requests


def test_a_subscription_sent_as_a_plain_request_is_a_clear_error_and_logs_nothing(
    gateway: Server,
) -> None:
    """It answered INTERNAL, and the server logged a traceback."""
    subscription = "subscription { myRequestUpdates { seq } }"
    answers = [
        post(gateway, {"query": subscription}, **bearer("plain-sub")),
        post(gateway, {"query": subscription}, accept=APOLLO_ACCEPT),
        get(gateway, query=subscription),
    ]
    for response in answers:
        assert response.status_code == 400, response.text
        [error] = response.json()["errors"]
        assert error["extensions"] == {"code": "BAD_REQUEST"}
        for transport in ("websocket", "text/event-stream", "multipart/mixed;subscriptionSpec=1.0"):
            assert transport in error["message"]
    log = gateway.log.read_text()
    assert "Traceback" not in log
    assert "internal error" not in log


# Automatic persisted queries


def test_an_unknown_hash_answers_persisted_query_not_found_over_get_and_post(
    gateway: Server,
) -> None:
    query = f"query Unknown{uuid.uuid4().hex} {{ __typename }}"
    answers = {
        "post-json": post(gateway, {"extensions": persisted(query)}),
        "get-json": get(gateway, extensions=persisted(query)),
        "get-graphql-response": get(gateway, accept=APOLLO_ACCEPT, extensions=persisted(query)),
    }
    for how, response in answers.items():
        expected = 400 if how == "get-graphql-response" else 200
        assert response.status_code == expected, (how, response.text)
        assert response.json() == {
            "errors": [
                {
                    "message": "PersistedQueryNotFound",
                    "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
                }
            ]
        }
        assert response.headers["cache-control"] == "no-store"


def test_a_document_sent_with_its_hash_is_remembered_and_then_cacheable_over_get(
    gateway: Server,
) -> None:
    query = f"query Known{uuid.uuid4().hex[:8]} {{ __typename }}"
    first = post(gateway, {"query": query, "extensions": persisted(query)})
    assert first.json() == {"data": {"__typename": "Query"}}
    anonymous = get(gateway, extensions=persisted(query))
    assert anonymous.json() == {"data": {"__typename": "Query"}}
    assert anonymous.headers["cache-control"] == "public, max-age=5"
    assert anonymous.headers["vary"] == "Accept, Authorization"
    with_token = httpx.get(
        gateway.graphql,
        params={"extensions": json.dumps(persisted(query))},
        headers=bearer("apq-private"),
    )
    assert with_token.json() == {"data": {"__typename": "Query"}}
    assert with_token.headers["cache-control"] == "private, no-store"
    by_post = post(gateway, {"extensions": persisted(query)})
    assert by_post.json() == {"data": {"__typename": "Query"}}
    assert "cache-control" not in by_post.headers


def test_only_an_errorless_anonymous_persisted_get_is_public(gateway: Server) -> None:
    failing = f"query Failing{uuid.uuid4().hex[:8]} {{ me {{ id }} }}"  # anonymous: an error
    post(gateway, {"query": failing, "extensions": persisted(failing)})
    refused = get(gateway, extensions=persisted(failing))
    assert code(refused.json()) == "UNAUTHENTICATED"
    assert refused.headers["cache-control"] == "private, no-store"
    in_full = get(gateway, query=TYPENAME)
    assert in_full.headers["cache-control"] == "private, no-store"


def test_a_hash_that_does_not_match_its_document_is_refused(gateway: Server) -> None:
    query = "query Mismatch { __typename }"
    body = {"query": query, "extensions": persisted("query Other { __typename }")}
    for accept in ("application/json", APOLLO_ACCEPT):
        response = post(gateway, body, accept=accept)
        assert response.status_code == 400
        assert response.json()["errors"] == [
            {"message": "provided sha does not match query", "extensions": {"code": "BAD_REQUEST"}}
        ]
    later = post(gateway, {"extensions": persisted("query Other { __typename }")})
    assert code(later.json()) == "PERSISTED_QUERY_NOT_FOUND"  # nothing was remembered
    malformed = {"query": query, "extensions": {"persistedQuery": {"version": 2}}}
    assert post(gateway, malformed).status_code == 400


@pytest.fixture(scope="module")
def redis_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, str]]:
    """Two API processes sharing Redis (its bus), so their persisted queries too."""
    require("Redis", REDIS)
    namespace = f"lumi-apq-{uuid.uuid4().hex[:8]}"
    env = {"LUMI_BUS": "redis", "LUMI_REDIS_NAMESPACE": namespace}
    first = start_server(tmp_path_factory.mktemp("apq-a"), name="apq-a", **env)
    second = start_server(tmp_path_factory.mktemp("apq-b"), name="apq-b", **env)
    yield first, second, namespace
    stop_server(first)
    stop_server(second)


def test_a_document_learned_by_one_api_process_runs_by_hash_on_another(
    redis_pair: tuple[Server, Server, str],
) -> None:
    import redis

    first, second, namespace = redis_pair
    query = f"query Shared{uuid.uuid4().hex[:8]} {{ __typename }}"
    assert code(post(second, {"extensions": persisted(query)}).json()) == (
        "PERSISTED_QUERY_NOT_FOUND"
    )
    assert post(first, {"query": query, "extensions": persisted(query)}).status_code == 200
    assert get(second, extensions=persisted(query)).json() == {"data": {"__typename": "Query"}}
    client = redis.Redis(host=REDIS[0], port=REDIS[1])
    key = f"{namespace}:apq:doc:{sha256(query)}"
    assert client.get(key) == query.encode()
    assert 0 < client.ttl(key) <= 86_400
    client.close()


LISTED = "query Listed { __typename }"


@pytest.fixture(scope="module")
def allowlisted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Trusted documents: the manifest (Apollo's format) holds one query."""
    directory = tmp_path_factory.mktemp("allowlist")
    manifest = directory / "manifest.json"
    operations = [{"id": sha256(LISTED), "name": "Listed", "type": "query", "body": LISTED}]
    manifest.write_text(
        json.dumps(
            {"format": "apollo-persisted-query-manifest", "version": 1, "operations": operations}
        )
    )
    server = start_server(
        directory,
        name="allowlist",
        LUMI_PERSISTED_QUERIES="allowlist",
        LUMI_PERSISTED_QUERIES_MANIFEST=str(manifest),
    )
    yield server
    stop_server(server)


def test_allowlist_mode_runs_only_the_manifest_documents(allowlisted: Server) -> None:
    by_hash = get(allowlisted, extensions=persisted(LISTED))
    assert by_hash.json() == {"data": {"__typename": "Query"}}
    assert by_hash.headers["cache-control"] == "public, max-age=5"
    assert post(allowlisted, {"query": LISTED}).json() == {"data": {"__typename": "Query"}}
    other = "query Other { __typename }"
    refused = [
        post(allowlisted, {"query": other}),
        post(allowlisted, {"query": other, "extensions": persisted(other)}),
        post(allowlisted, {"extensions": persisted(other)}),
        get(allowlisted, query=other),
    ]
    for response in refused:
        assert response.status_code == 200
        assert code(response.json()) == "PERSISTED_QUERY_NOT_IN_LIST"
    strict = post(allowlisted, {"query": other}, accept=APOLLO_ACCEPT)
    assert strict.status_code == 403
    assert code(strict.json()) == "PERSISTED_QUERY_NOT_IN_LIST"


async def test_allowlist_mode_holds_on_websockets_too(allowlisted: Server) -> None:
    import websockets

    async def answer(ws: Any, query: str) -> dict[str, Any]:
        operation = uuid.uuid4().hex
        await ws.send(
            json.dumps({"id": operation, "type": "subscribe", "payload": {"query": query}})
        )
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert message["id"] == operation
        return dict(message)

    async with websockets.connect(allowlisted.ws, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
        refused = await answer(ws, "query Other { __typename }")
        assert refused["type"] == "error"
        assert refused["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST"
        listed = await answer(ws, LISTED)
        assert listed["type"] == "next"
        assert listed["payload"] == {"data": {"__typename": "Query"}}


# Batches


def test_a_batch_runs_its_operations_in_order_each_with_its_own_answer(gateway: Server) -> None:
    batch = [
        {"query": RENAME, "variables": {"name": "first"}},
        {"query": ME},
        {"query": RENAME, "variables": {"name": "second"}, "operationName": "Rename"},
    ]
    response = post(gateway, batch, accept=APOLLO_ACCEPT, **bearer("batcher"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    renamed, me, again = response.json()
    assert renamed == {"data": {"updateMe": {"displayName": "first"}}}
    assert me["data"]["me"]["displayName"] == "first"
    assert again == {"data": {"updateMe": {"displayName": "second"}}}


def test_each_operation_of_a_batch_meets_the_limits_and_fails_alone(gateway: Server) -> None:
    batch = [
        {"query": TYPENAME},
        {"query": "{ publicModels(first: 100) { edges { node { id } } } }"},  # over the cost
        {"query": "subscription { myRequestUpdates { seq } }"},
    ]
    response = post(gateway, batch, accept=APOLLO_ACCEPT)
    assert response.status_code == 200, response.text
    fine, costly, subscription = response.json()
    assert fine == {"data": {"__typename": "Query"}}
    assert "data" not in costly
    assert "costs" in costly["errors"][0]["message"]
    assert code(subscription) == "BAD_REQUEST"
    assert "websocket" in subscription["errors"][0]["message"]


def test_a_batch_over_the_limit_is_refused_whole(gateway: Server) -> None:
    response = post(gateway, [{"query": RENAME, "variables": {"name": "x"}}] * 4, **bearer("many"))
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "LIMIT_EXCEEDED", "limit": 3, "scope": "batch"}
    me = post(gateway, {"query": ME}, **bearer("many")).json()
    assert me["data"]["me"]["displayName"] == "many"  # none of them ran


def test_each_operation_of_a_batch_counts_toward_the_rate_limit(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        name="batch-limits",
        LUMI_RATE_LIMIT_IP_PER_MINUTE="60",
        LUMI_RATE_LIMIT_BURST="3",
        LUMI_GRAPHQL_MAX_BATCH="5",
    )
    try:
        response = post(server, [{"query": TYPENAME}] * 5)
    finally:
        stop_server(server)
    assert response.status_code == 200
    codes = [code(answer) for answer in response.json()]
    assert codes[:3] == [None, None, None]
    assert "RATE_LIMITED" in codes[3:]
    assert response.headers["retry-after"]
