"""Relay's object identification: every object a client holds has a global id that
`node` refetches, for its owner only; every field that names an object says the same id,
and every argument takes it (and the row id clients kept from before)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.deps import Deps
from app.graphql.context import Context
from app.graphql.relay import global_id, parse_global_id, row_id
from app.schema import schema
from tests.conftest import make_settings
from tests.graphql.client import code, data, execute, http_request
from tests.workers.test_pipeline import a_viewer, deliver

OWNED = """{
  requests(first: 1) { edges { node { id prompt
    images { id index prompt } jobs { id kind }
    model { id name owner { id displayName } } } } }
  me { id displayName profile { id displayName }
    ledger(first: 1) { edges { node { id reason amount } } } }
}"""
NODE = """query N($id: ID!) { node(id: $id) { __typename id
  ... on GenerationRequest { prompt }
  ... on GeneratedImage { index prompt }
  ... on GenerationJob { kind }
  ... on Model { name }
  ... on PublicProfile { displayName }
  ... on Me { displayName }
  ... on CreditEntry { reason amount } } }"""
CREATE = """mutation C($prompt: String!) {
  createRequest(input: {prompt: $prompt, imageCount: 2, autoModel: true}) { id } }"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Instant local providers, so a request runs to its model at once."""
    return make_settings(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'lumi.db'}",
        local_latency_seconds=0,
        local_model_latency_seconds=0,
        model_poll_interval_seconds=0.01,
    )


async def finished_request(deps: Deps, user: str, prompt: str) -> dict[str, Any]:
    """`user`'s request, run to its model; what the owner's client holds of it."""
    await a_viewer(deps, user)
    await data(deps, CREATE, {"prompt": prompt}, user=user)
    await deliver(deps)
    return dict(await data(deps, OWNED, user=user))


def held(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every object of the owner's view by type, as the owner's client saw it."""
    request = view["requests"]["edges"][0]["node"]
    model, me = request["model"], view["me"]
    image, job = request["images"][0], request["jobs"][0]
    entry = me["ledger"]["edges"][0]["node"]
    return {
        "GenerationRequest": {"id": request["id"], "prompt": request["prompt"]},
        "GeneratedImage": {"id": image["id"], "index": image["index"], "prompt": image["prompt"]},
        "GenerationJob": {"id": job["id"], "kind": job["kind"]},
        "Model": {"id": model["id"], "name": model["name"]},
        "PublicProfile": model["owner"],
        "Me": {"id": me["id"], "displayName": me["displayName"]},
        "CreditEntry": {"id": entry["id"], "reason": entry["reason"], "amount": entry["amount"]},
    }


async def test_node_refetches_each_type_for_its_owner_and_nothing_private_for_others(
    deps: Deps,
) -> None:
    view = await finished_request(deps, "alice", "a secret brass owl")
    await a_viewer(deps, "bob")
    objects = held(view)
    private = set(objects) - {"PublicProfile"}
    for type_name, fields in objects.items():
        assert parse_global_id(fields["id"]) is not None, (type_name, fields)
        mine = await data(deps, NODE, {"id": fields["id"]}, user="alice")
        assert mine["node"] == {"__typename": type_name, **fields}
        for stranger in ("bob", None):
            seen = await execute(deps, NODE, {"id": fields["id"]}, user=stranger)
            if type_name not in private:  # a display name is public
                assert seen["data"]["node"] == {"__typename": type_name, **fields}
                continue
            assert seen["data"] == {"node": None}, (type_name, stranger)
            assert code(seen) == "NOT_FOUND"
            assert seen["errors"][0]["path"] == ["node"]
            text = json.dumps(seen)
            assert "brass owl" not in text
            assert fields["id"] not in text
            assert row_id(fields["id"]) not in text
            assert seen["errors"][0]["message"] == "nothing with this id"


async def test_a_published_model_is_anyones_to_refetch(deps: Deps) -> None:
    view = await finished_request(deps, "alice", "a tin fox")
    model = held(view)["Model"]
    publish = "mutation P($id: ID!) { publishModel(id: $id) { id } }"
    assert (await data(deps, publish, {"id": model["id"]}, user="alice"))["publishModel"] == {
        "id": model["id"]
    }
    for visitor in ("bob", None):
        seen = await data(deps, NODE, {"id": model["id"]}, user=visitor)
        assert seen["node"] == {"__typename": "Model", **model}


async def test_nodes_answers_in_order_with_a_null_and_an_error_for_each_hidden_one(
    deps: Deps,
) -> None:
    mine = held(await finished_request(deps, "alice", "a clay cat"))
    theirs = held(await finished_request(deps, "bob", "a wax bee"))
    ids = [mine["Model"]["id"], theirs["GenerationRequest"]["id"], mine["GeneratedImage"]["id"]]
    query = "query N($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"
    result = await execute(deps, query, {"ids": ids}, user="alice")
    assert result["data"]["nodes"] == [
        {"__typename": "Model", "id": ids[0]},
        None,
        {"__typename": "GeneratedImage", "id": ids[2]},
    ]
    [error] = result["errors"]
    assert (error["path"], error["extensions"]["code"]) == (["nodes", 1], "NOT_FOUND")
    assert "wax bee" not in json.dumps(result)


@pytest.mark.parametrize(
    "value",
    [
        "nope",
        "01a24cb36acd780b5c6833a795b56a9b",  # a row id: node wants to know the type
        base64.b64encode(b"Spaceship:01a24cb36acd780b5c6833a795b56a9b").decode(),
        base64.b64encode(b"RequestEvent:01a24cb36acd780b5c6833a795b56a9b").decode(),  # no Node
        base64.b64encode(b"Model:../../etc/passwd").decode(),
    ],
    ids=["text", "row-id", "unknown-type", "not-a-node-type", "bad-row-id"],
)
async def test_an_id_that_is_not_a_global_id_is_bad_user_input(deps: Deps, value: str) -> None:
    await a_viewer(deps, "alice")
    result = await execute(deps, NODE, {"id": value}, user="alice")
    assert code(result) == "BAD_USER_INPUT"
    assert result["data"] == {"node": None}


async def test_nodes_takes_at_most_a_page_of_ids(deps: Deps) -> None:
    ids = [global_id("Model", f"{n:032x}") for n in range(101)]
    result = await execute(deps, "query N($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ids})
    assert code(result) == "BAD_USER_INPUT"


async def events_of(deps: Deps, user: str, request_id: str) -> list[dict[str, Any]]:
    """Every event of a finished request, as its subscription replays them."""
    context = Context(deps, http_request(user), None)
    document = """subscription S($id: ID!) { requestUpdates(id: $id) {
      requestId imageId modelId jobId status request { id } } }"""
    stream = await schema.subscribe(
        document, variable_values={"id": request_id}, context_value=context
    )
    assert hasattr(stream, "__anext__"), stream  # a stream, not a refusal
    events = []
    try:
        async with asyncio.timeout(10):
            async for result in stream:
                assert not result.errors, result.errors
                events.append(result.data["requestUpdates"])
    finally:
        await context.end_reads()
    return events


async def test_every_field_naming_an_object_says_its_global_id(deps: Deps) -> None:
    await a_viewer(deps, "alice")
    created = await data(
        deps,
        'mutation { createRequest(input: {prompt: "a jade frog", imageCount: 2}) { id } }',
        user="alice",
    )
    request_id = created["createRequest"]["id"]
    assert parse_global_id(request_id) == ("GenerationRequest", row_id(request_id))
    await deliver(deps)
    details = """query D($id: ID!) { request(id: $id) { id selectedImageId
      images { id status } jobs { id imageId } model { id sourceRequest { id }
      sourceImage { id } } } }"""
    ready = (await data(deps, details, {"id": request_id}, user="alice"))["request"]
    image_ids = [image["id"] for image in ready["images"]]
    assert {job["imageId"] for job in ready["jobs"]} - {None} == set(image_ids)
    select = """mutation S($r: ID!, $i: ID!) { selectImage(requestId: $r, imageId: $i) {
      selectedImageId } }"""
    chosen = await data(deps, select, {"r": request_id, "i": image_ids[1]}, user="alice")
    assert chosen["selectImage"]["selectedImageId"] == image_ids[1]
    await deliver(deps)
    done = (await data(deps, details, {"id": request_id}, user="alice"))["request"]
    model = done["model"]
    assert model["sourceRequest"] == {"id": request_id}
    assert model["sourceImage"] == {"id": image_ids[1]}

    events = await events_of(deps, "alice", request_id)
    assert events[-1]["status"] == "COMPLETED"
    assert {e["requestId"] for e in events} == {request_id}
    assert {e["request"]["id"] for e in events} == {request_id}
    assert {e["imageId"] for e in events} - {None} <= set(image_ids)
    assert {e["modelId"] for e in events} - {None} == {model["id"]}
    job_ids = {job["id"] for job in done["jobs"]}
    assert {e["jobId"] for e in events} - {None} <= job_ids

    ledger = "{ me { ledger(first: 50) { edges { node { requestId } } } } }"
    named = await data(deps, ledger, user="alice")
    assert request_id in {e["node"]["requestId"] for e in named["me"]["ledger"]["edges"]}
    status = """query S($ids: [ID!]!) { interactionStatus(modelIds: $ids) { modelId } }"""
    answered = await data(deps, status, {"ids": [model["id"]]}, user="alice")
    assert answered["interactionStatus"] == [{"modelId": model["id"]}]
    delete = "mutation D($id: ID!) { deleteRequest(id: $id) }"
    assert (await data(deps, delete, {"id": request_id}, user="alice")) == {
        "deleteRequest": request_id
    }


async def test_arguments_take_the_row_id_clients_kept_from_before_global_ids(
    deps: Deps,
) -> None:
    view = await finished_request(deps, "alice", "a bone whistle")
    objects = held(view)
    request_row, model_row = (
        row_id(objects["GenerationRequest"]["id"]),
        row_id(objects["Model"]["id"]),
    )
    found = await data(
        deps, "query R($id: ID!) { request(id: $id) { id } }", {"id": request_row}, user="alice"
    )
    assert found["request"]["id"] == objects["GenerationRequest"]["id"]
    liked = await data(
        deps,
        "mutation L($id: ID!) { likeModel(id: $id) { id likedByMe } }",
        {"id": model_row},
        user="alice",
    )
    assert liked["likeModel"] == {"id": objects["Model"]["id"], "likedByMe": True}
    events = await events_of(deps, "alice", request_row)
    assert {e["requestId"] for e in events} == {objects["GenerationRequest"]["id"]}
    deleted = await data(
        deps, "mutation D($id: ID!) { deleteModel(id: $id) }", {"id": model_row}, user="alice"
    )
    assert deleted["deleteModel"] == objects["Model"]["id"]
    # and a malformed one is refused as it always was
    refused = await execute(
        deps, "query R($id: ID!) { request(id: $id) { id } }", {"id": "x"}, user="alice"
    )
    assert code(refused) == "BAD_USER_INPUT"
