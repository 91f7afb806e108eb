from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.tables.base import created_field, id_field, key_field


class User(SQLModel, table=True):
    """A person known by the subject of a verified token; created on first sight."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("credits >= 0", name="credits_not_negative"),)

    id: str = id_field()
    external_id: str = key_field(191, unique=True)  # the token's subject
    display_name: str = Field(max_length=100)
    role: str = Field(default="user", max_length=16)
    credits: int = Field(default=0)
    # Last per-user event number: `myRequestUpdates` resumes from it.
    event_seq: int = Field(default=0)
    created_at: datetime = created_field()
    updated_at: datetime = created_field()
