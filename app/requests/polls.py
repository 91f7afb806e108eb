"""All SQL of the 3D poller (workers/poller.py): which vendor jobs are due for a poll,
leasing them to one poller, and writing many jobs' results back at once.

A 3D job at a vendor carries `next_poll_at`: when it should next be asked about. A
poller leases the due jobs by pushing `next_poll_at` to the end of its lease (and
counting the poll in `poll_count`, the lease's fencing token); when it dies, the lease
runs out and another poller takes them. The database, not a message, says what is owed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, not_, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.tables import GenerationJob, GenerationRequest, User, utcnow

# Job statuses a poller still has business with: polling it, or cancelling it at the vendor.
POLLED_STATUSES = ("RUNNING", "CANCELLED")


@dataclass(frozen=True, slots=True)
class Leased:
    """A 3D job a poller holds for one poll, with what the poll needs of its request."""

    job_id: str
    job_status: str
    attempt: int
    poll_count: int  # as leased: the fencing token of every write of this poll
    provider: str
    vendor_job_id: str
    started_at: datetime | None
    request_id: str
    request_status: str
    progress: float
    model_format: str


# In the order of `Leased`'s fields.
_LEASED_COLUMNS: tuple[Any, ...] = (
    col(GenerationJob.id),
    col(GenerationJob.status),
    col(GenerationJob.attempt),
    col(GenerationJob.poll_count),
    col(GenerationJob.provider),
    col(GenerationJob.vendor_job_id),
    col(GenerationJob.started_at),
    col(GenerationRequest.id),
    col(GenerationRequest.status),
    col(GenerationRequest.progress),
    col(GenerationRequest.model_format),
)


def _due(now: datetime) -> list[object]:
    return [
        col(GenerationJob.status).in_(POLLED_STATUSES),
        col(GenerationJob.vendor_job_id).is_not(None),
        col(GenerationJob.next_poll_at) <= now,
    ]


async def lease_due(
    session: AsyncSession,
    *,
    now: datetime,
    until: datetime,
    limit: int,
    provider: str | None = None,
    not_among: Sequence[str] = (),
) -> list[Leased]:
    """Leases up to `limit` due 3D jobs of `provider` (or of none of `not_among`) until
    `until`, the longest running first: when a vendor's quota admits fewer polls than
    are due, they go to the jobs most likely done. Rows another poller is leasing right
    now are skipped (MariaDB's SKIP LOCKED; SQLite serializes write transactions)."""
    query = select(GenerationJob.id).where(*_due(now))  # type: ignore[arg-type]
    if provider is not None:
        query = query.where(col(GenerationJob.provider) == provider)
    else:
        query = query.where(col(GenerationJob.provider).not_in(list(not_among)))
    query = query.order_by(col(GenerationJob.started_at), col(GenerationJob.id)).limit(limit)
    ids = list((await session.execute(query.with_for_update(skip_locked=True))).scalars())
    if not ids:
        return []
    await session.execute(
        update(GenerationJob)
        .where(col(GenerationJob.id).in_(ids))
        .values(poll_count=GenerationJob.poll_count + 1, next_poll_at=until, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    rows = await session.execute(
        select(*_LEASED_COLUMNS)
        .join(GenerationRequest, col(GenerationRequest.id) == col(GenerationJob.request_id))
        .where(col(GenerationJob.id).in_(ids))
        .order_by(col(GenerationJob.started_at), col(GenerationJob.id))
    )
    return [Leased(*row) for row in rows]


def _fenced() -> object:
    return and_(
        col(GenerationJob.id) == bindparam("job_id"),
        col(GenerationJob.status) == "RUNNING",
        col(GenerationJob.attempt) == bindparam("job_attempt"),
        col(GenerationJob.poll_count) == bindparam("job_polls"),
    )


_RESCHEDULE = (
    update(GenerationJob)
    .where(_fenced())  # type: ignore[arg-type]
    .values(next_poll_at=bindparam("at"), heartbeat_at=bindparam("now"))
)


def _params(job: Leased, at: datetime, now: datetime) -> dict[str, object]:
    return {
        "job_id": job.job_id,
        "job_attempt": job.attempt,
        "job_polls": job.poll_count,
        "at": at,
        "now": now,
    }


async def reschedule(session: AsyncSession, due: Sequence[tuple[Leased, datetime]]) -> None:
    """Sets when each still-running job is next due, in one statement executed for all;
    a job that another attempt or poller has taken since its lease is left alone."""
    if due:
        now = utcnow()
        connection = await session.connection()
        await connection.execute(_RESCHEDULE, [_params(job, at, now) for job, at in due])


async def reschedule_one(session: AsyncSession, job: Leased, at: datetime) -> bool:
    """As `reschedule` for one job; whether the job was still this poll's."""
    connection = await session.connection()
    result = await connection.execute(_RESCHEDULE, _params(job, at, utcnow()))
    return bool(result.rowcount == 1)


async def unschedule(session: AsyncSession, job_ids: Sequence[str]) -> None:
    """Nothing more to ask the vendor about these jobs (cancelled, or no longer due)."""
    if job_ids:
        await session.execute(
            update(GenerationJob)
            .where(col(GenerationJob.id).in_(list(job_ids)))
            .values(next_poll_at=None)
            .execution_options(synchronize_session=False)
        )


async def schedule(session: AsyncSession, job_id: str, at: datetime) -> None:
    """The first poll of a job just submitted to its vendor."""
    await session.execute(
        update(GenerationJob).where(col(GenerationJob.id) == job_id).values(next_poll_at=at)
    )


async def make_due(session: AsyncSession, job_id: str, *, only_unscheduled: bool) -> bool:
    """Makes a running 3D job's poll due now (with a fresh heartbeat). `only_unscheduled`:
    only when no poll is scheduled for it (a job started by an older version)."""
    now = utcnow()
    query = update(GenerationJob).where(
        col(GenerationJob.id) == job_id,
        col(GenerationJob.status) == "RUNNING",
        col(GenerationJob.vendor_job_id).is_not(None),
    )
    if only_unscheduled:
        query = query.where(col(GenerationJob.next_poll_at).is_(None))
    result = await session.execute(query.values(next_poll_at=now, heartbeat_at=now))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def next_due(session: AsyncSession) -> datetime | None:
    """When the next poll of any 3D job is due."""
    query = select(func.min(GenerationJob.next_poll_at)).where(
        col(GenerationJob.status).in_(POLLED_STATUSES),
        col(GenerationJob.vendor_job_id).is_not(None),
    )
    return (await session.execute(query)).scalar_one_or_none()


async def lock_requests(
    session: AsyncSession, request_ids: Sequence[str]
) -> dict[str, GenerationRequest]:
    """The requests, locked in id order, then their owners, locked in id order: the lock
    order of `workers.claims.lock_job` (requests before users) held across many jobs,
    so two pollers' batches cannot deadlock each other."""
    if not request_ids:
        return {}
    requests = await session.execute(
        select(GenerationRequest)
        .where(col(GenerationRequest.id).in_(sorted(set(request_ids))))
        .order_by(col(GenerationRequest.id))
        .with_for_update()
    )
    found = {request.id: request for request in requests.scalars()}
    owners = sorted({request.user_id for request in found.values()})
    await session.execute(
        select(User.id).where(col(User.id).in_(owners)).order_by(col(User.id)).with_for_update()
    )
    return found


async def stalled_jobs(session: AsyncSession, before: datetime, limit: int = 200) -> list[str]:
    """Running jobs whose heartbeat is older than `before`, but for 3D jobs at a vendor
    whose next poll is due after `before`: a poller has them (a job waits between polls
    longer than a heartbeat lives when the vendor's rate limit spaces its polls)."""
    owned = and_(
        col(GenerationJob.vendor_job_id).is_not(None),
        col(GenerationJob.next_poll_at) >= before,
    )
    result = await session.execute(
        select(GenerationJob.id)
        .where(
            col(GenerationJob.status) == "RUNNING",
            col(GenerationJob.heartbeat_at) < before,
            or_(not_(owned), col(GenerationJob.next_poll_at).is_(None)),
        )
        .limit(limit)
    )
    return list(result.scalars())
