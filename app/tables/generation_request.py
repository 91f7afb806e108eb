from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field, id_field, key_field, time_field


class GenerationRequest(SQLModel, table=True):
    """One prompt's journey from text to a 3D model. `status` changes only in stages.py."""

    __tablename__ = "generation_requests"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        Index("ix_generation_requests_user_created", "user_id", "created_at", "id"),
        Index("ix_generation_requests_user_status", "user_id", "status"),
        # The sweeper's look for requests that stopped moving.
        Index("ix_generation_requests_status_updated", "status", "updated_at"),
    )

    id: str = id_field()
    user_id: str = Field(foreign_key="users.id", max_length=ID_LENGTH)
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    optimized_prompts: list[str] | None = Field(default=None, sa_column=Column(JSON))
    image_count: int
    image_width: int
    image_height: int
    optimize_prompt: bool = True
    auto_model: bool = False
    priority: str = Field(default="default", max_length=8)  # high, default or low
    # Vendors the user asked for (None: the configured chain, with failover).
    image_provider: str | None = Field(default=None, max_length=32)
    model_provider: str | None = Field(default=None, max_length=32)
    model_format: str = Field(default="glb", max_length=8)  # glb or obj
    status: str = Field(max_length=24)
    phase: str = Field(max_length=24)
    step: str = Field(default="", max_length=200)
    progress: float = 0.0
    progress_estimated: bool = False
    selected_image_id: str | None = Field(default=None, max_length=ID_LENGTH)
    idempotency_key: str | None = key_field(128, default=None)
    seq: int = 0
    # How many of its images have finished, each way: kept with the image's own status
    # under the request's lock (the last image's stage closes the phase).
    images_completed: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    images_failed: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=1000)
    created_at: datetime = created_field()
    updated_at: datetime = created_field()
    # When the current phase began: phase durations for /metrics.
    phase_started_at: datetime | None = time_field()
    completed_at: datetime | None = time_field()
