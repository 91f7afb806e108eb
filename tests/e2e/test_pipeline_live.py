"""End to end against `lumi serve` under uvicorn: what a frontend developer sees."""

from __future__ import annotations

import io
import uuid

import httpx
import pytest
import trimesh
from gql.transport.websockets import WebsocketsTransport
from PIL import Image

from tests.conftest import Server
from tests.e2e.client import (
    EVENT_FIELDS,
    REQUEST_UPDATES,
    collect,
    create_request,
    data_of,
    error_code,
    graphql,
    ws_session,
)

pytestmark = pytest.mark.e2e

APOLLO = WebsocketsTransport.APOLLO_SUBPROTOCOL  # the legacy graphql-ws

DETAILS = """
query Details($id: ID!) {
  request(id: $id) {
    id status phase progress seq selectedImageId
    images { id index status url width height contentType }
    model { id format fileSize fileUrl previewUrl }
  }
}"""


def a_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def assert_complete_history(events: list[dict[str, object]], *, first_seq: int = 1) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first_seq, first_seq + len(events))), seqs
    progress = [float(str(e["progress"])) for e in events]
    assert progress == sorted(progress)


async def test_me_answers_with_a_development_token(server: Server) -> None:
    user = a_user()
    first = await data_of(server, "{ me { id displayName } }", user=user)
    again = await data_of(server, "{ me { id } }", user=user)
    assert first["me"]["displayName"] == user
    assert again["me"]["id"] == first["me"]["id"]


async def test_identity_never_comes_from_a_plain_header(server: Server) -> None:
    me = await data_of(server, "{ me { id } }", user=a_user())
    spoofed = await graphql(server, "{ me { id } }", headers={"X-User-Id": me["me"]["id"]})
    assert error_code(spoofed) == "UNAUTHENTICATED"
    forged = await graphql(server, "{ me { id } }", headers={"Authorization": "Bearer not.a.jwt"})
    assert error_code(forged) == "UNAUTHENTICATED"
    assert "Traceback" not in str(forged)


async def test_auto_model_streams_every_event_and_serves_real_files(server: Server) -> None:
    user = a_user()
    created = await create_request(server, user, imageCount=2, autoModel=True)
    assert created["status"] == "IMAGE_PENDING"
    async with ws_session(server, user) as session:
        events = await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})

    assert_complete_history(events)
    assert events[0]["status"] == "IMAGE_PENDING"
    assert events[-1]["status"] == "COMPLETED"
    assert events[-1]["progress"] == 100
    statuses = {e["status"] for e in events}
    assert {"IMAGE_GENERATING", "IMAGE_COMPLETED", "MODEL_PENDING", "MODEL_GENERATING"} <= statuses

    details = (await data_of(server, DETAILS, {"id": created["id"]}, user=user))["request"]
    assert details["seq"] == events[-1]["seq"]
    async with httpx.AsyncClient(timeout=30) as client:
        for image in details["images"]:
            response = await client.get(image["url"])
            assert response.status_code == 200
            assert response.headers["content-type"] == "image/png"
            decoded = Image.open(io.BytesIO(response.content))
            assert decoded.size == (image["width"], image["height"])
        model = details["model"]
        response = await client.get(model["fileUrl"])
        assert response.status_code == 200
        assert len(response.content) == model["fileSize"]
    mesh = trimesh.load(io.BytesIO(response.content), file_type="glb", force="mesh")
    assert len(mesh.vertices) > 0
    assert len(mesh.faces) > 0


async def test_a_tampered_file_url_is_refused(server: Server) -> None:
    user = a_user()
    created = await create_request(server, user, imageCount=1, autoModel=False)
    async with ws_session(server, user) as session:
        await collect(
            session,
            REQUEST_UPDATES,
            {"id": created["id"], "afterSeq": 0},
            until=lambda e: e["status"] == "IMAGE_COMPLETED",
        )
    details = (await data_of(server, DETAILS, {"id": created["id"]}, user=user))["request"]
    url = details["images"][0]["url"]
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 200
        assert (await client.get(url.replace("signature=", "signature=0"))).status_code == 403


async def test_a_client_that_reconnects_with_after_seq_gets_exactly_what_it_missed(
    server: Server,
) -> None:
    user = a_user()
    created = await create_request(server, user, imageCount=3, autoModel=True)
    variables = {"id": created["id"], "afterSeq": 0}
    async with ws_session(server, user) as session:
        before = await collect(
            session, REQUEST_UPDATES, variables, until=lambda e: e["status"] == "IMAGE_GENERATING"
        )
    last = before[-1]["seq"]
    async with ws_session(server, user) as session:
        after = await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": last})
    assert after[-1]["status"] == "COMPLETED"
    assert_complete_history(before + after)
    async with ws_session(server, user) as session:
        replay = await collect(session, REQUEST_UPDATES, variables)
    assert replay == before + after


async def test_my_request_updates_follows_every_request_of_the_viewer(server: Server) -> None:
    user = a_user()
    query = f"subscription {{ myRequestUpdates {{ {EVENT_FIELDS} }} }}"
    first = await create_request(server, user, imageCount=1, autoModel=True)
    async with ws_session(server, user) as session:
        # Without afterSeq only new events arrive; subscribe, then start a second request.
        import asyncio

        task = asyncio.create_task(
            collect(
                session,
                query,
                {},
                field="myRequestUpdates",
                until=lambda e: e["status"] == "COMPLETED" and e["requestId"] == second_id,
            )
        )
        await asyncio.sleep(0.3)
        second_id = (await create_request(server, user, imageCount=1, autoModel=True))["id"]
        events = await task
    user_seqs = [e["userSeq"] for e in events]
    assert user_seqs == list(range(user_seqs[0], user_seqs[0] + len(events)))
    mine = [e for e in events if e["requestId"] == second_id]
    assert mine[0]["seq"] == 1
    assert_complete_history(mine)
    assert {e["requestId"] for e in events} <= {first["id"], second_id}


async def test_manual_selection_waits_then_resumes_the_model_phase(server: Server) -> None:
    owner, stranger = a_user(), a_user()
    created = await create_request(server, owner, imageCount=2)
    variables = {"id": created["id"], "afterSeq": 0}
    async with ws_session(server, owner) as session:
        waiting = await collect(
            session, REQUEST_UPDATES, variables, until=lambda e: e["status"] == "IMAGE_COMPLETED"
        )
    assert waiting[-1]["phase"] == "AWAITING_SELECTION"
    details = (await data_of(server, DETAILS, {"id": created["id"]}, user=owner))["request"]
    assert details["model"] is None
    image_id = details["images"][1]["id"]

    select = "mutation S($r: ID!, $i: ID!) { selectImage(requestId: $r, imageId: $i) { status } }"
    foreign = await graphql(server, select, {"r": created["id"], "i": image_id}, user=stranger)
    assert error_code(foreign) == "NOT_FOUND"
    malformed = await graphql(server, select, {"r": created["id"], "i": "nope"}, user=owner)
    assert error_code(malformed) == "BAD_USER_INPUT"
    peeking = await graphql(server, DETAILS, {"id": created["id"]}, user=stranger)
    assert error_code(peeking) == "NOT_FOUND"

    chosen = await data_of(server, select, {"r": created["id"], "i": image_id}, user=owner)
    assert chosen["selectImage"]["status"] == "MODEL_PENDING"
    again = await graphql(server, select, {"r": created["id"], "i": image_id}, user=owner)
    assert error_code(again) == "CONFLICT"
    async with ws_session(server, owner) as session:
        rest = await collect(
            session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": waiting[-1]["seq"]}
        )
    assert rest[-1]["status"] == "COMPLETED"
    assert_complete_history(waiting + rest)
    final = (await data_of(server, DETAILS, {"id": created["id"]}, user=owner))["request"]
    assert final["selectedImageId"] == image_id


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"imageCount": 0}, "imageCount"),
        ({"imageCount": 5}, "imageCount"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
    ],
)
async def test_invalid_input_is_refused_and_creates_nothing(
    server: Server, options: dict[str, object], field: str
) -> None:
    user = a_user()
    body = await graphql(
        server,
        "mutation C($input: CreateRequestInput!) { createRequest(input: $input) { id } }",
        {"input": {"prompt": "a vase", **options}},
        user=user,
    )
    assert error_code(body) == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == field
    listed = await data_of(server, "{ requests(first: 10) { edges { node { id } } } }", user=user)
    assert listed["requests"]["edges"] == []


async def test_requests_are_paged_newest_first_and_filtered_by_status(server: Server) -> None:
    user = a_user()
    ids = [(await create_request(server, user, imageCount=1))["id"] for _ in range(3)]
    page = """query P($after: String) { requests(first: 2, after: $after) {
        edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }"""
    first = (await data_of(server, page, {}, user=user))["requests"]
    second = (await data_of(server, page, {"after": first["pageInfo"]["endCursor"]}, user=user))[
        "requests"
    ]
    seen = [e["node"]["id"] for e in first["edges"] + second["edges"]]
    assert seen == list(reversed(ids))
    assert first["pageInfo"]["hasNextPage"] is True
    assert second["pageInfo"]["hasNextPage"] is False
    bad = await graphql(server, "{ requests(first: 500) { edges { cursor } } }", user=user)
    assert error_code(bad) == "BAD_USER_INPUT"
    broken = await graphql(server, '{ requests(after: "%%%") { edges { cursor } } }', user=user)
    assert error_code(broken) == "BAD_USER_INPUT"


async def test_a_deleted_request_disappears_for_its_owner(server: Server) -> None:
    user = a_user()
    created = await create_request(server, user, imageCount=1)
    deleted = await data_of(
        server, "mutation D($id: ID!) { deleteRequest(id: $id) }", {"id": created["id"]}, user=user
    )
    assert deleted["deleteRequest"] == created["id"]
    gone = await graphql(server, DETAILS, {"id": created["id"]}, user=user)
    assert error_code(gone) == "NOT_FOUND"


async def test_the_legacy_graphql_ws_protocol_also_streams(server: Server) -> None:
    user = a_user()
    created = await create_request(server, user, imageCount=1, autoModel=True)
    async with ws_session(server, user, protocol=WebsocketsTransport.APOLLO_SUBPROTOCOL) as session:
        events = await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})
    assert_complete_history(events)
    assert events[-1]["status"] == "COMPLETED"


async def test_resuming_at_or_past_the_end(server: Server) -> None:
    """A client that lost its socket between the final event and `complete` resumes at
    the last seq: the stream ends at once (it used to stay open for ever, holding a
    subscription slot). A cursor past the last event is a mistake, said as one."""
    user = a_user()
    created = await create_request(server, user, imageCount=1, autoModel=True)
    async with ws_session(server, user) as session:
        events = await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})
        assert events[-1]["status"] == "COMPLETED"
        last = events[-1]["seq"]
        resumed = await collect(
            session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": last}, timeout=5
        )
        assert resumed == []
        with pytest.raises(Exception, match="after the last event") as raised:
            await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": last + 7})
        assert "BAD_USER_INPUT" in str(getattr(raised.value, "errors", raised.value))
        mine = "subscription Mine($after: Int) { myRequestUpdates(afterSeq: $after) { seq } }"
        with pytest.raises(Exception, match="after the last event"):
            await collect(session, mine, {"after": 10_000}, field="myRequestUpdates")


async def test_subscriptions_need_a_token(server: Server) -> None:
    owner = a_user()
    created = await create_request(server, owner, imageCount=1)
    # Both protocols answer the operation UNAUTHENTICATED (the socket stays open).
    async with ws_session(server, None) as session:
        with pytest.raises(Exception, match="token"):
            await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})
    async with ws_session(server, None, protocol=APOLLO) as session:
        with pytest.raises(Exception, match="token"):
            await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})
    async with ws_session(server, a_user()) as session:
        with pytest.raises(Exception, match="not found"):
            await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})


async def test_graphiql_is_served_and_health_answers(server: Server) -> None:
    async with httpx.AsyncClient() as client:
        page = await client.get(server.graphql, headers={"Accept": "text/html"})
        health = await client.get(f"{server.url}/health")
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    assert health.json() == {"status": "ok"}


async def test_cancel_reaches_subscribers_while_a_slow_provider_call_is_in_flight(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tests.conftest import start_server, stop_server

    slow = start_server(tmp_path_factory.mktemp("slow"), LUMI_LOCAL_LATENCY_SECONDS="5")
    try:
        user = a_user()
        created = await create_request(slow, user, imageCount=1)
        async with ws_session(slow, user) as session:
            await collect(
                session,
                REQUEST_UPDATES,
                {"id": created["id"], "afterSeq": 0},
                until=lambda e: e["status"] == "IMAGE_GENERATING",
            )
            cancel = "mutation C($id: ID!) { cancelRequest(id: $id) { status } }"
            done = await data_of(slow, cancel, {"id": created["id"]}, user=user)
            assert done["cancelRequest"]["status"] == "CANCELLED"
            # The LLM call has seconds to go; the event must not wait for it.
            rest = await collect(
                session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 2}, timeout=2
            )
        assert rest[-1]["status"] == "CANCELLED"
        again = await graphql(slow, cancel, {"id": created["id"]}, user=user)
        assert error_code(again) == "CONFLICT"
    finally:
        stop_server(slow)
