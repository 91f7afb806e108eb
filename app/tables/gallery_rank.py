from __future__ import annotations

from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH


class GalleryRank(SQLModel, table=True):
    """A public model's place in one sort of one ranking snapshot (`GalleryRanking`).

    The primary key is the page read: a version and sort, positions after a cursor's.
    `model_id` has no foreign key: a deleted model's rows stay until their version is
    purged, and a page's join to the live models drops them.
    """

    __tablename__ = "gallery_ranks"

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    sort: str = Field(primary_key=True, max_length=16)
    position: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    model_id: str = Field(max_length=ID_LENGTH)
