"""The pipeline stages in-process, messages delivered by hand: once, twice, concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from app.auth import Claims, Viewer
from app.deps import Deps
from app.requests import service
from app.requests.errors import RequestNotFound
from app.requests.stages import Phase, Status
from app.tables import GeneratedImage, GenerationJob, GenerationRequest, Model, RequestEvent
from app.users.service import viewer_for
from tests.conftest import RecordingQueue
from workers.actors import STAGES
from workers.poller import poll_round, seconds_until_due


async def a_viewer(deps: Deps, name: str = "alice") -> Viewer:
    async with deps.db.write() as session:
        return await viewer_for(
            session, Claims(subject=name, name=name), initial_credits=deps.settings.initial_credits
        )


async def submit(deps: Deps, viewer: Viewer, **options: Any) -> str:
    new = service.NewRequest(prompt="a small ceramic owl", image_size=128, **options)
    async with deps.unit() as unit:
        policy = service.Policy.from_settings(deps.settings)
        request = await service.create_request(unit, viewer, new, policy)
    return request.id


async def deliver(deps: Deps, *, copies: int = 1, concurrent: bool = False) -> None:
    """Runs every queued message (and what it queues) `copies` times, and the rounds of
    `copies` 3D pollers as their polls come due, until no message nor poll is left."""
    queue = deps.queue
    assert isinstance(queue, RecordingQueue)
    while True:
        for message in queue.take():
            if message.delay_seconds:
                await asyncio.sleep(message.delay_seconds)
            await _twice(
                [STAGES[message.stage](deps, *message.args) for _ in range(copies)], concurrent
            )
        wait = await seconds_until_due(deps)
        if wait is None and not queue.sent:
            return
        if wait is not None and (wait == 0 or not queue.sent):
            await asyncio.sleep(wait)
            await _twice([poll_round(deps) for _ in range(copies)], concurrent)


async def _twice(runs: list[Awaitable[object]], concurrent: bool) -> None:
    if concurrent:
        await asyncio.gather(*runs)
    else:
        for run in runs:
            await run


async def count(deps: Deps, table: type[Any], request_id: str) -> int:
    column = col(table.request_id)
    async with deps.db.read() as session:
        result = await session.execute(select(func.count()).where(column == request_id))
        return int(result.scalar_one())


async def events(deps: Deps, request_id: str) -> list[RequestEvent]:
    async with deps.db.read() as session:
        result = await session.execute(
            select(RequestEvent)
            .where(col(RequestEvent.request_id) == request_id)
            .order_by(col(RequestEvent.seq))
        )
        return list(result.scalars())


async def request_row(deps: Deps, request_id: str) -> GenerationRequest:
    async with deps.db.read() as session:
        row = await session.get(GenerationRequest, request_id)
    assert row is not None
    return row


async def test_auto_model_runs_from_prompt_to_a_stored_model(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=3, auto_model=True)
    await deliver(deps)

    request = await request_row(deps, request_id)
    assert request.status == Status.COMPLETED
    assert request.phase == Phase.COMPLETED
    assert request.progress == 100
    assert len(request.optimized_prompts or []) == 3
    assert await count(deps, GeneratedImage, request_id) == 3
    assert await count(deps, Model, request_id) == 1
    history = await events(deps, request_id)
    assert [e.seq for e in history] == list(range(1, request.seq + 1))
    assert history[0].status == Status.IMAGE_PENDING
    assert history[-1].status == Status.COMPLETED
    progress = [e.progress for e in history]
    assert progress == sorted(progress)
    statuses = [e.status for e in history]
    for status in (Status.IMAGE_COMPLETED, Status.MODEL_PENDING, Status.MODEL_GENERATING):
        assert status in statuses
    async with deps.db.read() as session:
        model = (await session.execute(select(Model))).scalar_one()
    assert await deps.storage.exists(model.file_key)
    assert model.file_size > 0


@pytest.mark.parametrize("concurrent", [False, True], ids=["one-after-another", "concurrently"])
async def test_every_message_delivered_twice_changes_nothing(deps: Deps, concurrent: bool) -> None:
    viewer = await a_viewer(deps)
    once = await submit(deps, viewer, image_count=2, auto_model=True)
    await deliver(deps)
    twice = await submit(deps, viewer, image_count=2, auto_model=True)
    await deliver(deps, copies=2, concurrent=concurrent)

    assert (await request_row(deps, twice)).status == Status.COMPLETED
    for table in (GeneratedImage, GenerationJob, Model):
        assert await count(deps, table, twice) == await count(deps, table, once)
    single, double = await events(deps, once), await events(deps, twice)
    # How many vendor progress polls happen depends on timing; every other event is fixed.
    assert milestones(double) == milestones(single)
    assert [e.seq for e in double] == list(range(1, len(double) + 1))


def milestones(history: list[RequestEvent]) -> list[tuple[str, str, str | None]]:
    return [
        (e.status, e.step, e.message)
        for e in history
        # vendor progress polls: how many depends on timing
        if not (e.status == Status.MODEL_GENERATING and e.progress > service.PROGRESS_MODEL_START)
    ]


async def test_without_auto_model_the_request_waits_for_a_selection(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=2)
    await deliver(deps)
    request = await request_row(deps, request_id)
    assert request.status == Status.IMAGE_COMPLETED
    assert request.phase == Phase.AWAITING_SELECTION
    assert await count(deps, Model, request_id) == 0

    async with deps.db.read() as session:
        images = list(
            (
                await session.execute(
                    select(GeneratedImage).where(col(GeneratedImage.request_id) == request_id)
                )
            ).scalars()
        )
    chosen = max(images, key=lambda i: i.index)
    async with deps.unit() as unit:
        await service.select_image(unit, viewer, request_id, chosen.id)
    await deliver(deps)
    request = await request_row(deps, request_id)
    assert request.status == Status.COMPLETED
    assert request.selected_image_id == chosen.id


async def test_another_users_request_is_not_found(deps: Deps) -> None:
    owner, stranger = await a_viewer(deps, "owner"), await a_viewer(deps, "stranger")
    request_id = await submit(deps, owner, image_count=1)
    async with deps.unit() as unit:
        with pytest.raises(RequestNotFound):
            await service.delete_request(unit, stranger, request_id)


async def test_deleting_a_running_request_cancels_it_and_its_jobs_stop(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=2, auto_model=True)
    queue = deps.queue
    assert isinstance(queue, RecordingQueue)
    pending = queue.take()
    async with deps.unit() as unit:
        await service.delete_request(unit, viewer, request_id)
    queue.sent.extend(pending)  # the optimize message was already on its way
    await deliver(deps)
    async with deps.db.read() as session:
        assert await session.get(GenerationRequest, request_id) is None
    assert await count(deps, GeneratedImage, request_id) == 0
    assert await count(deps, GenerationJob, request_id) == 0
    assert await events(deps, request_id) == []
