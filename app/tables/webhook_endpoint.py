from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field, id_field, time_field

URL_LENGTH = 2000
SECRET_LENGTH = 100  # "whsec_" + base64 of up to 64 bytes (94)


class WebhookEndpoint(SQLModel, table=True):
    """A URL a user registered to receive their requests' events (app/webhooks).

    `after_user_seq` is the user's last event number when it was registered: events
    before it are not sent to it. `previous_secret` still signs until
    `previous_secret_expires_at`, so receivers can switch secrets without losing a call.
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_owner_created", "owner_id", "created_at", "id"),)

    id: str = id_field()
    owner_id: str = Field(foreign_key="users.id", max_length=ID_LENGTH)
    url: str = Field(max_length=URL_LENGTH)
    events: str = Field(max_length=64)  # comma-separated WebhookEvent values
    secret: str = Field(max_length=SECRET_LENGTH)
    previous_secret: str | None = Field(default=None, max_length=SECRET_LENGTH)
    previous_secret_expires_at: datetime | None = time_field()
    after_user_seq: int = 0
    created_at: datetime = created_field()
    updated_at: datetime = created_field()
