"""A request's images exist from the moment it is created, PENDING, so a client draws
them before the first event; the pipeline fills those very rows, once each."""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import col, select

from app.deps import Deps
from app.graphql.relay import row_id
from app.requests import service
from app.requests.stages import Status
from app.tables import GeneratedImage, GenerationJob
from tests.graphql.client import data
from tests.requests.test_cancel_and_idempotency import deliver_one
from tests.workers.test_pipeline import a_viewer, deliver, events, request_row, submit
from tests.workers.test_reliability import PERMANENT, fail_attempt, job_rows, recorded

CREATE = """mutation C($input: CreateRequestInput!) {
  createRequest(input: $input) { id status images { id index status prompt url } } }"""
IMAGES = "query R($id: ID!) { request(id: $id) { images { id index status prompt } } }"


async def image_rows(deps: Deps, request_id: str) -> list[GeneratedImage]:
    async with deps.db.read() as session:
        query = (
            select(GeneratedImage)
            .where(col(GeneratedImage.request_id) == request_id)
            .order_by(col(GeneratedImage.index))
        )
        return list((await session.execute(query)).scalars())


async def test_create_request_answers_with_its_image_slots_pending(deps: Deps) -> None:
    await a_viewer(deps)
    input = {"prompt": "a glass hare", "imageCount": 3}
    created = (await data(deps, CREATE, {"input": input}, user="alice"))["createRequest"]
    assert created["status"] == "IMAGE_PENDING"
    assert [(i["index"], i["status"], i["prompt"], i["url"]) for i in created["images"]] == [
        (0, "PENDING", "a glass hare", None),
        (1, "PENDING", "a glass hare", None),
        (2, "PENDING", "a glass hare", None),
    ]
    assert len({image["id"] for image in created["images"]}) == 3


async def test_the_stages_fill_the_slots_made_with_the_request(deps: Deps) -> None:
    await a_viewer(deps)
    input = {"prompt": "a glass hare", "imageCount": 2, "autoModel": True}
    created = (await data(deps, CREATE, {"input": input}, user="alice"))["createRequest"]
    slots = [image["id"] for image in created["images"]]
    request_id = row_id(created["id"])
    received = await events(deps, request_id)
    assert [e.status for e in received] == [Status.IMAGE_PENDING]  # one event, as before
    await deliver(deps, copies=2)  # every message twice: still one image job per slot
    done = await data(deps, IMAGES, {"id": created["id"]}, user="alice")
    images = done["request"]["images"]
    assert [image["id"] for image in images] == slots
    assert {image["status"] for image in images} == {"COMPLETED"}
    rows = await image_rows(deps, request_id)
    request = await request_row(deps, request_id)
    assert request.status == Status.COMPLETED
    assert [row.prompt for row in rows] == request.optimized_prompts  # each its variant
    image_jobs = await job_rows(deps, request.id, "IMAGE")
    assert sorted(job.image_id or "" for job in image_jobs) == sorted(row.id for row in rows)
    seqs = [e.seq for e in await events(deps, request.id)]
    assert seqs == list(range(1, request.seq + 1))


async def test_a_retry_after_the_prompt_stage_failed_uses_the_same_slots(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=2)
    slots = [row.id for row in await image_rows(deps, request_id)]
    [prompt_job] = await job_rows(deps, request_id, "PROMPT")
    recorded(deps).take()
    await fail_attempt(deps, prompt_job.id, PERMANENT)
    assert (await request_row(deps, request_id)).status == Status.FAILED
    assert [row.status for row in await image_rows(deps, request_id)] == ["PENDING", "PENDING"]
    async with deps.unit() as unit:
        await service.retry_request(unit, viewer, request_id)
    await deliver(deps)
    rows = await image_rows(deps, request_id)
    assert [row.id for row in rows] == slots
    assert [row.status for row in rows] == ["COMPLETED", "COMPLETED"]
    assert len(await job_rows(deps, request_id, "IMAGE")) == 2


async def test_a_request_created_before_slots_gets_its_images_from_the_prompt_stage(
    deps: Deps,
) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=2)
    async with deps.db.write() as session:  # as a request created by an older release
        await session.execute(
            delete(GeneratedImage).where(col(GeneratedImage.request_id) == request_id)
        )
    await deliver_one(deps)  # the prompt stage
    rows = await image_rows(deps, request_id)
    assert [(row.index, row.status) for row in rows] == [(0, "PENDING"), (1, "PENDING")]
    assert (await request_row(deps, request_id)).optimized_prompts == [r.prompt for r in rows]
    await deliver(deps)
    assert {row.status for row in await image_rows(deps, request_id)} == {"COMPLETED"}
    async with deps.db.read() as session:
        image_jobs = await session.execute(
            select(GenerationJob).where(
                col(GenerationJob.request_id) == request_id, col(GenerationJob.kind) == "IMAGE"
            )
        )
        assert len(list(image_jobs.scalars())) == 2
