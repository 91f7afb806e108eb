"""Third-party clients over HTTP, the real npm packages with their defaults, against a
live `lumi serve`: graphql-http's conformance audit, Apollo Client (persisted queries,
batching) and urql (queries over GET)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Server, start_server, stop_server, token_for
from tests.nodeclients import run_client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("http-clients"), name="http-clients")
    yield server
    stop_server(server)


def test_graphql_http_audit_passes_every_must_should_and_may(gateway: Server) -> None:
    """The GraphQL-over-HTTP specification's audits; the gateway answered GET queries with
    a 400, never `application/graphql-response+json`, and request errors with a 200."""
    audits = run_client("audit.mjs", LUMI_URL=gateway.graphql)["audits"]
    assert len(audits) >= 60
    failed = [audit for audit in audits if audit["status"] != "ok"]
    assert failed == []  # none is inapplicable: not even a MAY fails


def test_apollo_client_runs_queries_and_mutations_with_persisted_queries_and_batching(
    gateway: Server,
) -> None:
    """A hash-only request answered `400 text/plain "No GraphQL query found"` and a batch
    `400 "Batching is not enabled"`, so both links failed every operation."""
    user = "apollo-http"
    result = run_client("apollo_http.mjs", LUMI_URL=gateway.graphql, LUMI_TOKEN=token_for(user))

    persisted = result["persisted"]
    assert persisted["query"]["me"]["displayName"] == user
    assert persisted["again"] == persisted["query"]
    assert persisted["mutation"]["updateMe"]["displayName"] == "Apollo APQ"
    wire = [(r["method"], r["withQuery"], r["status"]) for r in persisted["requests"]]
    assert wire == [
        ("GET", [False], 400),  # the hash alone: PERSISTED_QUERY_NOT_FOUND
        ("POST", [True], 200),  # the link sends the document with its hash
        ("GET", [False], 200),  # the second time the hash alone is enough
        ("POST", [False], 400),  # the mutation, hashed: unknown too
        ("POST", [True], 200),
    ]
    for request in persisted["requests"]:
        assert request["contentType"] == "application/graphql-response+json"
    assert persisted["requests"][2]["cacheControl"] == "private, no-store"  # a token was sent

    batched = result["batched"]
    [request] = batched["requests"]
    assert (request["method"], request["batch"], request["status"]) == ("POST", 2, 200)
    assert batched["query"]["me"]["displayName"] == "Apollo APQ"  # in order: before the rename
    assert batched["mutation"]["updateMe"]["displayName"] == "Apollo Batch"


def test_urql_with_its_defaults_runs_a_query_over_get_and_a_mutation(gateway: Server) -> None:
    """Since @urql/core 4 queries go over GET, which the gateway refused with a 400."""
    user = "urql-http"
    result = run_client("urql_http.mjs", LUMI_URL=gateway.graphql, LUMI_TOKEN=token_for(user))
    assert result["query"] == {
        "data": {
            "me": {
                "id": result["query"]["data"]["me"]["id"],
                "displayName": user,
                "__typename": "Me",
            }
        },
        "error": None,
    }
    assert result["mutation"]["error"] is None
    assert result["mutation"]["data"]["updateMe"]["displayName"] == "urql"
    methods = [(r["method"], r["status"]) for r in result["requests"]]
    assert methods == [("GET", 200), ("POST", 200)]
