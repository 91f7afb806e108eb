"""Downloads in STL, PLY and USDZ over real HTTP: converted once from the stored mesh, stored
beside the model's files, listed in `files`, and real meshes a mesh library opens."""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy
import pytest
import trimesh
from pxr import Usd, UsdGeom

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

MINE = "{ myModels(first: 1) { edges { node { id format fileUrl } } } }"
FILES = """query F($id: ID!) { model(id: $id) {
  downloadCount files { name contentType size converted url }
} }"""
DOWNLOAD = """mutation D($id: ID!, $format: DownloadFormat) {
  downloadModel(id: $id, format: $format) { url format contentType model { downloadCount } }
}"""


async def finished_model(server: Server, owner: str, **options: Any) -> dict[str, Any]:
    created = await create_request(server, owner, imageCount=1, autoModel=True, **options)
    async with ws_session(server, owner) as session:
        await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})
    [edge] = (await data_of(server, MINE, user=owner))["myModels"]["edges"]
    return dict(edge["node"])


async def fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response


async def mesh_at(url: str, file_type: str) -> trimesh.Trimesh:
    """The mesh a client gets from `url`, opened as a mesh library opens a file."""
    content = (await fetch(url)).content
    mesh = trimesh.load(io.BytesIO(content), file_type=file_type, force="mesh")
    assert isinstance(mesh, trimesh.Trimesh)
    return mesh


def assert_same_mesh(converted: trimesh.Trimesh, original: trimesh.Trimesh) -> None:
    assert len(converted.faces) == len(original.faces) > 100
    assert numpy.allclose(converted.bounds, original.bounds, atol=1e-4)


def assert_same_usd_mesh(usdz: bytes, original: trimesh.Trimesh, folder: Path) -> None:
    """The USDZ opens in Pixar's USD library with the original's mesh and texture."""
    path = folder / "model.usdz"
    path.write_bytes(usdz)
    stage = Usd.Stage.Open(str(path))
    [mesh] = [UsdGeom.Mesh(p) for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)]
    assert len(mesh.GetFaceVertexCountsAttr().Get()) == len(original.faces)
    assert numpy.allclose(mesh.GetExtentAttr().Get(), original.bounds, atol=1e-4)
    with zipfile.ZipFile(path) as package:
        assert [n.rsplit(".", 1)[-1] for n in package.namelist()] == ["usdc", "png"]


def stored_path(server: Server, url: str) -> Path:
    """Where the server's local storage keeps the file of a signed `/files/<key>` URL."""
    key = urlsplit(url).path.removeprefix("/files/")
    return server.log.parent / "files" / key


async def test_a_glb_model_downloads_as_stl_ply_and_usdz_converted_once(
    server: Server, tmp_path: Path
) -> None:
    owner, other = f"f-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    model = await finished_model(server, owner)
    assert model["format"] == "GLB"
    original = await mesh_at(model["fileUrl"], "glb")
    ids = {"id": model["id"]}

    first = (await data_of(server, DOWNLOAD, {**ids, "format": "STL"}, user=owner))["downloadModel"]
    assert (first["format"], first["contentType"]) == ("STL", "model/stl")
    response = await fetch(first["url"])
    assert response.headers["content-type"] == "model/stl"
    assert ".stl" in response.headers["content-disposition"]
    assert_same_mesh(await mesh_at(first["url"], "stl"), original)

    # the second download hands out the stored file: same key, not written again
    written = stored_path(server, first["url"]).stat().st_mtime_ns
    again = (await data_of(server, DOWNLOAD, {**ids, "format": "STL"}, user=owner))["downloadModel"]
    assert urlsplit(again["url"]).path == urlsplit(first["url"]).path
    assert stored_path(server, again["url"]).stat().st_mtime_ns == written

    ply = (await data_of(server, DOWNLOAD, {**ids, "format": "PLY"}, user=owner))["downloadModel"]
    assert ply["format"] == "PLY"
    assert_same_mesh(await mesh_at(ply["url"], "ply"), original)
    usdz = await data_of(server, DOWNLOAD, {**ids, "format": "USDZ"}, user=owner)
    usdz = usdz["downloadModel"]
    assert (usdz["format"], usdz["contentType"]) == ("USDZ", "model/vnd.usdz+zip")
    assert_same_usd_mesh((await fetch(usdz["url"])).content, original, tmp_path)
    as_stored = (await data_of(server, DOWNLOAD, ids, user=owner))["downloadModel"]
    assert as_stored["format"] == "GLB"
    assert as_stored["model"]["downloadCount"] == 5

    listed = (await data_of(server, FILES, ids, user=owner))["model"]["files"]
    names = [(f["name"], f["contentType"], f["converted"]) for f in listed]
    assert names == [
        ("model.glb", "model/gltf-binary", False),
        ("model.stl", "model/stl", True),
        ("model.ply", "application/octet-stream", True),
        ("model.usdz", "model/vnd.usdz+zip", True),
    ]
    assert_same_mesh(await mesh_at(listed[1]["url"], "stl"), original)
    assert listed[1]["size"] == len((await fetch(listed[1]["url"])).content)

    wrong = await graphql(server, DOWNLOAD, {**ids, "format": "OBJ"}, user=owner)
    assert error_code(wrong) == "BAD_USER_INPUT"
    hidden = await graphql(server, DOWNLOAD, {**ids, "format": "STL"}, user=other)
    assert error_code(hidden) == "NOT_FOUND"

    # deleting the model deletes its converted files
    await data_of(server, "mutation X($id: ID!) { deleteModel(id: $id) }", ids, user=owner)
    async with httpx.AsyncClient() as client:
        assert (await client.get(first["url"])).status_code == 404
        assert (await client.get(ply["url"])).status_code == 404
    assert not stored_path(server, first["url"]).exists()


async def test_an_obj_model_converts_too_once_for_concurrent_first_downloads(
    server: Server,
) -> None:
    owner = f"o-{uuid.uuid4().hex[:6]}"
    model = await finished_model(server, owner, modelFormat="OBJ")
    assert model["format"] == "OBJ"
    original = await mesh_at(model["fileUrl"], "obj")
    ids = {"id": model["id"]}
    publish = "mutation P($id: ID!) { publishModel(id: $id) { id } }"
    await data_of(server, publish, ids, user=owner)

    before = (await data_of(server, FILES, ids, user=owner))["model"]["files"]
    assert not [f for f in before if f["converted"]]  # and this answer is cached now

    # several first downloads at once, by different users: one file, recorded once
    users = [owner, *(f"v-{uuid.uuid4().hex[:6]}" for _ in range(3))]
    results = await asyncio.gather(
        *(data_of(server, DOWNLOAD, {**ids, "format": "STL"}, user=who) for who in users)
    )
    paths = {urlsplit(r["downloadModel"]["url"]).path for r in results}
    assert len(paths) == 1
    assert_same_mesh(await mesh_at(results[0]["downloadModel"]["url"], "stl"), original)

    listed = (await data_of(server, FILES, ids, user=users[1]))["model"]
    assert listed["downloadCount"] == 4
    names = [f["name"] for f in listed["files"]]
    assert names[0] == "model.obj"
    assert names.count("model.stl") == 1
    assert [f["converted"] for f in listed["files"]] == [False] * (len(names) - 1) + [True]
    wrong = await graphql(server, DOWNLOAD, {**ids, "format": "GLB"}, user=owner)
    assert error_code(wrong) == "BAD_USER_INPUT"
