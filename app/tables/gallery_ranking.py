from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.tables.base import created_field


class GalleryRanking(SQLModel, table=True):
    """One ranking snapshot of the gallery's counter sorts (its rows are `GalleryRank`s).

    `version` is the newest one's plus one, set by its builder, never generated: of two
    processes that find the newest stale at once, one inserts the next version and the
    other meets the primary key and reads the winner's instead of building a duplicate.
    """

    __tablename__ = "gallery_rankings"

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    created_at: datetime = created_field()
