"""All SQL about generation requests, their images, jobs and events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.tables import GeneratedImage, GenerationJob, GenerationRequest, RequestEvent, utcnow


async def get(
    session: AsyncSession, request_id: str, *, for_update: bool = False
) -> GenerationRequest | None:
    query = select(GenerationRequest).where(col(GenerationRequest.id) == request_id)
    if for_update:
        query = query.with_for_update()
    result = await session.execute(query)
    return result.scalar_one_or_none()


async def get_owned(
    session: AsyncSession, request_id: str, user_id: str, *, for_update: bool = False
) -> GenerationRequest | None:
    """The request when it exists, is not deleted and belongs to `user_id`."""
    request = await get(session, request_id, for_update=for_update)
    if request is None or request.user_id != user_id or request.deleted_at is not None:
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
    query = select(GenerationRequest).where(
        col(GenerationRequest.user_id) == user_id, col(GenerationRequest.deleted_at).is_(None)
    )
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


async def images_of(session: AsyncSession, request_ids: Sequence[str]) -> list[GeneratedImage]:
    query = (
        select(GeneratedImage)
        .where(col(GeneratedImage.request_id).in_(request_ids))
        .order_by(col(GeneratedImage.request_id), col(GeneratedImage.index))
    )
    result = await session.execute(query)
    return list(result.scalars())


async def get_image(session: AsyncSession, image_id: str) -> GeneratedImage | None:
    return await session.get(GeneratedImage, image_id)


async def get_job(session: AsyncSession, job_id: str) -> GenerationJob | None:
    return await session.get(GenerationJob, job_id)


async def claim_job(session: AsyncSession, job_id: str, kind: str) -> bool:
    """PENDING → RUNNING in one conditional UPDATE: exactly one delivery wins the claim."""
    now = utcnow()
    result = await session.execute(
        update(GenerationJob)
        .where(
            col(GenerationJob.id) == job_id,
            col(GenerationJob.kind) == kind,
            col(GenerationJob.status) == "PENDING",
        )
        .values(
            status="RUNNING",
            attempt=GenerationJob.attempt + 1,
            started_at=now,
            heartbeat_at=now,
            updated_at=now,
        )
    )
    return _one_row(result)


async def claim_poll(session: AsyncSession, job_id: str, poll_no: int) -> bool:
    """Admits poll number `poll_no` once: a redelivered poll message finds it taken."""
    now = utcnow()
    result = await session.execute(
        update(GenerationJob)
        .where(
            col(GenerationJob.id) == job_id,
            col(GenerationJob.status) == "RUNNING",
            col(GenerationJob.poll_count) == poll_no,
        )
        .values(poll_count=poll_no + 1, heartbeat_at=now, updated_at=now)
    )
    return _one_row(result)


async def finish_job(
    session: AsyncSession, job_id: str, status: str, *, expect: str = "RUNNING", **values: Any
) -> bool:
    """Moves a job from `expect` to a final `status`; False when it was not in `expect`."""
    now = utcnow()
    result = await session.execute(
        update(GenerationJob)
        .where(col(GenerationJob.id) == job_id, col(GenerationJob.status) == expect)
        .values(status=status, finished_at=now, updated_at=now, heartbeat_at=now, **values)
    )
    return _one_row(result)


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


async def image_job_counts(session: AsyncSession, request_id: str) -> dict[str, int]:
    """How many of a request's image jobs are in each status."""
    query = (
        select(GenerationJob.status, func.count())
        .where(col(GenerationJob.request_id) == request_id, col(GenerationJob.kind) == "IMAGE")
        .group_by(col(GenerationJob.status))
    )
    result = await session.execute(query)
    return {status: count for status, count in result}


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
            col(GenerationJob.status).in_(["PENDING", "RUNNING", "RETRYING"]),
        )
        .values(status="CANCELLED", finished_at=now, updated_at=now)
    )


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
