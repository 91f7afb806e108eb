from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field, id_field, time_field


class GenerationJob(SQLModel, table=True):
    """One unit of provider work (optimize a prompt, render an image, build a model).

    Actors claim a job by moving it out of PENDING in one conditional UPDATE; that
    claim is what makes a redelivered message a no-op.

    A waiting job's place in line is (`queue_rank`, `queued_at`, `id`): its request's
    priority queue first, then when it joined (or will join, for a retry) the queue.
    The broker is asked to run jobs in that order (the message goes to the request's
    priority queue when the job joins), and app/requests/queue_position.py counts a
    job's position over the index.
    """

    __tablename__ = "generation_jobs"
    __table_args__ = (
        Index("ix_generation_jobs_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_generation_jobs_status_next_poll_at", "status", "next_poll_at"),
        # "How many wait ahead of me" is a range count over this index, and the head of
        # the line its first entries (id: the line's tie-break; kind: the ETA's per-kind
        # counts need no row lookups).
        Index(
            "ix_generation_jobs_status_queue_rank_queued_at_id_kind",
            "status",
            "queue_rank",
            "queued_at",
            "id",
            "kind",
        ),
    )

    id: str = id_field()
    request_id: str = Field(foreign_key="generation_requests.id", max_length=ID_LENGTH, index=True)
    kind: str = Field(max_length=16)
    image_id: str | None = Field(default=None, max_length=ID_LENGTH)
    status: str = Field(default="PENDING", max_length=16)
    provider: str | None = Field(default=None, max_length=32)
    vendor_job_id: str | None = Field(default=None, max_length=128)
    attempt: int = 0
    poll_count: int = 0
    next_attempt_at: datetime | None = time_field()
    heartbeat_at: datetime | None = time_field()
    # When a poller should next ask the vendor about this 3D job (workers/poller.py);
    # while a poller holds the job, the end of its lease.
    next_poll_at: datetime | None = time_field()
    started_at: datetime | None = time_field()
    finished_at: datetime | None = time_field()
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=1000)
    # Its request's queue: 0 high, 1 default, 2 low (app/queue.py QUEUE_RANK).
    queue_rank: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    # When the job joined its queue, or is due to (a retry, a wait for a vendor slot).
    queued_at: datetime = created_field()
    created_at: datetime = created_field()
    updated_at: datetime = created_field()
