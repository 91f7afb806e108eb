from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field
from app.tables.webhook_endpoint import URL_LENGTH


class WebhookRequestUrl(SQLModel, table=True):
    """A request's own `webhookUrl`: its events are also POSTed there, signed with the
    owner's default secret (webhook_accounts). A table of its own rather than a column
    of generation_requests: few requests have one. No foreign key to the request: a
    deleted request's row is harmless and its pending deliveries still go out."""

    __tablename__ = "webhook_request_urls"

    request_id: str = Field(primary_key=True, max_length=ID_LENGTH)
    user_id: str = Field(foreign_key="users.id", max_length=ID_LENGTH)
    url: str = Field(max_length=URL_LENGTH)
    created_at: datetime = created_field()
