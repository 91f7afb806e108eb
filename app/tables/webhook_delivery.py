from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field, time_field
from app.tables.webhook_endpoint import URL_LENGTH

DELIVERY_ID_LENGTH = 40  # "msg_" + a 32-digit id


class WebhookDelivery(SQLModel, table=True):
    """The outbox: one event owed to one URL. Its id is the `webhook-id` header, the same
    on every attempt, so receivers can drop repeats; `body` is the exact JSON sent.

    `target` is the endpoint's id, or "request" for a request's own `webhookUrl`: a
    delivery waits while an earlier one (lower `seq`) of the same target and request is
    still PENDING, so a receiver gets a request's events in order."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_target_request_seq", "target", "request_id", "seq"),
        Index("ix_webhook_deliveries_owner_created", "owner_id", "created_at", "id"),
        # What the retention deletes: finished deliveries, oldest first.
        Index("ix_webhook_deliveries_status_updated_at", "status", "updated_at"),
    )

    id: str = Field(primary_key=True, max_length=DELIVERY_ID_LENGTH)
    owner_id: str = Field(foreign_key="users.id", max_length=ID_LENGTH)
    endpoint_id: str | None = Field(default=None, max_length=ID_LENGTH)
    target: str = Field(max_length=ID_LENGTH)
    url: str = Field(max_length=URL_LENGTH)
    request_id: str = Field(max_length=ID_LENGTH)  # no foreign key: outlives a deleted request
    seq: int
    user_seq: int
    event_type: str = Field(max_length=32)
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="PENDING", max_length=16)  # PENDING, DELIVERED, FAILED
    attempts: int = 0
    next_attempt_at: datetime | None = time_field()
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = created_field()
    updated_at: datetime = created_field()
    delivered_at: datetime | None = time_field()
