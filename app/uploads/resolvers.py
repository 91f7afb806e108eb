"""Mutations of the uploads room: a user's own image, in two ways (README: "Your own
image to 3D")."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.file_uploads import Upload

from app.errors import BadUserInput
from app.graphql.context import Info
from app.graphql.permissions import IsAuthenticated
from app.graphql.relay import parse_global_id
from app.uploads import service
from app.uploads.types import CreateImageUploadInput, ImageUploadForm, UploadedImageType, form_of


def upload_row_id(value: str, field: str = "id") -> str:
    """The row id of an UploadedImage's global id (or of the row id itself)."""
    parsed = parse_global_id(value)
    if parsed is not None:
        if parsed[0] != "UploadedImage":
            raise BadUserInput(f"{field} is not the id of an UploadedImage", field=field)
        return parsed[1]
    if len(value) != 32 or any(ch not in "0123456789abcdef" for ch in value):
        raise BadUserInput(f"{field} is not a valid id", field=field)
    return value


async def read_upload(file: Upload, limit: int) -> bytes:
    """The file's bytes, at most `limit` + 1 of them read: one more says it is too big
    (the body limit has refused anything much larger before it was parsed)."""
    read = getattr(file, "read", None)
    if read is None:
        raise BadUserInput("file must be a file part of a multipart request", field="file")
    data = await read(limit + 1)
    if not isinstance(data, bytes):
        raise BadUserInput("file must be a file part of a multipart request", field="file")
    if len(data) > limit:
        raise BadUserInput(
            f"the image was refused: the file is larger than {limit} bytes", field="file"
        )
    return data


@strawberry.type
class UploadMutations:
    @strawberry.mutation(
        description=(
            "Upload an image of your own in this request (GraphQL multipart request "
            "specification: `operations`, `map`, then the file part). It is checked (a "
            "PNG, JPEG or WebP by its content, within `LUMI_UPLOAD_MAX_BYTES` and "
            "`LUMI_UPLOAD_MAX_PIXELS`), turned upright and stripped of its metadata "
            "before it is stored; a bad file is BAD_USER_INPUT and nothing is kept. "
            "Pass the answer's id as `sourceImage` to `createRequest`."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def upload_image(
        self,
        info: Info,
        file: Annotated[Upload, strawberry.argument(description="The image file.")],
    ) -> UploadedImageType:
        viewer = await info.context.require_viewer()
        deps = info.context.deps
        await info.context.end_reads()
        data = await read_upload(file, deps.settings.upload_max_bytes)
        row = await service.receive(deps, viewer, data, getattr(file, "filename", None))
        return UploadedImageType(row=row)

    @strawberry.mutation(
        description=(
            "Open a presigned upload, for large files and browsers: POST the answer's "
            "`fields` and then the file to its `url` (multipart/form-data, the file last, "
            "named `file`), then call `completeImageUpload` (or pass the upload's id to "
            "`createRequest` at once). The form takes one file of the given type, up to "
            "`maxBytes`, until `expiresAt`."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def create_image_upload(
        self,
        info: Info,
        input: Annotated[
            CreateImageUploadInput, strawberry.argument(description="The file to come.")
        ],
    ) -> ImageUploadForm:
        viewer = await info.context.require_viewer()
        await info.context.end_reads()
        upload, form = await service.open_presigned(
            info.context.deps, viewer, input.content_type, input.size, input.filename
        )
        return form_of(info, upload, form.url, form.fields)

    @strawberry.mutation(
        description=(
            "Check the file sent to a presigned upload's form and store it clean: READY. "
            "A bad file is BAD_USER_INPUT, and the upload is gone with it; none sent yet "
            "is BAD_USER_INPUT too (send it, then call again). NOT_FOUND for an upload "
            "that is not the viewer's, expired or used."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def complete_image_upload(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The upload's global id.")],
    ) -> UploadedImageType:
        viewer = await info.context.require_viewer()
        await info.context.end_reads()
        row = await service.ready(info.context.deps, viewer, upload_row_id(id))
        return UploadedImageType(row=row)
