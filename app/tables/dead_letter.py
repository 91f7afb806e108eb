from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field, id_field


class DeadLetter(SQLModel, table=True):
    """A stage message whose job failed for good: kept for `lumi queue dead | requeue`.

    Kept in the database rather than the broker, so it survives restarts and works the
    same with the embedded broker and with Redis.
    """

    __tablename__ = "dead_letters"

    id: str = id_field()
    job_id: str = Field(foreign_key="generation_jobs.id", max_length=ID_LENGTH, unique=True)
    request_id: str = Field(max_length=ID_LENGTH, index=True)
    stage: str = Field(max_length=32)
    queue: str = Field(max_length=16)
    attempts: int
    error_code: str = Field(max_length=64)
    error_message: str = Field(default="", max_length=1000)
    created_at: datetime = created_field()
