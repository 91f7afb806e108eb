"""GraphQL types of the uploads room."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import cast

import strawberry
from strawberry.scalars import JSON

from app.graphql.context import Info
from app.graphql.enums import described
from app.graphql.relay import Node, global_id
from app.models.types import signed_url
from app.tables import UploadedImage, utcnow
from app.uploads import repository


@described(
    description="Where an uploaded image is.",
    values={
        "PENDING": "A presigned upload: the file is (to be) sent to its form, not checked yet.",
        "READY": "Checked and stored: pass its id as `sourceImage` to `createRequest`.",
    },
)
class UploadStatus(Enum):
    PENDING = "PENDING"
    READY = "READY"


@strawberry.type(
    name="UploadedImage",
    description="An image of the viewer's own, waiting to be turned into a 3D model by "
    "`createRequest(input: {sourceImage})`. Used once; deleted unused after "
    "`LUMI_UPLOAD_TTL_SECONDS`.",
)
class UploadedImageType(Node):
    row: strawberry.Private[UploadedImage]

    @classmethod
    async def resolve_nodes(cls, info: Info, ids: Sequence[str]) -> list[UploadedImageType | None]:
        """The viewer's own unexpired uploads."""
        viewer_id = await info.context.viewer_id()
        if viewer_id is None:
            return [None for _ in ids]
        async with info.context.read() as session:
            rows = {row.id: row for row in await repository.of_ids(session, list(ids))}
        now = utcnow()
        found = [rows.get(i) for i in ids]
        return [
            cls(row=row) if row and row.owner_id == viewer_id and row.expires_at >= now else None
            for row in found
        ]

    id: strawberry.ID = strawberry.field(
        resolver=lambda root: global_id("UploadedImage", root.row.id),
        description="Global id of the upload; pass it as `sourceImage` to `createRequest`.",
    )

    @strawberry.field(description="PENDING until the file is checked, then READY.")
    def status(self) -> UploadStatus:
        return UploadStatus(self.row.status)

    @strawberry.field(
        description="MIME type of the stored image (image/png, image/jpeg or image/webp): "
        "what the file is, once checked; the announced type while PENDING."
    )
    def content_type(self) -> str:
        return self.row.content_type

    @strawberry.field(description="Width in pixels of the stored (upright) image, once READY.")
    def width(self) -> int | None:
        return self.row.width

    @strawberry.field(description="Height in pixels of the stored (upright) image, once READY.")
    def height(self) -> int | None:
        return self.row.height

    @strawberry.field(description="Size in bytes of the stored image, once READY.")
    def size(self) -> int | None:
        return self.row.size

    @strawberry.field(description="The file's name as uploaded, without folders, if given.")
    def filename(self) -> str | None:
        return self.row.filename

    @strawberry.field(description="Signed, expiring URL of the stored image, once READY.")
    def url(self, info: Info) -> str | None:
        return signed_url(info, self.row.storage_key) if self.row.status == "READY" else None

    @strawberry.field(description="When the upload was made (UTC).")
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field(description="When it is deleted if no request has used it (UTC).")
    def expires_at(self) -> datetime:
        return self.row.expires_at


@strawberry.type(
    name="ImageUploadForm",
    description="Where to send the file of a presigned upload: POST `fields` and then the "
    "file as `file` (the last field), as multipart/form-data, to `url`. The same form "
    "for S3 and for the gateway's own storage.",
)
class ImageUploadForm:
    upload: UploadedImageType = strawberry.field(
        description="The upload, PENDING; `completeImageUpload` or `createRequest` checks it."
    )
    url: str = strawberry.field(description="Where to POST the form.")
    fields: JSON = strawberry.field(
        description="Form fields to send as given, before the file (a JSON object of strings)."
    )
    expires_at: datetime = strawberry.field(description="The form is refused after this (UTC).")
    max_bytes: int = strawberry.field(description="The largest file the form takes, in bytes.")


@strawberry.input(description="A presigned upload to open.")
class CreateImageUploadInput:
    content_type: str = strawberry.field(
        description="image/png, image/jpeg or image/webp: the form takes only this type "
        "(the file itself is checked afterwards, by its content)."
    )
    size: int | None = strawberry.field(
        default=None,
        description="The file's size in bytes, if known: refused at once when over the limit.",
    )
    filename: str | None = strawberry.field(
        default=None, description="The file's name, for naming the model made from it."
    )


def form_of(info: Info, upload: UploadedImage, url: str, fields: dict[str, str]) -> ImageUploadForm:
    settings = info.context.deps.settings
    return ImageUploadForm(
        upload=UploadedImageType(row=upload),
        url=info.context.absolute_url(url),
        fields=cast("JSON", fields),
        expires_at=utcnow().replace(microsecond=0)
        + timedelta(seconds=settings.upload_url_ttl_seconds),
        max_bytes=settings.upload_max_bytes,
    )
