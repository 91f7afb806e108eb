"""The npm clients that subscribe over HTTP, with their defaults, against a live `lumi
serve`: graphql-sse (distinct connections mode), Apollo Client's multipart subscriptions
and urql's `fetchSubscriptions`. Each follows a request to its end: every seq once, in
order, up to a final status (see tests/clients/README.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Server, start_server, stop_server, token_for
from tests.e2e.client import create_request
from tests.nodeclients import run_client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A 3D stage slow enough that a client drops and resumes a request still running."""
    server = start_server(
        tmp_path_factory.mktemp("http-subscription-clients"),
        name="http-subscription-clients",
        LUMI_LOCAL_MODEL_LATENCY_SECONDS="2",
    )
    yield server
    stop_server(server)


def new_request(server: Server, user: str) -> str:
    created = asyncio.run(create_request(server, user, autoModel=True, imageCount=1))
    return str(created["id"])


def assert_every_seq_once_in_order(events: list[dict[str, Any]], first: int = 1) -> None:
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(first, first + len(seqs))), seqs


def test_graphql_sse_follows_a_request_and_resumes_after_dropping_its_stream(
    gateway: Server,
) -> None:
    user = "sse-client"
    followed, resumed = new_request(gateway, user), new_request(gateway, user)
    out = run_client(
        "sse_follow.mjs",
        LUMI_URL=gateway.graphql,
        LUMI_TOKEN=token_for(user),
        LUMI_REQUEST_ID=followed,
        LUMI_RESUME_REQUEST_ID=resumed,
        LUMI_DROP_AFTER="3",
    )
    assert out["followed"]["completed"], out
    assert_every_seq_once_in_order(out["followed"]["events"])
    assert out["followed"]["events"][-1]["status"] == "COMPLETED"
    # Dropped mid-flight after three events, then resumed with Last-Event-ID: 3.
    dropped, rest = out["dropped"]["events"], out["resumed"]["events"]
    assert [e["seq"] for e in dropped] == [1, 2, 3]
    assert dropped[-1]["status"] not in {"COMPLETED", "FAILED", "CANCELLED"}
    assert out["resumed"]["completed"], out
    assert_every_seq_once_in_order(dropped + rest)
    assert rest[-1]["status"] == "COMPLETED"


def test_apollo_client_follows_a_request_over_multipart_and_resumes_after_dropping_it(
    gateway: Server,
) -> None:
    user = "apollo-multipart"
    followed, resumed = new_request(gateway, user), new_request(gateway, user)
    out = run_client(
        "apollo_multipart.mjs",
        LUMI_URL=gateway.graphql,
        LUMI_TOKEN=token_for(user),
        LUMI_REQUEST_ID=followed,
        LUMI_RESUME_REQUEST_ID=resumed,
        LUMI_DROP_AFTER="3",
    )
    assert out["contentType"].startswith("multipart/mixed"), out
    assert out["completed"], out
    assert_every_seq_once_in_order(out["events"])
    assert out["events"][-1]["status"] == "COMPLETED"
    # Unsubscribed after three events, then resubscribed with afterSeq: 3.
    dropped, rest = out["dropped"]["events"], out["resumed"]["events"]
    assert [e["seq"] for e in dropped] == [1, 2, 3]
    assert dropped[-1]["status"] not in {"COMPLETED", "FAILED", "CANCELLED"}
    assert out["resumed"]["completed"], out
    assert_every_seq_once_in_order(dropped + rest)
    assert rest[-1]["status"] == "COMPLETED"


def test_urql_follows_a_request_over_http(gateway: Server) -> None:
    user = "urql-subscription"
    request_id = new_request(gateway, user)
    out = run_client(
        "urql_subscription.mjs",
        LUMI_URL=gateway.graphql,
        LUMI_TOKEN=token_for(user),
        LUMI_REQUEST_ID=request_id,
    )
    assert out["contentType"].startswith("text/event-stream"), out
    assert out["completed"], out
    assert_every_seq_once_in_order(out["events"])
    assert out["events"][-1]["status"] == "COMPLETED"
