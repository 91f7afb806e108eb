"""All SQL about 3D models and their likes and favorites."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.tables import Model, ModelInteraction, utcnow

# What each interaction adds to the counters (and to popularity, which weighs them).
COUNTER = {"LIKE": "like_count", "FAVORITE": "favorite_count"}
WEIGHT = {"LIKE": 2, "FAVORITE": 3, "DOWNLOAD": 1}

# sort name → the column it orders by (descending, then id descending)
SORT_COLUMNS: dict[str, Any] = {
    "LATEST": Model.published_at,
    "POPULAR": Model.popularity,
    "MOST_LIKED": Model.like_count,
    "MOST_DOWNLOADED": Model.download_count,
}


async def by_request_ids(session: AsyncSession, request_ids: Sequence[str]) -> list[Model]:
    result = await session.execute(select(Model).where(col(Model.request_id).in_(request_ids)))
    return list(result.scalars())


async def get(session: AsyncSession, model_id: str, *, for_update: bool = False) -> Model | None:
    query = select(Model).where(col(Model.id) == model_id)
    if for_update:
        query = query.with_for_update()
    result = await session.execute(query)
    return result.scalar_one_or_none()


async def get_many(session: AsyncSession, ids: Sequence[str]) -> list[Model]:
    result = await session.execute(select(Model).where(col(Model.id).in_(ids)))
    return list(result.scalars())


def _after(column: Any, value: Any, model_id: str) -> ColumnElement[bool]:
    """Rows strictly after (value, id) in descending order: the keyset condition."""
    return or_(column < value, and_(column == value, col(Model.id) < model_id))


async def list_owned(
    session: AsyncSession, owner_id: str, *, limit: int, after: tuple[Any, str] | None
) -> list[Model]:
    query = select(Model).where(col(Model.owner_id) == owner_id)
    if after is not None:
        query = query.where(_after(col(Model.created_at), *after))
    query = query.order_by(col(Model.created_at).desc(), col(Model.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def list_public(
    session: AsyncSession,
    sort: str,
    *,
    limit: int,
    after: tuple[Any, str] | None,
    as_of: datetime,
) -> list[Model]:
    """Public models by `sort`; only those published by `as_of`, so a walk through the
    pages is not shifted by models published during it."""
    column = col(SORT_COLUMNS[sort])
    query = select(Model).where(col(Model.visibility) == "PUBLIC", col(Model.published_at) <= as_of)
    if after is not None:
        query = query.where(_after(column, *after))
    query = query.order_by(column.desc(), col(Model.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def list_interacted(
    session: AsyncSession,
    user_id: str,
    kind: str,
    *,
    limit: int,
    after: tuple[Any, str] | None,
) -> list[tuple[Model, datetime]]:
    """Models `user_id` liked (or favorited) that they may still see, latest first."""
    stamp = col(ModelInteraction.created_at)
    query = (
        select(Model, stamp)
        .join(ModelInteraction, col(ModelInteraction.model_id) == col(Model.id))
        .where(
            col(ModelInteraction.user_id) == user_id,
            col(ModelInteraction.type) == kind,
            or_(col(Model.visibility) == "PUBLIC", col(Model.owner_id) == user_id),
        )
    )
    if after is not None:
        query = query.where(_after(stamp, *after))
    query = query.order_by(stamp.desc(), col(Model.id).desc()).limit(limit)
    return [(model, created) for model, created in (await session.execute(query)).all()]


async def interactions_of(
    session: AsyncSession, user_id: str, model_ids: Sequence[str]
) -> list[ModelInteraction]:
    query = select(ModelInteraction).where(
        col(ModelInteraction.user_id) == user_id, col(ModelInteraction.model_id).in_(model_ids)
    )
    return list((await session.execute(query)).scalars())


async def add_interaction(session: AsyncSession, user_id: str, model_id: str, kind: str) -> bool:
    """Records the like or favorite and counts it; False (and no count) if it existed.

    The primary key (user, model, type) decides: of two concurrent identical likes, one
    inserts and the other meets the key and changes nothing.
    """
    try:
        async with session.begin_nested():
            session.add(ModelInteraction(user_id=user_id, model_id=model_id, type=kind))
    except IntegrityError:
        return False
    await _count(session, model_id, kind, +1)
    return True


async def remove_interaction(session: AsyncSession, user_id: str, model_id: str, kind: str) -> bool:
    result = await session.execute(
        delete(ModelInteraction).where(
            col(ModelInteraction.user_id) == user_id,
            col(ModelInteraction.model_id) == model_id,
            col(ModelInteraction.type) == kind,
        )
    )
    removed = bool(getattr(result, "rowcount", 0) == 1)
    if removed:
        await _count(session, model_id, kind, -1)
    return removed


async def count_download(session: AsyncSession, model_id: str) -> None:
    await _count(session, model_id, "DOWNLOAD", +1)


async def _count(session: AsyncSession, model_id: str, kind: str, step: int) -> None:
    """One atomic UPDATE: counters never lose a concurrent change."""
    counter = COUNTER.get(kind, "download_count")
    values = {
        counter: getattr(Model, counter) + step,
        "popularity": col(Model.popularity) + WEIGHT[kind] * step,
        "updated_at": utcnow(),
    }
    await session.execute(
        update(Model).where(col(Model.id) == model_id).values(**values),
        execution_options={"synchronize_session": False},
    )


async def delete_model(session: AsyncSession, model_id: str) -> None:
    await session.execute(
        delete(ModelInteraction).where(col(ModelInteraction.model_id) == model_id)
    )
    await session.execute(
        delete(Model).where(col(Model.id) == model_id),
        execution_options={"synchronize_session": False},
    )
