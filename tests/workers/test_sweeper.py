"""The sweeper and messages that claim to be queued but never come (a delayed message
stranded in Redis by an outage), on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col

from app.deps import Deps
from app.requests.stages import Status
from app.tables import GenerationJob, utcnow
from tests.workers.test_pipeline import a_viewer, deliver, request_row, submit
from tests.workers.test_reliability import (
    TRANSIENT,
    fail_attempt,
    job_by_id,
    recorded,
    to_images,
)
from workers import sweeper
from workers.sweeper import sweep


async def due_ago(deps: Deps, job_id: str, seconds: float) -> None:
    """The job's retry fell due `seconds` ago; it was scheduled a minute before that."""
    due = utcnow() - timedelta(seconds=seconds)
    async with deps.db.write() as session:
        await session.execute(
            update(GenerationJob)
            .where(col(GenerationJob.id) == job_id)
            .values(next_attempt_at=due, updated_at=due - timedelta(minutes=1))
        )


async def test_an_overdue_retry_is_sent_again_though_its_message_is_said_to_be_queued(
    deps: Deps,
) -> None:
    deps.settings.overdue_seconds = 60
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1)
    [image_job] = await to_images(deps, request_id)
    await fail_attempt(deps, image_job.id, TRANSIENT)  # its delayed retry message is queued
    assert len(recorded(deps).sent) == 1

    await due_ago(deps, image_job.id, 30)  # late, but a busy broker may still deliver it
    assert (await sweep(deps)).resent == []
    await due_ago(deps, image_job.id, 120)  # stranded: nothing will deliver it
    assert (await sweep(deps)).resent == [image_job.id]
    assert (await sweep(deps)).resent == []  # once per overdue period, not every pass
    assert [m.args[0] for m in recorded(deps).sent] == [image_job.id] * 2

    await deliver(deps)  # the stranded message turns up after all: a no-op
    assert (await request_row(deps, request_id)).status == Status.IMAGE_COMPLETED
    done = await job_by_id(deps, image_job.id)
    assert (done.status, done.attempt) == ("COMPLETED", 2)


class _Runtime:
    """What a Sweeper asks of its runtime."""

    class settings:  # noqa: N801 - stands in for a Settings instance
        sweep_interval_seconds = 0.05

    async def deps(self) -> object:
        return object()


def test_stopping_waits_for_a_sweep_under_way_instead_of_cancelling_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled mid-query, a sweep's session went back to its pool in the background,
    after the runtime had disposed of the engine: a connection left open for good (an
    unraisable ResourceWarning in some later test)."""
    inside, finished = threading.Event(), threading.Event()

    async def slow_sweep(*_: object, **__: object) -> None:
        inside.set()
        await asyncio.sleep(0.3)  # a query under way
        finished.set()

    monkeypatch.setattr(sweeper, "sweep", slow_sweep)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        running = sweeper.Sweeper(_Runtime())  # type: ignore[arg-type]
        running.start(loop)
        assert inside.wait(5)
        running.stop()
        assert finished.is_set()  # it ended on its own, and no new sweep began
        inside.clear()
        time.sleep(0.2)
        assert not inside.is_set()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
