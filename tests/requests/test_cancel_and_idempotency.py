"""cancelRequest and idempotent createRequest, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from app.deps import Deps
from app.requests import service
from app.requests.errors import IdempotencyKeyReused, RequestNotCancellable, RequestNotFound
from app.requests.stages import Status
from app.tables import CreditEntry, GenerationJob, GenerationRequest
from app.users import repository as users
from tests.conftest import RecordingQueue
from tests.workers.test_pipeline import a_viewer, deliver, events, request_row, submit

NEW = service.NewRequest(prompt="a chess knight", image_count=2, idempotency_key="order-42")


async def create(deps: Deps, viewer: object, new: service.NewRequest = NEW) -> str:
    async with deps.unit() as unit:
        return (await service.create_request(unit, viewer, new)).id  # type: ignore[arg-type]


async def test_the_same_key_and_input_return_the_first_request(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    first = await create(deps, viewer)
    assert await create(deps, viewer) == first
    assert len(deps.queue.sent) == 1  # type: ignore[attr-defined]  # one pipeline started
    other = await a_viewer(deps, "someone-else")
    assert await create(deps, other) != first  # keys are per user


async def test_the_same_key_with_other_input_is_a_conflict(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    await create(deps, viewer)
    with pytest.raises(IdempotencyKeyReused):
        await create(deps, viewer, dataclasses.replace(NEW, image_count=3))


async def test_fifty_concurrent_creations_with_one_key_make_one_request_and_one_debit(
    deps: Deps,
) -> None:
    viewer = await a_viewer(deps)
    ids = await asyncio.gather(*(create(deps, viewer) for _ in range(50)))
    assert len(set(ids)) == 1
    async with deps.db.read() as session:
        total = (
            await session.execute(select(func.count()).select_from(GenerationRequest))
        ).scalar()
        debits = list(
            (
                await session.execute(
                    select(CreditEntry.amount).where(col(CreditEntry.kind) == "DEBIT")
                )
            ).scalars()
        )
        user = await users.get(session, viewer.id)
    assert total == 1
    assert debits == [-2]  # two images at the default price of 1
    assert user is not None
    assert user.credits == deps.settings.initial_credits - 2


async def test_cancel_stops_a_running_request_and_its_stages_do_nothing_more(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=2, auto_model=True)
    queue = deps.queue
    assert isinstance(queue, RecordingQueue)
    await deliver_one(deps)  # prompt optimized: two image jobs are queued
    async with deps.unit() as unit:
        cancelled = await service.cancel_request(unit, viewer, request_id)
    assert cancelled.status == Status.CANCELLED
    before = len(await events(deps, request_id))
    await deliver(deps)  # the queued image messages arrive after the cancel
    history = await events(deps, request_id)
    assert len(history) == before
    assert history[-1].status == Status.CANCELLED
    async with deps.db.read() as session:
        statuses = set(
            (
                await session.execute(
                    select(GenerationJob.status).where(col(GenerationJob.request_id) == request_id)
                )
            ).scalars()
        )
    assert statuses <= {"COMPLETED", "CANCELLED"}
    assert (await request_row(deps, request_id)).status == Status.CANCELLED


async def deliver_one(deps: Deps) -> None:
    from workers.actors import STAGES

    queue = deps.queue
    assert isinstance(queue, RecordingQueue)
    message = queue.sent.pop(0)
    await STAGES[message.stage](deps, *message.args)


async def test_a_finished_request_cannot_be_cancelled_nor_anothers(deps: Deps) -> None:
    viewer, stranger = await a_viewer(deps), await a_viewer(deps, "stranger")
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    await deliver(deps)
    async with deps.unit() as unit:
        with pytest.raises(RequestNotCancellable):
            await service.cancel_request(unit, viewer, request_id)
    async with deps.unit() as unit:
        with pytest.raises(RequestNotFound):
            await service.cancel_request(unit, stranger, request_id)
    assert (await request_row(deps, request_id)).status == Status.COMPLETED
