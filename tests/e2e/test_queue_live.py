"""Queue positions against a live `lumi serve` (issue 22): with the work held, waiting
requests show positions 0..N-1, high before default before low; once work runs, every
request leaves the line, and `requestQueue` counts down to the end - under the embedded
broker and under the Redis broker with a `lumi worker` started later.

The order work starts in is the broker's (Dramatiq: the high queue before default before
low, each first in, first out), which may differ from the line's for messages a worker
has already fetched when higher-priority work arrives: positions count the line, and
these tests do not claim the run order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from tests.conftest import (
    REDIS,
    Server,
    lumi,
    mariadb_database,
    require,
    start_server,
    stop_process,
    stop_server,
    token_for,
)
from tests.e2e.client import REQUEST_UPDATES, collect, data_of, ws_session

pytestmark = pytest.mark.e2e

# Created in this order; they must run high first, then default, then low.
PRIORITIES = ["LOW", "DEFAULT", "HIGH", "DEFAULT", "HIGH", "LOW"]
EXPECTED = [4, 2, 0, 3, 1, 5]  # each one's queue position
ENV = {"LUMI_HIGH_PRIORITY_ROLES": "user", "LUMI_STAGE_CONCURRENCY": "1"}

CREATE = """mutation C($input: CreateRequestInput!) { createRequest(input: $input) { id } }"""
LINE = """query { requests(first: 20) { edges { node {
  id queuePosition estimatedStartAt estimatedCompletionAt
  jobs { kind queuePosition startedAt } } } } }"""
QUEUE = """subscription Q($id: ID!) { requestQueue(id: $id) {
  requestId queuePosition estimatedStartAt estimatedCompletionAt } }"""
TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL  # graphql-transport-ws
LEGACY_WS = WebsocketsTransport.APOLLO_SUBPROTOCOL  # graphql-ws
SSE = "text/event-stream"
MULTIPART = "multipart/mixed;subscriptionSpec=1.0,application/json"


async def create_line(server: Server, user: str) -> list[str]:
    ids = []
    for priority in PRIORITIES:
        options = {"prompt": "a tin lighthouse", "imageCount": 1, "optimizePrompt": False}
        data = await data_of(
            server, CREATE, {"input": {**options, "priority": priority}}, user=user
        )
        ids.append(data["createRequest"]["id"])
    return ids


async def line(server: Server, user: str) -> dict[str, dict[str, Any]]:
    data = await data_of(server, LINE, user=user)
    return {edge["node"]["id"]: edge["node"] for edge in data["requests"]["edges"]}


async def assert_positions(server: Server, user: str, ids: list[str]) -> None:
    nodes = await line(server, user)
    assert [nodes[i]["queuePosition"] for i in ids] == EXPECTED
    assert [nodes[i]["jobs"][0]["queuePosition"] for i in ids] == EXPECTED


async def run_order(server: Server, user: str, ids: list[str]) -> list[str]:
    """The requests, in the order their first job started (waits for all to have run)."""
    async with ws_session(server, user) as session:
        for request_id in ids:
            await collect(
                session,
                REQUEST_UPDATES,
                {"id": request_id, "afterSeq": 0},
                until=lambda e: e["status"] in {"IMAGE_COMPLETED", "FAILED"},
                timeout=60,
            )
    nodes = await line(server, user)
    assert all(nodes[i]["queuePosition"] is None for i in ids)
    started = {
        i: min(j["startedAt"] for j in nodes[i]["jobs"] if j["kind"] == "PROMPT") for i in ids
    }
    return sorted(ids, key=lambda i: started[i])


async def first_over_http(server: Server, user: str, request_id: str, accept: str) -> Any:
    """The first value of `requestQueue` streamed over HTTP: SSE or multipart."""
    headers = {"Accept": accept, "Authorization": f"Bearer {token_for(user)}"}
    body = {"query": QUEUE, "variables": {"id": request_id}}
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", server.graphql, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        async for text in response.aiter_lines():
            start = text.find("{")
            if "requestQueue" in text and start >= 0:
                data = json.loads(text[start:])
                return data.get("payload", data)["data"]["requestQueue"]
    raise AssertionError("the stream ended without a value")


async def first_over_ws(server: Server, user: str, request_id: str, protocol: str) -> Any:
    async with ws_session(server, user, protocol=protocol) as session:
        async for result in session.subscribe(
            GraphQLRequest(QUEUE, variable_values={"id": request_id})
        ):
            return result["requestQueue"]
    raise AssertionError("the subscription ended without a value")


async def test_embedded_a_held_line_shows_positions_over_every_transport_then_runs(
    tmp_path: Path,
) -> None:
    user = f"line-{uuid.uuid4().hex[:6]}"
    held = start_server(tmp_path, name="held", LUMI_EMBEDDED_WORKERS="false", **ENV)
    try:
        ids = await create_line(held, user)
        await assert_positions(held, user, ids)
        last = ids[EXPECTED.index(5)]
        for protocol in (TRANSPORT_WS, LEGACY_WS):
            now = await asyncio.wait_for(first_over_ws(held, user, last, protocol), 30)
            assert now["queuePosition"] == 5
            assert now["requestId"] == last
        for accept in (SSE, MULTIPART):
            now = await asyncio.wait_for(first_over_http(held, user, last, accept), 30)
            assert now["queuePosition"] == 5
    finally:
        stop_server(held)
    # The same database with worker threads: the start sends the waiting work again.
    running = start_server(tmp_path, name="running", **ENV)
    try:
        assert sorted(await run_order(running, user, ids)) == sorted(ids)
    finally:
        stop_server(running)


@pytest.fixture
def redis_line(tmp_path: Path) -> Iterator[dict[str, str]]:
    require("Redis", REDIS)
    with mariadb_database(f"lumi_queue_live_{os.getpid()}") as url:
        yield {
            **ENV,
            "LUMI_DATABASE_URL": url,
            "LUMI_BROKER": "redis",
            "LUMI_BUS": "redis",
            "LUMI_REDIS_NAMESPACE": f"lumi-test-{uuid.uuid4().hex[:8]}",
            "LUMI_WORKER_METRICS_PORT": "0",
            # Slow enough that the line takes a few seconds to run down.
            "LUMI_LOCAL_LATENCY_SECONDS": "0.4",
        }


async def follow_queue(
    server: Server, user: str, request_id: str, protocol: str, ready: asyncio.Event
) -> list[tuple[float, dict[str, Any]]]:
    """Every value `requestQueue` sends, with when it came, until it completes; `ready`
    is set at the first."""
    received = []
    async with ws_session(server, user, protocol=protocol) as session:
        request = GraphQLRequest(QUEUE, variable_values={"id": request_id})
        async for result in session.subscribe(request):
            received.append((time.monotonic(), result["requestQueue"]))
            ready.set()
    return received


def assert_counts_down(received: list[tuple[float, dict[str, Any]]], first: int) -> None:
    positions = [value["queuePosition"] for _, value in received]
    assert positions[0] == first
    assert positions[-1] is None  # the last value says it no longer waits, then it ends
    # Each value a change: fewer ahead than the last. How many values come between the
    # first and the end depends on how fast the line runs (tests/requests covers each
    # change arriving in turn).
    waiting = positions[:-1]
    assert all(a > b for a, b in itertools.pairwise(waiting))  # type: ignore[operator]
    times = [at for at, _ in received]
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(times))  # <= one a second


async def test_redis_a_worker_started_later_runs_the_line_and_subscribers_count_down(
    tmp_path: Path, redis_line: dict[str, str]
) -> None:
    user = f"line-{uuid.uuid4().hex[:6]}"
    with contextlib.ExitStack() as started:
        api = start_server(tmp_path, name="api", **redis_line)
        started.callback(stop_server, api)
        ids = await create_line(api, user)
        await assert_positions(api, user, ids)
        last, fifth = ids[EXPECTED.index(5)], ids[EXPECTED.index(4)]
        ready = [asyncio.Event(), asyncio.Event()]
        followers = [
            asyncio.create_task(follow_queue(api, user, last, TRANSPORT_WS, ready[0])),
            asyncio.create_task(follow_queue(api, user, fifth, LEGACY_WS, ready[1])),
        ]
        try:
            # Both have their first value before any work runs.
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 30)
            worker = lumi(
                tmp_path, tmp_path / "worker.log", "worker", "--threads", "2", **redis_line
            )
            started.callback(stop_process, worker)
            last_values, fifth_values = await asyncio.wait_for(asyncio.gather(*followers), 90)
        finally:
            for task in followers:
                task.cancel()
        assert_counts_down(last_values, 5)
        assert_counts_down(fifth_values, 4)
        assert sorted(await run_order(api, user, ids)) == sorted(ids)
