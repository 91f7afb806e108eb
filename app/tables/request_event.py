from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field, time_field


class RequestEvent(SQLModel, table=True):
    """Append-only history of a request: the log every subscription replays.

    `seq` numbers a request's events; `user_seq` numbers all events of one user, so
    `myRequestUpdates` can resume and detect gaps across requests too.
    """

    __tablename__ = "request_events"
    __table_args__ = (UniqueConstraint("user_id", "user_seq"),)

    request_id: str = Field(
        foreign_key="generation_requests.id", primary_key=True, max_length=ID_LENGTH
    )
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    user_id: str = Field(foreign_key="users.id", max_length=ID_LENGTH)
    user_seq: int
    status: str = Field(max_length=24)
    phase: str = Field(max_length=24)
    step: str = Field(default="", max_length=200)
    progress: float = 0.0
    progress_estimated: bool = False
    message: str | None = Field(default=None, max_length=500)
    error_code: str | None = Field(default=None, max_length=64)
    image_id: str | None = Field(default=None, max_length=ID_LENGTH)
    model_id: str | None = Field(default=None, max_length=ID_LENGTH)
    # Set when the event is about one job: a retry shows RETRYING and when it runs next.
    job_id: str | None = Field(default=None, max_length=ID_LENGTH)
    job_status: str | None = Field(default=None, max_length=16)
    attempt: int | None = None
    next_attempt_at: datetime | None = time_field()
    created_at: datetime = created_field()
