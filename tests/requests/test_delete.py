"""deleteRequest removes a request for good, on SQLite and MariaDB, local storage and S3:
its rows and image files go, its model stays in the library, the ledger stays whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from app.bus import user_channel
from app.config import Settings
from app.deps import Deps
from app.graphql.relay import global_id
from app.requests.service import Stage
from app.requests.stages import Status
from app.tables import (
    CreditEntry,
    DeadLetter,
    GeneratedImage,
    GenerationJob,
    GenerationRequest,
    Model,
    RequestEvent,
)
from providers.base import JobState
from providers.s3 import S3Storage
from tests.conftest import RecordingQueue, make_settings
from tests.graphql.client import code, data, execute
from tests.models.test_files import fetcher
from tests.workers.test_pipeline import STAGES, a_viewer, deliver, submit

DELETE = "mutation D($id: ID!) { deleteRequest(id: $id) }"
REQUEST = "query R($id: ID!) { request(id: $id) { id images { url } } }"
REQUESTS = "{ requests(first: 50) { edges { node { id } } } }"
MODEL = """query M($id: ID!) { model(id: $id) {
  id fileUrl previewUrl sourceRequest { id } sourceImage { id url }
} }"""
LEDGER = """{ me { credits ledger(first: 100) { edges { node {
  kind amount balanceAfter requestId
} } } } }"""


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    s3: dict[str, str] = request.getfixturevalue("moto_s3") if request.param == "s3" else {}
    overrides = {name.removeprefix("LUMI_").lower(): value for name, value in s3.items()}
    # one 3D job at a time at the offline vendor: a slot left taken would show
    return make_settings(
        tmp_path, database_url=database_url, provider_concurrency="local=1", **overrides
    )


async def finished_request(deps: Deps, owner: str = "alice") -> tuple[str, str]:
    """A request run to its end with a model: its id and its model's id."""
    if isinstance(deps.storage, S3Storage):
        await deps.storage.ensure_bucket()
    viewer = await a_viewer(deps, owner)
    request_id = await submit(deps, viewer, image_count=2, auto_model=True)
    await deliver(deps)
    async with deps.db.read() as session:
        query = select(Model.id).where(col(Model.request_id) == request_id)
        return request_id, (await session.execute(query)).scalar_one()


async def rows_of(deps: Deps, request_id: str) -> dict[str, int]:
    """How many rows of each kind still belong to the request."""
    found = {}
    async with deps.db.read() as session:
        for table in (GeneratedImage, GenerationJob, RequestEvent, DeadLetter):
            query = select(func.count()).where(col(table.request_id) == request_id)
            found[table.__tablename__] = (await session.execute(query)).scalar_one()
        found["generation_requests"] = int(
            await session.get(GenerationRequest, request_id) is not None
        )
    return {name: count for name, count in found.items() if count}


def balances(me: dict[str, Any]) -> bool:
    """Whether the ledger adds up to the balance, entry after entry (newest first)."""
    entries = [edge["node"] for edge in me["ledger"]["edges"]]
    running = 0
    for entry in reversed(entries):
        running += entry["amount"]
        if entry["balanceAfter"] != running:
            return False
    return running == me["credits"]


async def test_a_deleted_requests_images_stop_answering_and_it_is_not_found(deps: Deps) -> None:
    request_id, _ = await finished_request(deps)
    urls = [
        i["url"]
        for i in (await data(deps, REQUEST, {"id": request_id}, user="alice"))["request"]["images"]
    ]
    async with fetcher(deps) as client:
        assert [(await client.get(url)).status_code for url in urls] == [200, 200]
        deleted = await data(deps, DELETE, {"id": request_id}, user="alice")
        assert deleted == {"deleteRequest": global_id("GenerationRequest", request_id)}
        after = [(await client.get(url)).status_code for url in urls]
    assert all(status in (403, 404) for status in after), after
    gone = await execute(deps, REQUEST, {"id": request_id}, user="alice")
    assert code(gone) == "NOT_FOUND"
    listed = await data(deps, REQUESTS, user="alice")
    assert request_id not in str(listed)
    assert await rows_of(deps, request_id) == {}


async def test_the_model_of_a_deleted_request_stays_with_its_owner_without_a_source(
    deps: Deps,
) -> None:
    request_id, model_id = await finished_request(deps)
    await data(deps, DELETE, {"id": request_id}, user="alice")
    model = (await data(deps, MODEL, {"id": model_id}, user="alice"))["model"]
    assert model["sourceRequest"] is None
    assert model["sourceImage"] is None
    async with fetcher(deps) as client:
        files = [(await client.get(model[url])).status_code for url in ("fileUrl", "previewUrl")]
    assert files == [200, 200]


async def test_the_ledger_keeps_a_deleted_requests_entries_and_still_balances(
    deps: Deps,
) -> None:
    request_id, _ = await finished_request(deps)
    before = (await data(deps, LEDGER, user="alice"))["me"]
    await data(deps, DELETE, {"id": request_id}, user="alice")
    after = (await data(deps, LEDGER, user="alice"))["me"]
    assert after == before
    assert balances(after)
    named = {edge["node"]["requestId"] for edge in after["ledger"]["edges"]}
    assert global_id("GenerationRequest", request_id) in named


async def test_deleting_a_request_twice_is_not_found(deps: Deps) -> None:
    request_id, _ = await finished_request(deps)
    await data(deps, DELETE, {"id": request_id}, user="alice")
    again = await execute(deps, DELETE, {"id": request_id}, user="alice")
    assert code(again) == "NOT_FOUND"


async def test_another_user_cannot_delete_a_request(deps: Deps) -> None:
    request_id, _ = await finished_request(deps)
    await a_viewer(deps, "mallory")
    refused = await execute(deps, DELETE, {"id": request_id}, user="mallory")
    assert code(refused) == "NOT_FOUND"
    assert (await data(deps, REQUEST, {"id": request_id}, user="alice"))["request"]["id"]


async def test_deleting_a_running_request_cancels_it_refunds_once_and_its_stages_stop(
    deps: Deps,
) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=2, auto_model=True)
    queue = deps.queue
    assert isinstance(queue, RecordingQueue)
    pending = queue.take()  # the prompt stage's message, on its way
    async with deps.bus.subscribe([user_channel(viewer.id)]) as updates:
        await data(deps, DELETE, {"id": request_id}, user="alice")
        announced = await updates.get(5)
    assert announced is not None
    assert (announced["request_id"], announced["status"]) == (request_id, Status.CANCELLED)
    queue.sent.extend(pending)
    await deliver(deps)  # finds nothing to do: no row, no file, no charge
    assert await rows_of(deps, request_id) == {}
    me = (await data(deps, LEDGER, user="alice"))["me"]
    assert me["credits"] == deps.settings.initial_credits
    named = global_id("GenerationRequest", request_id)
    mine = [e["node"] for e in me["ledger"]["edges"] if e["node"]["requestId"] == named]
    # paid for its images and its model, each given back once
    assert sorted(entry["kind"] for entry in mine) == ["DEBIT", "DEBIT", "REFUND", "REFUND"]
    assert sum(entry["amount"] for entry in mine) == 0
    assert balances(me)


async def until_the_vendor_has_the_3d_job(deps: Deps) -> list[Any]:
    """Runs a request's stages until its 3D job runs at the vendor; the poll messages
    still to come."""
    queue = deps.queue
    assert isinstance(queue, RecordingQueue)
    polls: list[Any] = []
    while queue.sent:
        for message in queue.take():
            if message.stage == Stage.POLL_MODEL:
                polls.append(message)
            else:
                await STAGES[message.stage](deps, *message.args)
    return polls


async def test_deleting_a_request_stops_its_3d_job_at_the_vendor_and_frees_its_slot(
    deps: Deps,
) -> None:
    if isinstance(deps.storage, S3Storage):
        await deps.storage.ensure_bucket()
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    polls = await until_the_vendor_has_the_3d_job(deps)
    async with deps.db.read() as session:
        query = select(GenerationJob).where(col(GenerationJob.kind) == "MODEL")
        job = (await session.execute(query)).scalar_one()
    assert job.vendor_job_id is not None
    assert await deps.providers.limiter.in_use("local") == 1
    await data(deps, DELETE, {"id": request_id}, user="alice")
    deps.queue.sent.extend(polls)  # type: ignore[attr-defined]
    await deliver(deps)
    vendor = deps.providers.model.named("local")
    assert (await vendor.poll(job.vendor_job_id)).state is JobState.FAILED  # cancelled
    assert await deps.providers.limiter.in_use("local") == 0
    assert await rows_of(deps, request_id) == {}
    async with deps.db.read() as session:
        assert (await session.execute(select(func.count()).select_from(Model))).scalar() == 0
        total = (await session.execute(select(func.sum(CreditEntry.amount)))).scalar()
    # the image was delivered, the model was not: only the image stays paid for
    settings = deps.settings
    assert total == settings.initial_credits - settings.image_credit_cost
