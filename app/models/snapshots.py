"""All SQL about the gallery's ranking snapshots: build one, find the newest, purge old ones.

A snapshot ranks every public model in each counter sort at one instant; a walk through
a counter sort reads its pages from one snapshot (see `app/models/ranking.py`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, literal
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.tables import GalleryRank, GalleryRanking, Model

# The counter sorts and the column each ranks by, descending, then id descending.
RANKED: dict[str, Any] = {
    "POPULAR": Model.popularity,
    "MOST_LIKED": Model.like_count,
    "MOST_DOWNLOADED": Model.download_count,
    "MOST_VIEWED": Model.view_count,
}


async def newest(session: AsyncSession) -> GalleryRanking | None:
    query = select(GalleryRanking).order_by(col(GalleryRanking.version).desc()).limit(1)
    return (await session.execute(query)).scalar_one_or_none()


async def exists(session: AsyncSession, version: int) -> bool:
    query = select(GalleryRanking.version).where(col(GalleryRanking.version) == version)
    return (await session.execute(query)).first() is not None


async def claim(session: AsyncSession, version: int, now: datetime) -> bool:
    """Records `version` as built at `now`; False if another builder recorded it first
    (the primary key decides: the loser waits for the winner's commit, then fails)."""
    try:
        async with session.begin_nested():
            session.add(GalleryRanking(version=version, created_at=now))
    except IntegrityError:
        return False
    return True


async def rank(session: AsyncSession, version: int) -> None:
    """Ranks the public models as they are now into `version`: one INSERT ... SELECT per
    sort, numbered by a window function, so no row passes through the gateway."""
    for sort, column in RANKED.items():
        position = func.row_number().over(order_by=(column.desc(), col(Model.id).desc()))
        source = select(literal(version), literal(sort), position, col(Model.id)).where(
            col(Model.visibility) == "PUBLIC"
        )
        await session.execute(
            insert(GalleryRank).from_select(["version", "sort", "position", "model_id"], source)
        )


async def purge(session: AsyncSession, superseded_before: datetime) -> None:
    """Deletes the versions that a newer one replaced by `superseded_before`: every
    version older than the newest one built by then."""
    query = select(func.max(GalleryRanking.version)).where(
        col(GalleryRanking.created_at) <= superseded_before
    )
    cutoff = (await session.execute(query)).scalar_one_or_none()
    if cutoff is None:
        return
    # Two statements: MySQL cannot delete from a table its own subquery reads.
    await session.execute(delete(GalleryRank).where(col(GalleryRank.version) < cutoff))
    await session.execute(delete(GalleryRanking).where(col(GalleryRanking.version) < cutoff))
