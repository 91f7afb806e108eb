"""All SQL about 3D models."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.tables import Model


async def by_request_ids(session: AsyncSession, request_ids: Sequence[str]) -> list[Model]:
    result = await session.execute(select(Model).where(col(Model.request_id).in_(request_ids)))
    return list(result.scalars())


async def get(session: AsyncSession, model_id: str) -> Model | None:
    return await session.get(Model, model_id)
