"""Retries, final failures, retryRequest and stall recovery, on SQLite and MariaDB.

Stage messages are delivered by hand (RecordingQueue), so a test can lose one, hold
one back, or stop a worker half-way exactly where it wants.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlmodel import col, select

from app.deps import Deps
from app.requests import jobs, repository, service
from app.requests.service import Stage
from app.requests.stages import Status
from app.tables import CreditEntry, DeadLetter, GeneratedImage, GenerationJob, utcnow
from tests.conftest import RecordingQueue
from tests.requests.test_cancel_and_idempotency import deliver_one
from tests.workers.test_pipeline import a_viewer, deliver, events, request_row, submit
from workers.claims import claim, lock_job
from workers.sweeper import sweep

TRANSIENT = jobs.Failure("PROVIDER_UNAVAILABLE", "vendor answered 503", transient=True)
PERMANENT = jobs.Failure("PROVIDER_REJECTED", "prompt rejected by policy", transient=False)


def recorded(deps: Deps) -> RecordingQueue:
    assert isinstance(deps.queue, RecordingQueue)
    return deps.queue


async def job_rows(deps: Deps, request_id: str, kind: str | None = None) -> list[GenerationJob]:
    async with deps.db.read() as session:
        query = select(GenerationJob).where(col(GenerationJob.request_id) == request_id)
        if kind:
            query = query.where(col(GenerationJob.kind) == kind)
        rows = await session.execute(query.order_by(col(GenerationJob.created_at)))
    return list(rows.scalars())


async def fail_attempt(deps: Deps, job_id: str, failure: jobs.Failure) -> None:
    """A worker claims `job_id` and its provider call fails with `failure`."""
    async with deps.unit() as unit:
        claimed = await claim(unit, job_id, (await job_by_id(deps, job_id)).kind)
        assert claimed is not None, "the job was due"
    async with deps.unit() as unit:
        locked = await lock_job(unit, job_id)
        assert locked is not None
        await jobs.attempt_failed(unit, deps.settings, *locked, claimed[2], failure)


async def job_by_id(deps: Deps, job_id: str) -> GenerationJob:
    async with deps.db.read() as session:
        job = await repository.get_job(session, job_id)
    assert job is not None
    return job


async def to_images(deps: Deps, request_id: str) -> list[GenerationJob]:
    """Runs the prompt stage; returns the image jobs it queued (their messages held)."""
    await deliver_one(deps)
    recorded(deps).take()
    return await job_rows(deps, request_id, "IMAGE")


async def test_a_transient_failure_retries_later_and_says_so(deps: Deps) -> None:
    # Retries 30 to 60 s later: "not due yet" must not depend on how busy the machine is.
    deps.settings.retry_base_seconds = 60
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1)
    [image_job] = await to_images(deps, request_id)
    before = utcnow()
    await fail_attempt(deps, image_job.id, TRANSIENT)
    job = await job_by_id(deps, image_job.id)
    assert job.status == "RETRYING"
    assert job.attempt == 1
    assert job.next_attempt_at is not None
    assert job.next_attempt_at > before
    assert job.error_code == "PROVIDER_UNAVAILABLE"
    event = (await events(deps, request_id))[-1]
    assert event.status == Status.IMAGE_GENERATING
    assert (event.job_status, event.attempt, event.error_code) == (
        "RETRYING",
        1,
        "PROVIDER_UNAVAILABLE",
    )
    assert event.next_attempt_at == job.next_attempt_at
    [message] = recorded(deps).sent
    assert message.stage == Stage.GENERATE_IMAGE
    assert message.delay_seconds > 0
    # An early duplicate of the retry message is not due yet: nothing happens.
    early = jobs.message_for(await request_row(deps, request_id), job)
    async with deps.unit() as unit:
        assert await claim(unit, early.args[0], "IMAGE") is None
    await make_due(deps, image_job.id)
    await deliver(deps)
    row = await request_row(deps, request_id)
    assert row.status == Status.IMAGE_COMPLETED
    assert (await job_by_id(deps, image_job.id)).attempt == 2


async def make_due(deps: Deps, job_id: str) -> None:
    async with deps.db.write() as session:
        await session.execute(
            update(GenerationJob)
            .where(col(GenerationJob.id) == job_id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    for message in recorded(deps).sent:
        object.__setattr__(message, "delay_seconds", 0.0)


async def test_attempts_run_out_then_the_request_fails_refunds_once_and_keeps_a_dead_letter(
    deps: Deps,
) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1)
    [image_job] = await to_images(deps, request_id)
    for _ in range(deps.settings.job_max_attempts - 1):
        await fail_attempt(deps, image_job.id, TRANSIENT)
        await make_due(deps, image_job.id)
        recorded(deps).take()
    await fail_attempt(deps, image_job.id, TRANSIENT)
    assert recorded(deps).sent == []  # no more retries
    row = await request_row(deps, request_id)
    assert row.status == Status.FAILED
    assert row.error_code == "PROVIDER_UNAVAILABLE"
    history = [e.status for e in await events(deps, request_id)]
    assert history[-2:] == [Status.IMAGE_FAILED, Status.FAILED]
    async with deps.db.read() as session:
        letters = list((await session.execute(select(DeadLetter))).scalars())
        refunds = list(
            (
                await session.execute(
                    select(CreditEntry.amount).where(col(CreditEntry.kind) == "REFUND")
                )
            ).scalars()
        )
    assert [(d.job_id, d.error_code, d.attempts) for d in letters] == [
        (image_job.id, "PROVIDER_UNAVAILABLE", deps.settings.job_max_attempts)
    ]
    assert refunds == [1]
    # A late duplicate of the last attempt's outcome changes nothing.
    async with deps.unit() as unit:
        locked = await lock_job(unit, image_job.id)
        assert locked is not None
        await jobs.attempt_failed(unit, deps.settings, *locked, 4, PERMANENT)
    assert len(await events(deps, request_id)) == len(history)


async def test_a_permanent_failure_fails_at_once_and_other_images_carry_on(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=2)
    first, second = await to_images(deps, request_id)
    await fail_attempt(deps, first.id, PERMANENT)
    assert (await job_by_id(deps, first.id)).status == "FAILED"
    assert (await request_row(deps, request_id)).status == Status.IMAGE_GENERATING
    recorded(deps).sent.append(jobs.message_for(await request_row(deps, request_id), second))
    await deliver(deps)
    row = await request_row(deps, request_id)
    assert row.status == Status.IMAGE_COMPLETED  # one image is enough to go on
    async with deps.db.read() as session:
        refunds = list(
            (
                await session.execute(
                    select(CreditEntry.amount).where(col(CreditEntry.kind) == "REFUND")
                )
            ).scalars()
        )
    assert refunds == [1]  # the image that failed is given back when the phase closes


async def test_retry_request_makes_only_the_failed_images_again(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=2)
    first, second = await to_images(deps, request_id)
    await fail_attempt(deps, first.id, PERMANENT)
    await fail_attempt(deps, second.id, PERMANENT)
    assert (await request_row(deps, request_id)).status == Status.FAILED
    async with deps.unit() as unit:
        await service.retry_request(unit, viewer, request_id)
    assert (await request_row(deps, request_id)).status == Status.IMAGE_GENERATING
    await deliver(deps)
    row = await request_row(deps, request_id)
    assert row.status == Status.IMAGE_COMPLETED
    image_jobs = await job_rows(deps, request_id, "IMAGE")
    assert sorted(j.status for j in image_jobs) == ["COMPLETED", "COMPLETED", "FAILED", "FAILED"]
    async with deps.db.read() as session:
        letters = (await session.execute(select(DeadLetter))).scalars().all()
        images = (
            await session.execute(
                select(GeneratedImage).where(col(GeneratedImage.request_id) == request_id)
            )
        ).scalars()
        assert {image.status for image in images} == {"COMPLETED"}
    assert letters == []  # the retry took the dead letters back


async def test_retry_after_a_3d_failure_keeps_the_images(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=2, auto_model=True)
    while (await request_row(deps, request_id)).status != Status.MODEL_PENDING:
        await deliver_one(deps)
    recorded(deps).take()
    [model_job] = await job_rows(deps, request_id, "MODEL")
    await fail_attempt(deps, model_job.id, PERMANENT)
    row = await request_row(deps, request_id)
    assert row.status == Status.FAILED
    assert row.phase == "MODEL_GENERATION"
    images_before = await job_rows(deps, request_id, "IMAGE")
    async with deps.unit() as unit:
        await service.retry_request(unit, viewer, request_id)
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.COMPLETED
    assert await job_rows(deps, request_id, "IMAGE") == images_before
    statuses = [e.status for e in await events(deps, request_id)]
    assert statuses.count(Status.COMPLETED) == 1


async def test_only_a_failed_request_can_be_retried(deps: Deps) -> None:
    from app.requests.errors import RequestNotRetryable

    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1)
    async with deps.unit() as unit:
        try:
            await service.retry_request(unit, viewer, request_id)
        except RequestNotRetryable:
            pass
        else:
            raise AssertionError("a running request was retried")


async def stall(
    deps: Deps, job_id: str, seconds: float = 3600, *, poll_overdue: bool = False
) -> None:
    """The job's heartbeat stopped `seconds` ago (`poll_overdue`: and its poll was due
    then, and no poller took it)."""
    ago = utcnow() - timedelta(seconds=seconds)
    values = {"heartbeat_at": ago, **({"next_poll_at": ago} if poll_overdue else {})}
    async with deps.db.write() as session:
        await session.execute(
            update(GenerationJob).where(col(GenerationJob.id) == job_id).values(**values)
        )


async def test_the_sweeper_retries_a_job_whose_worker_died(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1)
    [image_job] = await to_images(deps, request_id)
    async with deps.unit() as unit:  # a worker claims the job, then is killed
        assert await claim(unit, image_job.id, "IMAGE") is not None
    assert (await sweep(deps)).retried == []  # its heartbeat is fresh: not stalled
    await stall(deps, image_job.id)
    report = await sweep(deps)
    assert report.retried == [image_job.id]
    assert (await job_by_id(deps, image_job.id)).status == "RETRYING"
    await make_due(deps, image_job.id)
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.IMAGE_COMPLETED


async def test_the_sweeper_resends_lost_messages_but_never_queued_ones(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    lost = await submit(deps, viewer, image_count=1)
    recorded(deps).take()  # the broker lost the prompt message
    queued = await submit(deps, viewer, image_count=1)  # this one waits in the queue
    async with deps.db.write() as session:  # both waited long enough to be looked at
        await session.execute(
            update(GenerationJob).values(updated_at=utcnow() - timedelta(minutes=5))
        )
    report = await sweep(deps)
    lost_job = (await job_rows(deps, lost, "PROMPT"))[0]
    assert report.resent == [lost_job.id]
    assert sorted(m.args[0] for m in recorded(deps).sent) == sorted(
        [lost_job.id, (await job_rows(deps, queued, "PROMPT"))[0].id]
    )
    await deliver(deps)
    assert (await request_row(deps, lost)).status == Status.IMAGE_COMPLETED
    assert (await request_row(deps, queued)).status == Status.IMAGE_COMPLETED


async def test_the_sweeper_polls_a_stalled_3d_job_instead_of_paying_for_another(
    deps: Deps,
) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    while not (await request_row(deps, request_id)).step.startswith("generating 3D"):
        await deliver_one(deps)
    [model_job] = await job_rows(deps, request_id, "MODEL")
    await stall(deps, model_job.id)  # a rate limit spaces its polls: a poller still has it
    assert not await sweep(deps)
    await stall(deps, model_job.id, poll_overdue=True)  # no poller has run for an hour
    report = await sweep(deps)
    assert report.polled == [model_job.id]
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.COMPLETED
    done = await job_by_id(deps, model_job.id)
    assert (done.vendor_job_id, done.attempt) == (model_job.vendor_job_id, 1)


async def test_the_sweeper_fails_a_request_nothing_can_move_and_refunds_it(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1)
    recorded(deps).take()
    async with deps.db.write() as session:  # the job vanished (an operator deleted it)
        await session.execute(
            update(GenerationJob)
            .where(col(GenerationJob.request_id) == request_id)
            .values(status="CANCELLED")
        )
    request = await request_row(deps, request_id)
    async with deps.db.write() as session:
        await session.execute(
            update(type(request))
            .where(col(type(request).id) == request_id)
            .values(updated_at=utcnow() - timedelta(hours=1))
        )
    report = await sweep(deps)
    assert report.failed == [request_id]
    row = await request_row(deps, request_id)
    assert (row.status, row.error_code) == (Status.FAILED, "STALLED")
    async with deps.unit() as unit:
        await service.retry_request(unit, viewer, request_id)
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.IMAGE_COMPLETED


async def test_a_vendor_job_that_runs_out_of_time_is_retried_then_timeout(deps: Deps) -> None:
    deps.settings.model_job_timeout_seconds = 0.01
    deps.settings.job_max_attempts = 2
    deps.settings.retry_base_seconds = 0.01
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    await deliver(deps)  # every poll finds the 3D job past its time limit
    row = await request_row(deps, request_id)
    assert (row.status, row.error_code) == (Status.FAILED, "TIMEOUT")
    [model_job] = await job_rows(deps, request_id, "MODEL")
    assert (model_job.status, model_job.attempt) == ("TIMEOUT", 2)
    retried = [e for e in await events(deps, request_id) if e.job_status == "RETRYING"]
    assert [(e.attempt, e.error_code) for e in retried] == [(1, "TIMEOUT")]


async def test_purging_a_queue_fails_its_waiting_work_and_requeue_brings_it_back(
    deps: Deps,
) -> None:
    from workers import admin

    viewer = await a_viewer(deps)
    start = (await request_row(deps, await submit(deps, viewer, image_count=1))).id
    low = await service_create(deps, viewer, priority="low")
    _, failed = await admin.purge_queue(deps, "default")
    assert failed == 1
    row = await request_row(deps, start)
    assert (row.status, row.error_code) == (Status.FAILED, "PURGED")
    assert (await request_row(deps, low)).status == Status.IMAGE_PENDING  # other queue
    [letter] = await admin.dead(deps)
    assert (letter.request_id, letter.error_code, letter.queue) == (start, "PURGED", "default")
    recorded(deps).take()
    outcomes = await admin.requeue(deps, None)
    assert [outcome for _, outcome in outcomes] == ["requeued"]
    assert await admin.dead(deps) == []
    await deliver(deps)
    assert (await request_row(deps, start)).status == Status.IMAGE_COMPLETED
    report = await admin.status(deps)
    assert report.dead_letters == 0
    assert report.jobs[("default", "IMAGE", "COMPLETED")] == 1
    assert report.jobs[("low", "PROMPT", "PENDING")] == 1


async def service_create(deps: Deps, viewer: object, **options: object) -> str:
    new = service.NewRequest(prompt="a lamp", image_count=1, image_size=128, **options)  # type: ignore[arg-type]
    async with deps.unit() as unit:
        return (await service.create_request(unit, viewer, new)).id  # type: ignore[arg-type]


async def test_a_stage_over_its_time_limit_is_retried_as_a_timeout(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1)
    [image_job] = await to_images(deps, request_id)
    deps.settings.stage_time_limit_seconds = 0.01  # the offline image takes 0.05 s
    recorded(deps).sent.append(jobs.message_for(await request_row(deps, request_id), image_job))
    await deliver_one(deps)
    job = await job_by_id(deps, image_job.id)
    assert (job.status, job.error_code) == ("RETRYING", "PROVIDER_TIMEOUT")
    deps.settings.stage_time_limit_seconds = 30
    await make_due(deps, image_job.id)
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.IMAGE_COMPLETED


def test_backoff_doubles_with_jitter_and_honours_retry_after(deps: Deps) -> None:
    settings = deps.settings
    settings.retry_base_seconds, settings.retry_max_seconds = 2, 60
    for attempt, ceiling in ((1, 2), (2, 4), (3, 8), (9, 60)):
        delays = [jobs.backoff(settings, attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert jobs.backoff(settings, 1, retry_after=30) == 30  # a vendor's hint wins
    assert jobs.backoff(settings, 1, retry_after=10**9) == 6 * 3600  # within broker bounds


async def test_cancelling_during_a_3d_job_cancels_it_at_the_vendor(deps: Deps) -> None:
    from providers.base import JobState

    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    while not (await request_row(deps, request_id)).step.startswith("generating 3D"):
        await deliver_one(deps)
    [model_job] = await job_rows(deps, request_id, "MODEL")
    assert model_job.vendor_job_id is not None
    async with deps.unit() as unit:
        await service.cancel_request(unit, viewer, request_id)
    await deliver(deps)  # the poll that was on its way finds the request cancelled
    status = await deps.providers.model.primary.poll(model_job.vendor_job_id)
    assert (status.state, status.error_code) == (JobState.FAILED, "JOB_CANCELLED")
    assert (await request_row(deps, request_id)).status == Status.CANCELLED


class BrokenQueue(RecordingQueue):
    """A broker that is down when the commit is over."""

    def send(self, message: object) -> None:
        raise ConnectionError("the broker is unreachable")


async def test_a_message_that_cannot_be_sent_after_commit_is_sent_by_the_sweeper(
    deps: Deps,
) -> None:
    viewer = await a_viewer(deps)
    working = deps.queue
    deps.queue = BrokenQueue()
    request_id = await submit(deps, viewer, image_count=1)  # no error reaches the caller
    deps.queue = working
    async with deps.db.write() as session:
        await session.execute(
            update(GenerationJob).values(updated_at=utcnow() - timedelta(minutes=1))
        )
    assert len((await sweep(deps)).resent) == 1
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.IMAGE_COMPLETED
