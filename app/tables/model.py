from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field, id_field, key_field, time_field


class Model(SQLModel, table=True):
    """A 3D model in its owner's library; `request_id` is unique: one model per request."""

    __tablename__ = "models"
    # One index per list and sort the API offers; `id` breaks ties for stable cursors.
    __table_args__ = (
        Index("ix_models_owner_created", "owner_id", "created_at", "id"),
        Index("ix_models_public_latest", "visibility", "published_at", "id"),
        Index("ix_models_public_popular", "visibility", "popularity", "id"),
        Index("ix_models_public_liked", "visibility", "like_count", "id"),
        Index("ix_models_public_downloaded", "visibility", "download_count", "id"),
        Index("ix_models_public_viewed", "visibility", "view_count", "id"),
    )

    id: str = id_field()
    owner_id: str = Field(foreign_key="users.id", max_length=ID_LENGTH)
    request_id: str | None = Field(
        default=None, foreign_key="generation_requests.id", max_length=ID_LENGTH, unique=True
    )
    source_image_id: str | None = Field(default=None, max_length=ID_LENGTH)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, sa_column=Column(Text))
    status: str = Field(default="READY", max_length=16)
    format: str = Field(default="glb", max_length=16)
    file_key: str = key_field(255)
    content_type: str = Field(default="model/gltf-binary", max_length=64)
    preview_key: str | None = key_field(255, default=None)
    # Every file of the model: [{"name", "key", "content_type", "size"}]; the main file
    # (`file_key`) first, then an OBJ's material and textures, then the files converted
    # for downloads in other formats (STL, PLY, USDZ), marked `"converted": true`
    # (app/models/conversions.py).
    files: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    file_size: int = 0
    provider: str | None = Field(default=None, max_length=32)
    visibility: str = Field(default="PRIVATE", max_length=16)
    published_at: datetime | None = time_field()
    like_count: int = 0
    favorite_count: int = 0
    download_count: int = 0
    # Written in batches (app/models/views.py), so it lags the views by a few seconds.
    view_count: int = 0
    # Weighted interest (2 per like, 3 per favorite, 1 per download), kept in step with
    # the counters in the same UPDATE so POPULAR can be served from an index.
    popularity: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = created_field()
    updated_at: datetime = created_field()
