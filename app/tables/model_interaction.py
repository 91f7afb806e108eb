from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field


class ModelInteraction(SQLModel, table=True):
    """A like or a favorite: the primary key makes liking twice one like."""

    __tablename__ = "model_interactions"
    __table_args__ = (
        Index("ix_model_interactions_user_type_created", "user_id", "type", "created_at"),
        Index("ix_model_interactions_model", "model_id"),
    )

    user_id: str = Field(foreign_key="users.id", primary_key=True, max_length=ID_LENGTH)
    model_id: str = Field(foreign_key="models.id", primary_key=True, max_length=ID_LENGTH)
    type: str = Field(primary_key=True, max_length=16)
    created_at: datetime = created_field()
