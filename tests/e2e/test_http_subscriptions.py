"""Subscriptions over HTTP against a live `lumi serve`, read with httpx the way curl or a
proxy-bound client would: graphql-sse (`text/event-stream`) and multipart subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, mariadb_database, start_server, stop_server, token_for
from tests.e2e.client import REQUEST_UPDATES, create_request

pytestmark = pytest.mark.e2e

SSE = "text/event-stream"
MULTIPART = "multipart/mixed;subscriptionSpec=1.0,application/json"
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
MY_UPDATES = (
    "subscription Mine($after: Int) { myRequestUpdates(afterSeq: $after) { seq userSeq status } }"
)


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def http_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One subscription per user, quick heartbeats, and a 3D stage slow enough that a
    request is still running when a client resumes it."""
    data_dir: Path = tmp_path_factory.mktemp(f"http-subscriptions-{request.param}")
    with contextlib.ExitStack() as stack:
        env = {
            "LUMI_MAX_SUBSCRIPTIONS_PER_USER": "1",
            "LUMI_HTTP_STREAM_HEARTBEAT_SECONDS": "0.3",
            "LUMI_LOCAL_MODEL_LATENCY_SECONDS": "2",
        }
        if request.param == "mariadb":
            name = f"lumi_http_subscriptions_{os.getpid()}"
            env["LUMI_DATABASE_URL"] = stack.enter_context(mariadb_database(name))
        server = start_server(data_dir, name="http-subscriptions", **env)
        yield server
        stop_server(server)


@dataclass
class Frame:
    """One SSE event or comment, or one multipart part."""

    event: str | None = None  # next, complete; None for a heartbeat
    id: str | None = None
    data: Any = None


def headers_for(user: str | None, accept: str, **extra: str) -> dict[str, str]:
    headers = {"Accept": accept, **extra}
    if user:
        headers["Authorization"] = f"Bearer {token_for(user)}"
    return headers


async def sse_frames(response: httpx.Response) -> AsyncIterator[Frame]:
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Frame()  # a heartbeat comment
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            data = json.loads(fields["data"]) if fields.get("data") else None
            yield Frame(fields.get("event"), fields.get("id"), data)
            fields = {}


async def multipart_frames(response: httpx.Response) -> AsyncIterator[Frame]:
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        while (end := buffer.find("\r\n--graphql")) >= 0:
            part, buffer = buffer[:end], buffer[end + len("\r\n--graphql") :]
            _, _, body = part.partition("\r\n\r\n")
            if not body.strip():
                continue
            data = json.loads(body)
            yield Frame("next", data=data["payload"]) if data else Frame()
        if buffer.startswith("--"):
            yield Frame("complete")
            buffer = buffer[2:]


@contextlib.asynccontextmanager
async def stream(
    server: Server, body: dict[str, Any], headers: dict[str, str]
) -> AsyncIterator[AsyncIterator[Frame]]:
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", server.graphql, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        kind = response.headers["content-type"]
        yield sse_frames(response) if kind.startswith(SSE) else multipart_frames(response)


async def follow(
    server: Server, body: dict[str, Any], headers: dict[str, str], timeout: float = 30
) -> list[Frame]:
    """Every frame until the server ends the response."""
    async with stream(server, body, headers) as frames:
        return [frame async for frame in _within(frames, timeout)]


async def _within(frames: AsyncIterator[Frame], timeout: float) -> AsyncIterator[Frame]:
    deadline = asyncio.get_running_loop().time() + timeout
    async with asyncio.timeout_at(deadline):
        async for frame in frames:
            yield frame


def follow_body(request_id: str, after: int = 0) -> dict[str, Any]:
    return {"query": REQUEST_UPDATES, "variables": {"id": request_id, "afterSeq": after}}


def events(frames: list[Frame], field: str = "requestUpdates") -> list[dict[str, Any]]:
    return [f.data["data"][field] for f in frames if f.event == "next"]


def assert_runs_to_the_end(frames: list[Frame], first: int = 1) -> list[int]:
    """Every seq once, in order, up to a final status; then `complete`, and nothing else."""
    updates = events(frames)
    seqs = [update["seq"] for update in updates]
    assert seqs == list(range(first, first + len(seqs))), seqs
    assert updates[-1]["status"] in FINAL
    assert frames[-1].event == "complete"
    assert all(f.event in {None, "next"} for f in frames[:-1]), frames
    return seqs


async def test_sse_follows_a_request_to_its_end_with_every_seq_once_in_order(
    http_server: Server,
) -> None:
    request = await create_request(http_server, "sse-follow", autoModel=True, imageCount=1)
    frames = await follow(http_server, follow_body(request["id"]), headers_for("sse-follow", SSE))
    seqs = assert_runs_to_the_end(frames)
    assert events(frames)[-1]["status"] == "COMPLETED"
    # Each event's SSE id is its seq: what a reconnecting client sends as Last-Event-ID.
    assert [f.id for f in frames if f.event == "next"] == [str(s) for s in seqs]
    assert any(f.event is None for f in frames), "no heartbeat while the 3D stage ran"


async def test_multipart_follows_a_request_to_its_end_with_every_seq_once_in_order(
    http_server: Server,
) -> None:
    request = await create_request(http_server, "mp-follow", autoModel=True, imageCount=1)
    frames = await follow(
        http_server, follow_body(request["id"]), headers_for("mp-follow", MULTIPART)
    )
    assert frames[0].event is None  # the heartbeat that opens the body
    assert_runs_to_the_end(frames)
    assert events(frames)[-1]["status"] == "COMPLETED"


async def test_last_event_id_resumes_mid_flight_with_exactly_the_rest(
    http_server: Server,
) -> None:
    user = "sse-resume"
    request = await create_request(http_server, user, autoModel=True, imageCount=1)
    body = follow_body(request["id"])
    async with stream(http_server, body, headers_for(user, SSE)) as frames:
        first = []
        async for frame in _within(frames, 30):
            if frame.event == "next":
                first.append(frame)
            if len(first) == 3:
                break  # the client drops the stream
    assert events(first)[-1]["status"] not in FINAL  # mid-flight indeed
    resumed = await follow(http_server, body, headers_for(user, SSE, **{"Last-Event-ID": "3"}))
    assert_runs_to_the_end(resumed, first=4)
    assert events(resumed)[-1]["status"] == "COMPLETED"


async def test_the_later_of_after_seq_and_last_event_id_wins(http_server: Server) -> None:
    user = "sse-later"
    request = await create_request(http_server, user, autoModel=True, imageCount=1)
    everything = await follow(http_server, follow_body(request["id"]), headers_for(user, SSE))
    last = assert_runs_to_the_end(everything)[-1]
    for after, last_event_id in ((5, "2"), (2, "5")):
        headers = headers_for(user, SSE, **{"Last-Event-ID": last_event_id})
        frames = await follow(http_server, follow_body(request["id"], after), headers)
        assert assert_runs_to_the_end(frames, first=6)[-1] == last
    # At the last event of a finished request, nothing is left: the stream ends at once.
    headers = headers_for(user, SSE, **{"Last-Event-ID": str(last)})
    frames = await follow(http_server, follow_body(request["id"]), headers, timeout=5)
    assert [f.event for f in frames if f.event] == ["complete"]


async def test_my_request_updates_resume_from_the_user_seq_in_last_event_id(
    http_server: Server,
) -> None:
    user = "sse-mine"
    request = await create_request(http_server, user, autoModel=True, imageCount=1)
    everything = await follow(http_server, follow_body(request["id"]), headers_for(user, SSE))
    last = events(everything)[-1]["userSeq"]
    headers = headers_for(user, SSE, **{"Last-Event-ID": "2"})
    seen: list[Frame] = []
    async with stream(http_server, {"query": MY_UPDATES}, headers) as frames:
        async for frame in _within(frames, 30):
            if frame.event == "next":
                seen.append(frame)
                if frame.data["data"]["myRequestUpdates"]["userSeq"] == last:
                    break  # myRequestUpdates never ends by itself
    user_seqs = [e["userSeq"] for e in events(seen, "myRequestUpdates")]
    assert user_seqs == list(range(3, last + 1))
    assert [f.id for f in seen] == [str(s) for s in user_seqs]


@pytest.mark.parametrize("accept", [SSE, MULTIPART])
@pytest.mark.parametrize(
    ("user", "query", "code"),
    [
        (None, MY_UPDATES, "UNAUTHENTICATED"),
        (
            "sse-limits",
            "subscription { myRequestUpdates { " + "seq " * 3000 + "} }",
            "LIMIT_EXCEEDED",
        ),
    ],
)
async def test_a_refused_subscription_is_answered_with_its_code_and_ends(
    http_server: Server, accept: str, user: str | None, query: str, code: str
) -> None:
    frames = await follow(http_server, {"query": query}, headers_for(user, accept), 10)
    [refusal] = [f for f in frames if f.event == "next"]
    assert refusal.data["data"] is None
    [error] = refusal.data["errors"]
    assert error["extensions"]["code"] == code
    assert "Traceback" not in json.dumps(refusal.data)
    assert frames[-1].event == "complete"


async def test_an_event_source_subscribes_over_get(http_server: Server) -> None:
    user = "sse-get"
    request = await create_request(http_server, user, autoModel=True, imageCount=1)
    params = {
        "query": REQUEST_UPDATES,
        "variables": json.dumps({"id": request["id"], "afterSeq": 0}),
    }
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "GET", http_server.graphql, params=params, headers=headers_for(user, SSE)
        ) as response,
    ):
        assert response.headers["content-type"].startswith(SSE)
        frames = [frame async for frame in _within(sse_frames(response), 30)]
    assert_runs_to_the_end(frames)


async def test_a_query_that_prefers_json_is_answered_with_json_not_a_stream(
    http_server: Server,
) -> None:
    # urql's Accept for a query: it takes a stream too, but one JSON answer first.
    accept = (
        "application/graphql-response+json, application/graphql+json, application/json, "
        "text/event-stream, multipart/mixed"
    )
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            http_server.graphql,
            params={"query": "{ me { displayName } }"},
            headers=headers_for("sse-query", accept),
        )
    assert response.headers["content-type"].startswith("application/graphql-response+json")
    assert response.json() == {"data": {"me": {"displayName": "sse-query"}}}


async def test_a_last_event_id_that_is_not_ours_is_a_json_bad_request(
    http_server: Server,
) -> None:
    headers = headers_for("sse-bad-id", SSE, **{"Last-Event-ID": "seven"})
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            http_server.graphql, json={"query": MY_UPDATES}, headers=headers
        )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "Last-Event-ID" in error["message"]


async def active_subscriptions(server: Server) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{server.url}/metrics")).text
    [line] = [x for x in text.splitlines() if x.startswith("lumi_active_subscriptions ")]
    return float(line.split()[1])


async def first_event_or_heartbeat(server: Server, headers: dict[str, str]) -> Frame:
    async with stream(server, {"query": MY_UPDATES}, headers) as frames:
        async for frame in _within(frames, 10):
            return frame
    raise AssertionError("the stream ended without a frame")


@pytest.mark.parametrize("accept", [SSE, MULTIPART])
async def test_a_client_that_disconnects_frees_its_subscription_slot(
    http_server: Server, accept: str
) -> None:
    user = f"slot-{accept[:5]}"
    headers = headers_for(user, SSE)
    before = await active_subscriptions(http_server)
    async with stream(http_server, {"query": MY_UPDATES}, headers_for(user, accept)) as held:
        async for frame in _within(held, 10):
            if frame.event is None and await active_subscriptions(http_server) > before:
                break  # it holds the user's one slot
        refused = await first_event_or_heartbeat(http_server, headers)
        [error] = refused.data["errors"]
        assert (error["extensions"]["code"], error["extensions"]["scope"]) == (
            "LIMIT_EXCEEDED",
            "user",
        )
    # The client went away: its subscription is closed at once, and its slot is free.
    gone = time.monotonic()
    while await active_subscriptions(http_server) > before:
        assert time.monotonic() - gone < 2, "the subscription outlived its client"
        await asyncio.sleep(0.05)
    assert (await first_event_or_heartbeat(http_server, headers)).event is None


async def test_a_stream_does_not_hold_a_shutdown_past_its_grace(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir = tmp_path_factory.mktemp("http-subscriptions-shutdown")
    server = start_server(data_dir, name="shutdown", LUMI_SHUTDOWN_GRACE_SECONDS="1")
    try:
        async with stream(server, {"query": MY_UPDATES}, headers_for("bye", SSE)) as frames:
            await asyncio.sleep(0.3)
            stopping = time.monotonic()
            server.process.terminate()
            with contextlib.suppress(httpx.HTTPError):
                async for _ in _within(frames, 10):
                    pass
            await asyncio.to_thread(server.process.wait, 10)
        assert time.monotonic() - stopping < 5
        assert "Traceback" not in server.log.read_text()
    finally:
        stop_server(server)
