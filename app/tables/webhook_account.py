from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field, time_field
from app.tables.webhook_endpoint import SECRET_LENGTH


class WebhookAccount(SQLModel, table=True):
    """A user whose events may become webhook deliveries: the outbox's cursor over their
    event log, and the default secret that signs calls to a request's own `webhookUrl`.

    `cursor` is the last `user_seq` turned into deliveries; it moves in the transaction
    that writes them, so each event enters the outbox exactly once. Only users with an
    endpoint or a request with a `webhookUrl` have a row."""

    __tablename__ = "webhook_accounts"

    user_id: str = Field(foreign_key="users.id", primary_key=True, max_length=ID_LENGTH)
    cursor: int = 0
    secret: str = Field(max_length=SECRET_LENGTH)
    previous_secret: str | None = Field(default=None, max_length=SECRET_LENGTH)
    previous_secret_expires_at: datetime | None = time_field()
    created_at: datetime = created_field()
