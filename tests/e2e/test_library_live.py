"""A finished request's model in the library, over real HTTP: publish, download, delete."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import Server
from tests.e2e.client import (
    REQUEST_UPDATES,
    collect,
    create_request,
    data_of,
    error_code,
    graphql,
    ws_session,
)

pytestmark = pytest.mark.e2e

MINE = """{ myModels(first: 5) { edges { node {
  id name format fileUrl previewUrl sourceRequest { id prompt } sourceImage { id url }
} } } }"""
PUBLIC_VIEW = """query M($id: ID!) { model(id: $id) {
  id owner { displayName } sourceRequest { id } sourceImage { id } fileUrl
} }"""


async def test_a_finished_request_leaves_a_model_that_can_be_shared_and_deleted(
    server: Server,
) -> None:
    owner, visitor = f"o-{uuid.uuid4().hex[:6]}", f"v-{uuid.uuid4().hex[:6]}"
    created = await create_request(server, owner, imageCount=1, autoModel=True)
    async with ws_session(server, owner) as session:
        await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})

    edges = (await data_of(server, MINE, user=owner))["myModels"]["edges"]
    assert len(edges) == 1
    model = edges[0]["node"]
    assert model["sourceRequest"]["id"] == created["id"]
    assert model["name"].startswith("a brass robot toy")

    hidden = await graphql(server, PUBLIC_VIEW, {"id": model["id"]}, user=visitor)
    assert error_code(hidden) == "NOT_FOUND"
    publish = "mutation P($id: ID!) { publishModel(id: $id) { visibility } }"
    await data_of(server, publish, {"id": model["id"]}, user=owner)
    seen = (await data_of(server, PUBLIC_VIEW, {"id": model["id"]}, user=visitor))["model"]
    assert seen["owner"]["displayName"] == owner
    assert seen["sourceRequest"] is None
    assert seen["sourceImage"] is None

    download = "mutation D($id: ID!) { downloadModel(id: $id) { url model { downloadCount } } }"
    got = (await data_of(server, download, {"id": model["id"]}, user=visitor))["downloadModel"]
    assert got["model"]["downloadCount"] == 1
    async with httpx.AsyncClient() as client:
        response = await client.get(got["url"])
        assert response.status_code == 200
        assert response.content[:4] == b"glTF"
        assert "attachment" in response.headers["content-disposition"]

        delete = "mutation X($id: ID!) { deleteModel(id: $id) }"
        await data_of(server, delete, {"id": model["id"]}, user=owner)
        assert (await client.get(got["url"])).status_code == 404
        assert (await client.get(model["fileUrl"])).status_code == 404
    assert (await data_of(server, MINE, user=owner))["myModels"]["edges"] == []


async def test_deleting_a_models_request_removes_its_images_and_keeps_the_model(
    server: Server,
) -> None:
    owner = f"d-{uuid.uuid4().hex[:6]}"
    created = await create_request(server, owner, imageCount=1, autoModel=True)
    async with ws_session(server, owner) as session:
        await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})
    images = "query R($id: ID!) { request(id: $id) { images { url } } }"
    [image] = (await data_of(server, images, {"id": created["id"]}, user=owner))["request"][
        "images"
    ]
    delete = "mutation D($id: ID!) { deleteRequest(id: $id) }"
    async with httpx.AsyncClient() as client:
        assert (await client.get(image["url"])).status_code == 200
        await data_of(server, delete, {"id": created["id"]}, user=owner)
        assert (await client.get(image["url"])).status_code == 404
        [edge] = (await data_of(server, MINE, user=owner))["myModels"]["edges"]
        model = edge["node"]
        assert (model["sourceRequest"], model["sourceImage"]) == (None, None)
        assert (await client.get(model["fileUrl"])).status_code == 200
        assert (await client.get(model["previewUrl"])).status_code == 200
    gone = await graphql(server, images, {"id": created["id"]}, user=owner)
    assert error_code(gone) == "NOT_FOUND"
    again = await graphql(server, delete, {"id": created["id"]}, user=owner)
    assert error_code(again) == "NOT_FOUND"
