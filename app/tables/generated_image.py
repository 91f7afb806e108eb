from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field, id_field, key_field


class GeneratedImage(SQLModel, table=True):
    """One candidate image of a request; its bytes live in storage under `storage_key`."""

    __tablename__ = "generated_images"
    __table_args__ = (UniqueConstraint("request_id", "index"),)

    id: str = id_field()
    request_id: str = Field(foreign_key="generation_requests.id", max_length=ID_LENGTH)
    index: int
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    seed: int
    status: str = Field(default="PENDING", max_length=16)
    storage_key: str | None = key_field(255, default=None)
    width: int | None = None
    height: int | None = None
    content_type: str | None = Field(default=None, max_length=64)
    provider: str | None = Field(default=None, max_length=32)
    created_at: datetime = created_field()
    updated_at: datetime = created_field()
