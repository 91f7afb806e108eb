"""All SQL about generation requests, their images, jobs and events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Select, bindparam, case, delete, func, insert, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.tables import (
    DeadLetter,
    GeneratedImage,
    GenerationJob,
    GenerationRequest,
    RequestEvent,
    utcnow,
)

# Job statuses with work still to do: claimed, waiting for a worker, or for a retry.
OPEN_JOB_STATUSES = ("PENDING", "RUNNING", "RETRYING")
# Request statuses that only a job moves on: without an open job such a request is stuck.
STUCK_STATUSES = frozenset(
    {
        "IMAGE_PENDING",
        "IMAGE_GENERATING",
        "IMAGE_FAILED",
        "MODEL_PENDING",
        "MODEL_GENERATING",
        "MODEL_COMPLETED",
        "MODEL_FAILED",
    }
)


# Built once: every stage locks its request.
_REQUEST = select(GenerationRequest).where(col(GenerationRequest.id) == bindparam("request_id"))
_REQUEST_LOCKED = _REQUEST.with_for_update()


async def get(
    session: AsyncSession, request_id: str, *, for_update: bool = False
) -> GenerationRequest | None:
    query = _REQUEST_LOCKED if for_update else _REQUEST
    result = await session.execute(query, {"request_id": request_id})
    return result.scalar_one_or_none()


async def get_owned(
    session: AsyncSession, request_id: str, user_id: str, *, for_update: bool = False
) -> GenerationRequest | None:
    """The request when it exists and belongs to `user_id`."""
    request = await get(session, request_id, for_update=for_update)
    if request is None or request.user_id != user_id:
        return None
    return request


async def list_page(
    session: AsyncSession,
    user_id: str,
    *,
    limit: int,
    after: tuple[Any, str] | None,
    status: str | None,
) -> list[GenerationRequest]:
    """Newest first; `after` is the (created_at, id) of the last row already seen."""
    query = select(GenerationRequest).where(col(GenerationRequest.user_id) == user_id)
    if status is not None:
        query = query.where(col(GenerationRequest.status) == status)
    if after is not None:
        created, last_id = after
        query = query.where(
            or_(
                col(GenerationRequest.created_at) < created,
                (col(GenerationRequest.created_at) == created)
                & (col(GenerationRequest.id) < last_id),
            )
        )
    query = query.order_by(
        col(GenerationRequest.created_at).desc(), col(GenerationRequest.id).desc()
    ).limit(limit)
    result = await session.execute(query)
    return list(result.scalars())


async def count_of(session: AsyncSession, user_id: str, *, status: str | None) -> int:
    """How many requests `user_id` has (of `status`): a count over the owner's index."""
    query = select(func.count()).where(col(GenerationRequest.user_id) == user_id)
    if status is not None:
        query = query.where(col(GenerationRequest.status) == status)
    return int((await session.execute(query)).scalar_one())


async def images_of(session: AsyncSession, request_ids: Sequence[str]) -> list[GeneratedImage]:
    query = (
        select(GeneratedImage)
        .where(col(GeneratedImage.request_id).in_(request_ids))
        .order_by(col(GeneratedImage.request_id), col(GeneratedImage.index))
    )
    result = await session.execute(query)
    return list(result.scalars())


async def jobs_of(session: AsyncSession, request_ids: Sequence[str]) -> list[GenerationJob]:
    query = (
        select(GenerationJob)
        .where(col(GenerationJob.request_id).in_(request_ids))
        .order_by(
            col(GenerationJob.request_id), col(GenerationJob.created_at), col(GenerationJob.id)
        )
    )
    result = await session.execute(query)
    return list(result.scalars())


async def set_image_prompts(session: AsyncSession, prompts: dict[str, str]) -> None:
    """Gives each image (by id) its prompt: one UPDATE, whatever their number."""
    if not prompts:
        return
    await session.execute(
        update(_IMAGES)
        .where(_IMAGES.c.id.in_(list(prompts)))
        .values(prompt=case(prompts, value=_IMAGES.c.id))
    )


async def get_image(session: AsyncSession, image_id: str) -> GeneratedImage | None:
    return await session.get(GeneratedImage, image_id)


_REQUEST_OF_JOB = select(col(GenerationJob.request_id)).where(
    col(GenerationJob.id) == bindparam("job_id")
)


async def request_of_job(session: AsyncSession, job_id: str) -> str | None:
    return (await session.execute(_REQUEST_OF_JOB, {"job_id": job_id})).scalar_one_or_none()


async def get_job(
    session: AsyncSession, job_id: str, *, fresh: bool = False
) -> GenerationJob | None:
    """The job; `fresh`: read again even if this session has it (as of a lock just taken)."""
    return await session.get(GenerationJob, job_id, populate_existing=fresh)


def _claimable(job_id: str, attempt: int, now: datetime) -> tuple[Any, ...]:
    """The job is waiting (or its retry is due) and still at the attempt the caller read."""
    return (
        col(GenerationJob.id) == job_id,
        col(GenerationJob.status).in_(["PENDING", "RETRYING"]),
        col(GenerationJob.attempt) == attempt,
        or_(
            col(GenerationJob.next_attempt_at).is_(None),
            col(GenerationJob.next_attempt_at) <= now + timedelta(seconds=1),
        ),
    )


def _running_values(attempt: int, now: datetime) -> dict[str, Any]:
    return {
        "status": "RUNNING",
        "attempt": attempt + 1,
        "started_at": now,
        "heartbeat_at": now,
        "next_attempt_at": None,
        "updated_at": now,
    }


async def claim_job(session: AsyncSession, job: GenerationJob) -> int | None:
    """PENDING or due RETRYING → RUNNING in one conditional UPDATE; returns the attempt.

    Exactly one delivery wins: the UPDATE also requires the attempt number the caller
    read, so the winner's attempt is a fencing token for everything it writes later.
    """
    now = utcnow()
    result = await session.execute(
        update(GenerationJob)
        .where(*_claimable(job.id, job.attempt, now))
        .values(**_running_values(job.attempt, now))
        .execution_options(synchronize_session=False)
    )
    return job.attempt + 1 if _one_row(result) else None


class ImageWork(Protocol):
    """What an image stage needs of its job, image and request: one read."""

    @property
    def kind(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def request_id(self) -> str: ...
    @property
    def request_status(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def image_provider(self) -> str | None: ...
    @property
    def image_id(self) -> str: ...
    @property
    def image_index(self) -> int: ...
    @property
    def prompt(self) -> str: ...
    @property
    def seed(self) -> int: ...


_JOBS, _IMAGES = GenerationJob.__table__, GeneratedImage.__table__  # type: ignore[attr-defined]
# Built once: every image stage runs it.
_IMAGE_WORK_COLUMNS: tuple[Any, ...] = (
    col(GenerationJob.kind),
    col(GenerationJob.attempt),
    col(GenerationJob.request_id),
    col(GenerationRequest.status).label("request_status"),
    col(GenerationRequest.image_width).label("width"),
    col(GenerationRequest.image_height).label("height"),
    col(GenerationRequest.image_provider),
    col(GeneratedImage.id).label("image_id"),
    col(GeneratedImage.index).label("image_index"),
    col(GeneratedImage.prompt),
    col(GeneratedImage.seed),
)
_IMAGE_WORK: Select[Any] = (
    select(*_IMAGE_WORK_COLUMNS)
    .join(GenerationRequest, col(GenerationRequest.id) == col(GenerationJob.request_id))
    .join(GeneratedImage, col(GeneratedImage.id) == col(GenerationJob.image_id))
    .where(col(GenerationJob.id) == bindparam("job_id"))
)


async def image_work(session: AsyncSession, job_id: str) -> ImageWork | None:
    """The image job with its image and request, as they are now: a plain read."""
    row = (await session.execute(_IMAGE_WORK, {"job_id": job_id})).first()
    return cast(ImageWork | None, row)


def _mysql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name != "sqlite"


def _image_statements() -> dict[str, Any]:
    """The image stage's UPDATEs, built once: every image runs two of them.

    Bound names differ from the column names (SQLAlchemy keeps those for SET)."""
    jobs, images = _JOBS.c, _IMAGES.c
    claimable = update(_JOBS).where(
        jobs.id == bindparam("b_job"),
        jobs.status.in_(["PENDING", "RETRYING"]),
        jobs.attempt == bindparam("b_attempt"),
        or_(jobs.next_attempt_at.is_(None), jobs.next_attempt_at <= bindparam("b_due_by")),
    )
    running = {
        jobs.status: "RUNNING",
        jobs.attempt: jobs.attempt + 1,
        jobs.started_at: bindparam("b_now"),
        jobs.heartbeat_at: bindparam("b_now"),
        jobs.next_attempt_at: None,
        jobs.updated_at: bindparam("b_now"),
    }
    owned = update(_JOBS).where(
        jobs.id == bindparam("b_job"),
        jobs.status == "RUNNING",
        jobs.attempt == bindparam("b_attempt"),
    )
    done = {
        jobs.status: "COMPLETED",
        jobs.finished_at: bindparam("b_now"),
        jobs.updated_at: bindparam("b_now"),
        jobs.heartbeat_at: bindparam("b_now"),
    }
    stored = {
        images.status: "COMPLETED",
        images.storage_key: bindparam("b_key"),
        images.content_type: bindparam("b_type"),
        images.width: bindparam("b_width"),
        images.height: bindparam("b_height"),
        images.provider: bindparam("b_provider"),
    }
    image = update(_IMAGES).where(images.id == bindparam("b_image"))
    joined = images.id == jobs.image_id
    return {
        # MySQL: job and image in one multiple-table UPDATE
        "claim": claimable.where(joined).values({**running, images.status: "GENERATING"}),
        "finish": owned.where(joined).values({**done, **stored}),
        # SQLite: one table per UPDATE
        "claim_job": claimable.values(running),
        "show_generating": image.values({images.status: "GENERATING"}),
        "finish_job": owned.values(done),
        "store_image": image.values(stored),
    }


_IMAGE_UPDATES = _image_statements()


async def claim_image(session: AsyncSession, job_id: str, image_id: str, attempt: int) -> bool:
    """Claims an image job as `claim_job` does (attempt `attempt` + 1) and shows its image
    GENERATING: one multiple-table UPDATE on MySQL, two statements on SQLite."""
    now = utcnow()
    values = {
        "b_job": job_id,
        "b_attempt": attempt,
        "b_due_by": now + timedelta(seconds=1),
        "b_now": now,
        "b_image": image_id,
    }
    if _mysql(session):
        result = await session.execute(_IMAGE_UPDATES["claim"], values)
        return bool(result.rowcount)  # type: ignore[attr-defined]
    if not _one_row(await session.execute(_IMAGE_UPDATES["claim_job"], values)):
        return False
    await session.execute(_IMAGE_UPDATES["show_generating"], values)
    return True


async def finish_image(
    session: AsyncSession,
    job_id: str,
    attempt: int,
    image_id: str,
    *,
    storage_key: str,
    content_type: str,
    width: int,
    height: int,
    provider: str,
) -> bool:
    """Attempt `attempt`'s image job → COMPLETED and its image → COMPLETED, stored at
    `storage_key`, when that attempt still owns the job: one multiple-table UPDATE on
    MySQL."""
    values = {
        "b_job": job_id,
        "b_attempt": attempt,
        "b_now": utcnow(),
        "b_image": image_id,
        "b_key": storage_key,
        "b_type": content_type,
        "b_width": width,
        "b_height": height,
        "b_provider": provider,
    }
    if _mysql(session):
        result = await session.execute(_IMAGE_UPDATES["finish"], values)
        return bool(result.rowcount)  # type: ignore[attr-defined]
    if not _one_row(await session.execute(_IMAGE_UPDATES["finish_job"], values)):
        return False
    await session.execute(_IMAGE_UPDATES["store_image"], values)
    return True


async def finish_job(
    session: AsyncSession,
    job_id: str,
    status: str,
    *,
    attempt: int | None = None,
    expect: tuple[str, ...] = ("RUNNING",),
    **values: Any,
) -> bool:
    """`expect` → a final `status` (COMPLETED, FAILED, TIMEOUT); False when the job is not
    in `expect`, or (given `attempt`) when a later attempt has taken it over."""
    now = utcnow()
    query = update(GenerationJob).where(
        col(GenerationJob.id) == job_id, col(GenerationJob.status).in_(expect)
    )
    if attempt is not None:
        query = query.where(col(GenerationJob.attempt) == attempt)
    result = await session.execute(
        query.values(status=status, finished_at=now, updated_at=now, heartbeat_at=now, **values)
    )
    return _one_row(result)


async def unclaim_job(session: AsyncSession, job_id: str, attempt: int, *, delay: float) -> bool:
    """Gives attempt `attempt`'s claim back: the job waits again (for a vendor slot), due
    in `delay` seconds, as if the attempt had never started."""
    now = utcnow()
    result = await session.execute(
        update(GenerationJob)
        .where(
            col(GenerationJob.id) == job_id,
            col(GenerationJob.status) == "RUNNING",
            col(GenerationJob.attempt) == attempt,
        )
        .values(
            status="PENDING",
            attempt=attempt - 1,
            next_attempt_at=now + timedelta(seconds=delay),
            queued_at=now + timedelta(seconds=delay),  # back in line when it is due
            started_at=None,
            updated_at=now,
        )
    )
    return _one_row(result)


async def retry_job(
    session: AsyncSession,
    job_id: str,
    *,
    attempt: int,
    at: datetime,
    error_code: str,
    error_message: str,
    expect: str = "RUNNING",
) -> bool:
    """`expect` → RETRYING, due at `at`; the vendor job (if any) is forgotten."""
    now = utcnow()
    result = await session.execute(
        update(GenerationJob)
        .where(
            col(GenerationJob.id) == job_id,
            col(GenerationJob.status) == expect,
            col(GenerationJob.attempt) == attempt,
        )
        .values(
            status="RETRYING",
            next_attempt_at=at,
            queued_at=at,  # back in line, at the end, when the retry is due
            error_code=error_code,
            error_message=error_message[:1000],
            vendor_job_id=None,
            poll_count=0,
            updated_at=now,
        )
    )
    return _one_row(result)


async def heartbeat(session: AsyncSession, job_id: str, attempt: int) -> bool:
    """Marks attempt `attempt` alive; False when the job is no longer that attempt's."""
    now = utcnow()
    result = await session.execute(
        update(GenerationJob)
        .where(
            col(GenerationJob.id) == job_id,
            col(GenerationJob.status) == "RUNNING",
            col(GenerationJob.attempt) == attempt,
        )
        .values(heartbeat_at=now)
    )
    return _one_row(result)


async def stalled_jobs(session: AsyncSession, before: datetime, limit: int = 200) -> list[str]:
    """Running jobs whose heartbeat is older than `before`."""
    result = await session.execute(
        select(GenerationJob.id)
        .where(col(GenerationJob.status) == "RUNNING", col(GenerationJob.heartbeat_at) < before)
        .limit(limit)
    )
    return list(result.scalars())


async def waiting_jobs(session: AsyncSession, before: datetime, limit: int = 1000) -> list[str]:
    """Jobs waiting for a worker since before `before` (or due for their retry by then)."""
    result = await session.execute(
        select(GenerationJob.id)
        .where(
            or_(
                (col(GenerationJob.status) == "PENDING") & (col(GenerationJob.updated_at) < before),
                (col(GenerationJob.status) == "RETRYING")
                & (col(GenerationJob.next_attempt_at) < before),
            )
        )
        .limit(limit)
    )
    return list(result.scalars())


async def overdue_jobs(session: AsyncSession, before: datetime, limit: int = 1000) -> list[str]:
    """Waiting jobs whose delayed message was due before `before`, untouched since then."""
    result = await session.execute(
        select(GenerationJob.id)
        .where(
            col(GenerationJob.status).in_(["PENDING", "RETRYING"]),
            col(GenerationJob.next_attempt_at) < before,
            col(GenerationJob.updated_at) < before,
        )
        .limit(limit)
    )
    return list(result.scalars())


async def set_vendor_job(
    session: AsyncSession, job_id: str, provider: str, vendor_job_id: str
) -> bool:
    now = utcnow()
    result = await session.execute(
        update(GenerationJob)
        .where(
            col(GenerationJob.id) == job_id,
            col(GenerationJob.status) == "RUNNING",
            col(GenerationJob.vendor_job_id).is_(None),
        )
        .values(provider=provider, vendor_job_id=vendor_job_id, heartbeat_at=now, updated_at=now)
    )
    return _one_row(result)


async def first_completed_image(session: AsyncSession, request_id: str) -> GeneratedImage | None:
    query = (
        select(GeneratedImage)
        .where(
            col(GeneratedImage.request_id) == request_id,
            col(GeneratedImage.status) == "COMPLETED",
        )
        .order_by(col(GeneratedImage.index))
        .limit(1)
    )
    result = await session.execute(query)
    return result.scalar_one_or_none()


async def cancel_open_jobs(session: AsyncSession, request_id: str) -> None:
    now = utcnow()
    await session.execute(
        update(GenerationJob)
        .where(
            col(GenerationJob.request_id) == request_id,
            col(GenerationJob.status).in_(OPEN_JOB_STATUSES),
        )
        .values(status="CANCELLED", finished_at=now, updated_at=now)
    )


_EVENTS = RequestEvent.__table__  # type: ignore[attr-defined]


async def insert_events(session: AsyncSession, events: Sequence[RequestEvent]) -> None:
    """Appends events to the log: one multi-row INSERT, whatever their number."""
    await session.execute(insert(_EVENTS), [event.model_dump() for event in events])


async def events_after(
    session: AsyncSession, request_id: str, after_seq: int, limit: int = 500
) -> list[RequestEvent]:
    query = (
        select(RequestEvent)
        .where(col(RequestEvent.request_id) == request_id, col(RequestEvent.seq) > after_seq)
        .order_by(col(RequestEvent.seq))
        .limit(limit)
    )
    result = await session.execute(query)
    return list(result.scalars())


async def latest_seqs(session: AsyncSession, request_ids: Sequence[str]) -> dict[str, int]:
    """Each request's latest event number (its `seq`, written with the event)."""
    query = select(GenerationRequest.id, GenerationRequest.seq).where(
        col(GenerationRequest.id).in_(request_ids)
    )
    return {request_id: seq for request_id, seq in await session.execute(query)}


async def user_events_after(
    session: AsyncSession, user_id: str, after_user_seq: int, limit: int = 500
) -> list[RequestEvent]:
    query = (
        select(RequestEvent)
        .where(col(RequestEvent.user_id) == user_id, col(RequestEvent.user_seq) > after_user_seq)
        .order_by(col(RequestEvent.user_seq))
        .limit(limit)
    )
    result = await session.execute(query)
    return list(result.scalars())


def _one_row(result: Any) -> bool:
    return bool(result.rowcount == 1)


async def get_many(session: AsyncSession, ids: Sequence[str]) -> list[GenerationRequest]:
    result = await session.execute(
        select(GenerationRequest).where(col(GenerationRequest.id).in_(ids))
    )
    return list(result.scalars())


async def images_by_ids(session: AsyncSession, ids: Sequence[str]) -> list[GeneratedImage]:
    result = await session.execute(select(GeneratedImage).where(col(GeneratedImage.id).in_(ids)))
    return list(result.scalars())


async def jobs_by_ids(session: AsyncSession, ids: Sequence[str]) -> list[GenerationJob]:
    result = await session.execute(select(GenerationJob).where(col(GenerationJob.id).in_(ids)))
    return list(result.scalars())


async def jobs_by_status(session: AsyncSession) -> dict[tuple[str, str], int]:
    query = select(GenerationJob.kind, GenerationJob.status, func.count()).group_by(
        col(GenerationJob.kind), col(GenerationJob.status)
    )
    return {(kind, status): count for kind, status, count in await session.execute(query)}


async def by_idempotency_key(
    session: AsyncSession, user_id: str, key: str
) -> GenerationRequest | None:
    result = await session.execute(
        select(GenerationRequest).where(
            col(GenerationRequest.user_id) == user_id,
            col(GenerationRequest.idempotency_key) == key,
        )
    )
    return result.scalar_one_or_none()


async def delete_dead_letters(session: AsyncSession, request_id: str) -> None:
    await session.execute(delete(DeadLetter).where(col(DeadLetter.request_id) == request_id))


async def delete_request(session: AsyncSession, request_id: str) -> None:
    """Deletes the request row and every row that belongs to it, children first (the
    foreign keys). Its credit ledger entries stay: they are the user's accounts.

    Pending changes are flushed first, so an event just written goes with the others."""
    await session.flush()
    await delete_dead_letters(session, request_id)
    for table in (GenerationJob, RequestEvent, GeneratedImage):
        await session.execute(delete(table).where(col(table.request_id) == request_id))
    await session.execute(delete(GenerationRequest).where(col(GenerationRequest.id) == request_id))


async def stored_image_keys(session: AsyncSession, batch: int = 1000) -> AsyncIterator[str]:
    """The storage key of every stored image, streamed in batches."""
    query = select(GeneratedImage.storage_key).where(col(GeneratedImage.storage_key).is_not(None))
    result = await session.stream(query.execution_options(yield_per=batch))
    async for key in result.scalars():
        if key is not None:
            yield key


def _open_jobs_of(request_id: Any) -> Any:
    return (
        select(GenerationJob.id)
        .where(
            col(GenerationJob.request_id) == request_id,
            col(GenerationJob.status).in_(OPEN_JOB_STATUSES),
        )
        .exists()
    )


async def has_open_jobs(session: AsyncSession, request_id: str) -> bool:
    result = await session.execute(select(_open_jobs_of(request_id)))
    return bool(result.scalar())


async def requests_without_open_jobs(
    session: AsyncSession, before: datetime, limit: int = 200
) -> list[str]:
    """Requests in a status only a job moves on, unchanged since `before`, with no job."""
    result = await session.execute(
        select(GenerationRequest.id)
        .where(
            col(GenerationRequest.status).in_(STUCK_STATUSES),
            col(GenerationRequest.updated_at) < before,
            ~_open_jobs_of(GenerationRequest.id),
        )
        .limit(limit)
    )
    return list(result.scalars())


async def waiting_in_queue(session: AsyncSession, queue: str) -> list[str]:
    """Jobs waiting for a worker (or a retry) whose request's work goes to `queue`."""
    result = await session.execute(
        select(GenerationJob.id)
        .join(GenerationRequest, col(GenerationRequest.id) == col(GenerationJob.request_id))
        .where(
            col(GenerationJob.status).in_(["PENDING", "RETRYING"]),
            col(GenerationRequest.priority) == queue,
        )
    )
    return list(result.scalars())


async def dead_letters(session: AsyncSession, limit: int = 100) -> list[DeadLetter]:
    result = await session.execute(
        select(DeadLetter).order_by(col(DeadLetter.created_at), col(DeadLetter.id)).limit(limit)
    )
    return list(result.scalars())


async def purge_dead_letters(session: AsyncSession) -> int:
    result = await session.execute(delete(DeadLetter))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def jobs_by_queue(session: AsyncSession) -> dict[tuple[str, str, str], int]:
    """Job counts per (queue, kind, status); a job's queue is its request's priority."""
    query = (
        select(GenerationRequest.priority, GenerationJob.kind, GenerationJob.status, func.count())
        .join(GenerationRequest, col(GenerationRequest.id) == col(GenerationJob.request_id))
        .group_by(
            col(GenerationRequest.priority), col(GenerationJob.kind), col(GenerationJob.status)
        )
    )
    rows = await session.execute(query)
    return {(queue, kind, status): count for queue, kind, status, count in rows}
