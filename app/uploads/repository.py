"""All SQL about uploaded images."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from sqlalchemy import delete, func, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.tables import UploadedImage


async def get_owned(
    session: AsyncSession, upload_id: str, owner_id: str, *, for_update: bool = False
) -> UploadedImage | None:
    """The upload when it exists and belongs to `owner_id`."""
    query = select(UploadedImage).where(
        col(UploadedImage.id) == upload_id, col(UploadedImage.owner_id) == owner_id
    )
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def of_ids(session: AsyncSession, ids: Sequence[str]) -> list[UploadedImage]:
    query = select(UploadedImage).where(col(UploadedImage.id).in_(ids))
    return list((await session.execute(query)).scalars())


async def count_unused(session: AsyncSession, owner_id: str, now: datetime) -> int:
    """The owner's uploads no request used yet and not expired (a used one's row goes)."""
    query = select(func.count()).where(
        col(UploadedImage.owner_id) == owner_id, col(UploadedImage.expires_at) >= now
    )
    return int((await session.execute(query)).scalar_one())


async def mark_ready(
    session: AsyncSession,
    upload_id: str,
    *,
    key: str,
    content_type: str,
    width: int,
    height: int,
    size: int,
) -> bool:
    """PENDING to READY, with the clean file; False when it was not PENDING any more (a
    concurrent completion won, or the upload went)."""
    result = await session.execute(
        update(UploadedImage)
        .where(col(UploadedImage.id) == upload_id, col(UploadedImage.status) == "PENDING")
        .values(
            status="READY",
            storage_key=key,
            content_type=content_type,
            width=width,
            height=height,
            size=size,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def remove(session: AsyncSession, upload_id: str) -> None:
    await session.execute(delete(UploadedImage).where(col(UploadedImage.id) == upload_id))


async def delete_expired(session: AsyncSession, now: datetime) -> int:
    """Deletes the uploads that expired before `now`; how many."""
    result = await session.execute(delete(UploadedImage).where(col(UploadedImage.expires_at) < now))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def live_keys(session: AsyncSession, now: datetime) -> AsyncIterator[str]:
    """The storage keys of the uploads not expired yet: theirs, not orphans."""
    query = select(UploadedImage.storage_key).where(col(UploadedImage.expires_at) >= now)
    for key in (await session.execute(query)).scalars():
        yield str(key)
