from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, UtcDateTime, created_field, id_field, key_field


class UploadedImage(SQLModel, table=True):
    """An image a user brought, before a request uses it (README: "Your own image to 3D").

    PENDING: a presigned upload was handed out; the raw bytes (if any were sent yet) wait
    at `storage_key` in quarantine, unread. READY: validated and re-encoded, stored at
    `storage_key`. A request that uses it takes the file over as its one image and the
    row goes: an upload is used once. `expires_at` is when an unused one is deleted.
    """

    __tablename__ = "uploaded_images"
    __table_args__ = (Index("ix_uploaded_images_expires_at", "expires_at"),)

    id: str = id_field()
    owner_id: str = Field(foreign_key="users.id", max_length=ID_LENGTH, index=True)
    status: str = Field(default="PENDING", max_length=16)
    storage_key: str = key_field(255)
    filename: str | None = Field(default=None, max_length=100)
    content_type: str = Field(max_length=64)
    width: int | None = None
    height: int | None = None
    size: int | None = None
    created_at: datetime = created_field()
    expires_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
