"""Queue positions and estimates (issue 22), on SQLite and MariaDB: the database's line,
the figures a request shows, the one pass the ticker makes, and the workers' turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from app.auth import Viewer
from app.deps import Deps
from app.requests import queue_position, repository, service
from app.requests.queue_position import QueueEstimate
from app.requests.queue_watch import QueueWatch
from app.tables import GenerationJob, utcnow
from tests.workers.test_pipeline import a_viewer

POLICY = service.Policy(high_priority_roles=frozenset({"user"}))


async def submit(deps: Deps, viewer: Viewer, priority: str) -> str:
    new = service.NewRequest(
        prompt="a tin lighthouse", image_count=1, optimize_prompt=False, priority=priority
    )
    async with deps.unit() as unit:
        return (await service.create_request(unit, viewer, new, POLICY)).id


async def line_of(deps: Deps, priorities: list[str]) -> list[str]:
    viewer = await a_viewer(deps)
    return [await submit(deps, viewer, priority) for priority in priorities]


async def positions(deps: Deps, ids: list[str], now: datetime | None = None) -> list[int | None]:
    async with deps.db.read() as session:
        found = await queue_position.estimates_of(session, ids, now)
    return [found[i].position if i in found else None for i in ids]


async def job_of(deps: Deps, request_id: str) -> GenerationJob:
    async with deps.db.read() as session:
        jobs = await repository.jobs_of(session, [request_id])
    return jobs[-1]


async def start(deps: Deps, request_id: str) -> int:
    """Claims the request's job as a worker would; returns the attempt."""
    job = await job_of(deps, request_id)
    async with deps.db.write() as session:
        attempt = await repository.claim_job(session, job)
    assert attempt is not None
    return attempt


async def test_waiting_requests_are_numbered_high_before_default_before_low(deps: Deps) -> None:
    ids = await line_of(deps, ["low", "default", "high", "default", "high"])
    low, first_default, first_high, second_default, second_high = ids
    assert await positions(deps, ids) == [4, 2, 0, 3, 1]
    order = [first_high, second_high, first_default, second_default, low]
    async with deps.db.read() as session:
        line = await queue_position.line(session, utcnow())
    assert [request_id for request_id, _ in line] == order


async def test_a_job_that_starts_leaves_the_line_and_those_behind_move_up(deps: Deps) -> None:
    ids = await line_of(deps, ["default", "default", "low", "high"])
    assert await positions(deps, ids) == [1, 2, 3, 0]
    await start(deps, ids[3])
    assert await positions(deps, ids) == [0, 1, 2, None]
    await start(deps, ids[0])
    assert await positions(deps, ids) == [None, 0, 1, None]


async def test_a_retry_not_yet_due_is_not_counted_and_joins_the_end_when_due(
    deps: Deps,
) -> None:
    ids = await line_of(deps, ["default", "default", "default"])
    attempt = await start(deps, ids[0])
    due = utcnow() + timedelta(seconds=60)
    async with deps.db.write() as session:
        retried = await repository.retry_job(
            session,
            (await job_of(deps, ids[0])).id,
            attempt=attempt,
            at=due,
            error_code="PROVIDER_UNAVAILABLE",
            error_message="try later",
        )
    assert retried
    assert await positions(deps, ids) == [None, 0, 1]
    later = due + timedelta(seconds=1)  # the retry is due: it waits behind the others
    assert await positions(deps, ids, later) == [2, 0, 1]


async def completed(deps: Deps, kind: str, seconds: list[float], at: datetime) -> None:
    """Jobs of `kind` that ran for `seconds` each and ended just before `at`."""
    request_id = (await line_of(deps, ["default"]))[0]
    async with deps.db.write() as session:
        for took in seconds:
            session.add(
                GenerationJob(
                    request_id=request_id,
                    kind=kind,
                    status="COMPLETED",
                    provider="local",
                    started_at=at - timedelta(seconds=took),
                    finished_at=at,
                    heartbeat_at=at,
                )
            )
        await session.execute(  # that request's own job is out of the way
            update(GenerationJob)
            .where(
                col(GenerationJob.request_id) == request_id, col(GenerationJob.status) == "PENDING"
            )
            .values(status="CANCELLED")
        )


async def test_estimates_come_from_the_median_of_measured_durations(deps: Deps) -> None:
    ids = await line_of(deps, ["default", "default", "default"])
    now = utcnow()
    async with deps.db.read() as session:
        before = await queue_position.estimates_of(session, ids, now)
    assert before[ids[2]] == QueueEstimate(position=2)  # nothing measured: no times
    # Over two minutes ago, so no busy time counts: one job at a time.
    await completed(deps, "PROMPT", [1.0, 2.0, 30.0], now - timedelta(minutes=2))
    async with deps.db.read() as session:
        after = await queue_position.estimates_of(session, ids, now)
    third = after[ids[2]]
    assert third.position == 2
    assert third.start == now + timedelta(seconds=4)  # two ahead, 2 s each (the median)
    assert third.completion == now + timedelta(seconds=6)
    assert after[ids[0]].start == now


async def test_jobs_running_now_count_for_their_remaining_work_and_in_parallel(
    deps: Deps,
) -> None:
    ids = await line_of(deps, ["default", "default", "default", "default"])
    now = utcnow()
    await completed(deps, "PROMPT", [4.0], now - timedelta(minutes=2))
    await start(deps, ids[0])
    await start(deps, ids[1])
    async with deps.db.read() as session:
        found = await queue_position.estimates_of(session, ids, now)
    # Two running (about 4 s left each) and one ahead (4 s), two at a time: ~6 s.
    start_in = (found[ids[3]].start - now).total_seconds()  # type: ignore[operator]
    assert found[ids[3]].position == 1
    assert 5.0 < start_in <= 6.0


async def test_the_tickers_one_pass_gives_the_figures_of_the_lookups(deps: Deps) -> None:
    ids = await line_of(deps, ["low", "default", "high", "default"])
    now = utcnow()
    await completed(deps, "PROMPT", [3.0, 5.0], now - timedelta(minutes=5))
    async with deps.db.read() as session:
        looked_up = await queue_position.estimates_of(session, ids, now)
        line = await queue_position.line(session, now)
        measured = await queue_position.durations(session, now)
    assert queue_position.estimates_from_line(line, measured, now, set(ids)) == looked_up


@pytest.fixture
async def watch(deps: Deps) -> AsyncIterator[QueueWatch]:
    ticker = QueueWatch(deps.db, interval=0.05)
    yield ticker
    await ticker.aclose()


async def test_a_watcher_gets_the_position_then_each_change_then_the_end(
    deps: Deps, watch: QueueWatch
) -> None:
    ids = await line_of(deps, ["default", "default", "default"])
    stream = watch.follow(ids[2])
    assert (await anext(stream)).position == 2
    await start(deps, ids[0])
    assert (await asyncio.wait_for(anext(stream), 10)).position == 1
    await start(deps, ids[1])
    assert (await asyncio.wait_for(anext(stream), 10)).position == 0
    await start(deps, ids[2])
    assert (await asyncio.wait_for(anext(stream), 10)).position is None
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 10)
    assert watch.passes >= 3


async def test_the_line_is_a_range_count_over_its_index(deps: Deps) -> None:
    ids = await line_of(deps, ["default", "low", "high"])
    job = await job_of(deps, ids[1])
    spot = queue_position.Spot(job.id, job.request_id, job.kind, job.queue_rank, job.queued_at)
    async with deps.db.read() as session:
        assert await queue_position.position_of(session, spot) == 2
        ranks = list(
            (
                await session.execute(
                    select(GenerationJob.queue_rank).order_by(col(GenerationJob.queue_rank))
                )
            ).scalars()
        )
    assert ranks == [0, 1, 2]


async def test_a_watcher_gets_at_most_one_value_an_interval(deps: Deps) -> None:
    ids = await line_of(deps, ["default", "default"])
    watch = QueueWatch(deps.db, interval=0.5)
    try:
        stream = watch.follow(ids[1])
        assert (await anext(stream)).position == 1
        sent = time.monotonic()
        await start(deps, ids[0])
        await watch.tick()  # a pass right away finds the change at once ...
        assert (await asyncio.wait_for(anext(stream), 10)).position == 0
        assert time.monotonic() - sent >= 0.45  # ... sent when the interval is over
        await stream.aclose()
    finally:
        await watch.aclose()
