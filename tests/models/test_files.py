"""A model's stored files, on local storage and on S3: a deleted model's links stop
working, and a public model's links name nothing private."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select
from starlette.applications import Starlette

from app.config import Settings
from app.deps import Deps
from app.routes import routes
from app.tables import GeneratedImage, GenerationJob, Model
from providers.s3 import S3Storage
from tests.conftest import make_settings
from tests.graphql.client import data
from tests.workers.test_pipeline import a_viewer, deliver, submit

PUBLISH = "mutation P($id: ID!) { publishModel(id: $id) { id } }"
DELETE = "mutation D($id: ID!) { deleteModel(id: $id) }"
URLS = """query M($id: ID!) { model(id: $id) { fileUrl previewUrl files { name url } } }"""
GALLERY = """{ publicModels(first: 10) { edges { node {
  id fileUrl previewUrl files { name url } owner { id } sourceRequest { id } sourceImage { id }
} } } }"""


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    """Both storages: local files signed by the gateway, and S3 presigned by moto_server."""
    s3: dict[str, str] = request.getfixturevalue("moto_s3") if request.param == "s3" else {}
    overrides = {name.removeprefix("LUMI_").lower(): value for name, value in s3.items()}
    return make_settings(tmp_path, database_url=database_url, **overrides)


async def obj_model(deps: Deps, owner: str = "alice") -> Model:
    """A request run to the end by the offline providers: an OBJ, its material and
    texture, and a preview, all in the test's storage."""
    if isinstance(deps.storage, S3Storage):
        await deps.storage.ensure_bucket()
    viewer = await a_viewer(deps, owner)
    request_id = await submit(deps, viewer, image_count=2, auto_model=True, model_format="obj")
    await deliver(deps)
    async with deps.db.read() as session:
        query = select(Model).where(col(Model.request_id) == request_id)
        return (await session.execute(query)).scalar_one()


@asynccontextmanager
async def fetcher(deps: Deps) -> AsyncIterator[httpx.AsyncClient]:
    """A client that reaches local-storage links through the gateway's own file route,
    in-process, and S3 links over the network."""
    gateway = Starlette(routes=routes)
    gateway.state.deps = deps
    mounts = {"http://testserver": httpx.ASGITransport(app=gateway)}
    async with httpx.AsyncClient(mounts=mounts) as client:
        yield client


def links(found: dict[str, Any]) -> list[str]:
    return [found["fileUrl"], found["previewUrl"], *(f["url"] for f in found["files"])]


async def test_deleting_an_obj_model_stops_every_link_to_its_files(deps: Deps) -> None:
    model = await obj_model(deps)
    found = (await data(deps, URLS, {"id": model.id}, user="alice"))["model"]
    assert sorted(f["name"] for f in found["files"]) == ["material.mtl", "model.obj", "texture.png"]
    async with fetcher(deps) as client:
        before = [(await client.get(url)).status_code for url in links(found)]
        assert before == [200] * 5
        await data(deps, DELETE, {"id": model.id}, user="alice")
        after = [(await client.get(url)).status_code for url in links(found)]
    assert all(status in (403, 404) for status in after), after
    keys = [model.file_key, str(model.preview_key), *(f["key"] for f in model.files or [])]
    assert [key for key in keys if await deps.storage.exists(key)] == []


async def private_ids(deps: Deps, model: Model) -> set[str]:
    """What a gallery visitor must not learn: the request, its images, its jobs and the
    vendor's job."""
    request_id = model.request_id
    async with deps.db.read() as session:
        images = select(GeneratedImage.id).where(col(GeneratedImage.request_id) == request_id)
        jobs = select(GenerationJob).where(col(GenerationJob.request_id) == request_id)
        image_ids = set((await session.execute(images)).scalars())
        job_rows = list((await session.execute(jobs)).scalars())
    vendor_jobs = {job.vendor_job_id for job in job_rows if job.vendor_job_id}
    assert model.source_image_id in image_ids
    assert vendor_jobs
    return {str(request_id), *image_ids, *(job.id for job in job_rows), *vendor_jobs}


async def test_a_public_models_links_name_not_its_request_images_or_jobs(deps: Deps) -> None:
    model = await obj_model(deps)
    await data(deps, PUBLISH, {"id": model.id}, user="alice")
    gallery = await data(deps, GALLERY)
    [edge] = gallery["publicModels"]["edges"]
    assert len(links(edge["node"])) == 5
    secrets = await private_ids(deps, model)
    shown = str(gallery)
    assert sorted(secret for secret in secrets if secret in shown) == [], shown
    async with deps.db.read() as session:
        query = select(GeneratedImage.storage_key).where(
            col(GeneratedImage.request_id) == model.request_id
        )
        image_keys = [key for key in (await session.execute(query)).scalars() if key]
    keys = " ".join([*image_keys, model.file_key, str(model.preview_key)])
    assert sorted(secret for secret in secrets if secret in keys) == [], keys
