from __future__ import annotations

from datetime import datetime

import strawberry

from app.graphql.context import Info
from app.tables import Model


@strawberry.type(name="Model", description="A 3D model in its owner's library.")
class ModelType:
    row: strawberry.Private[Model]

    @strawberry.field(description="Stable id of the model.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.row.id)

    @strawberry.field(description="Name shown in the library and the gallery.")
    def name(self) -> str:
        return self.row.name

    @strawberry.field(description="File format of `fileUrl`, lower case: glb, obj ...")
    def format(self) -> str:
        return self.row.format

    @strawberry.field(description="Size of the model file in bytes.")
    def file_size(self) -> int:
        return self.row.file_size

    @strawberry.field(description="READY once the file is stored.")
    def status(self) -> str:
        return self.row.status

    @strawberry.field(description="PRIVATE (owner only) or PUBLIC (the gallery).")
    def visibility(self) -> str:
        return self.row.visibility

    @strawberry.field(description="Which 3D provider built the model.")
    def provider(self) -> str | None:
        return self.row.provider

    @strawberry.field(description="When the model was created (UTC).")
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field(description="A signed, expiring URL of the model file.")
    def file_url(self, info: Info) -> str:
        return signed_url(info, self.row.file_key, f"{self.row.id}.{self.row.format}")

    @strawberry.field(description="A signed, expiring URL of a preview image, if any.")
    def preview_url(self, info: Info) -> str | None:
        return signed_url(info, self.row.preview_key) if self.row.preview_key else None


def signed_url(info: Info, key: str, filename: str | None = None) -> str:
    deps = info.context.deps
    url = deps.storage.url(key, expires_in=deps.settings.file_url_ttl_seconds, filename=filename)
    return info.context.absolute_url(url)
