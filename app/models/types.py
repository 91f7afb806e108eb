"""GraphQL types of the model library."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from app.graphql.context import Info
from app.graphql.pagination import Edge, PageInfo
from app.tables import Model

if TYPE_CHECKING:
    from app.requests.types import GeneratedImageType, GenerationRequestType


@strawberry.enum(description="Who can see a model.")
class Visibility(Enum):
    PRIVATE = "PRIVATE"
    PUBLIC = "PUBLIC"


@strawberry.enum(description="Orders of the public gallery, all descending.")
class ModelSort(Enum):
    LATEST = "LATEST"
    POPULAR = "POPULAR"
    MOST_LIKED = "MOST_LIKED"
    MOST_DOWNLOADED = "MOST_DOWNLOADED"


@strawberry.type(description="What anyone may know of a model's owner.")
class PublicProfile:
    id: strawberry.ID = strawberry.field(description="Stable id of the user.")
    display_name: str = strawberry.field(description="Name shown to other users.")


@strawberry.type(name="Model", description="A 3D model in its owner's library.")
class ModelType:
    row: strawberry.Private[Model]

    @strawberry.field(description="Stable id of the model.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.row.id)

    @strawberry.field(description="Name shown in the library and the gallery.")
    def name(self) -> str:
        return self.row.name

    @strawberry.field(description="Free text from the owner.")
    def description(self) -> str | None:
        return self.row.description

    @strawberry.field(
        description="Every file of the model, the main one first: a GLB alone, or an OBJ "
        "with its material (MTL) and textures. Each URL is signed on its own, so load the "
        "material's textures from these URLs, not relative to the MTL."
    )
    def files(self, info: Info) -> list[ModelFileType]:
        files = self.row.files or [
            {
                "name": f"model.{self.row.format}",
                "key": self.row.file_key,
                "content_type": self.row.content_type,
                "size": self.row.file_size,
            }
        ]
        return [
            ModelFileType(
                name=file["name"],
                content_type=file["content_type"],
                size=file["size"],
                url=signed_url(info, file["key"], file["name"]),
            )
            for file in files
        ]

    @strawberry.field(description="File format of `fileUrl`, lower case: glb or obj.")
    def format(self) -> str:
        return self.row.format

    @strawberry.field(description="Size of the model's files in bytes, all together.")
    def file_size(self) -> int:
        return self.row.file_size

    @strawberry.field(description="READY once the file is stored.")
    def status(self) -> str:
        return self.row.status

    @strawberry.field(description="PRIVATE (owner only) or PUBLIC (the gallery).")
    def visibility(self) -> Visibility:
        return Visibility(self.row.visibility)

    @strawberry.field(description="When the model was last published (UTC); null if private.")
    def published_at(self) -> datetime | None:
        return self.row.published_at

    @strawberry.field(description="How many users like the model.")
    def like_count(self) -> int:
        return self.row.like_count

    @strawberry.field(description="How many users keep the model among their favorites.")
    def favorite_count(self) -> int:
        return self.row.favorite_count

    @strawberry.field(description="How many times the model was downloaded.")
    def download_count(self) -> int:
        return self.row.download_count

    @strawberry.field(description="Which 3D provider built the model.")
    def provider(self) -> str | None:
        return self.row.provider

    @strawberry.field(description="When the model was created (UTC).")
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field(description="Whether the viewer likes the model (false when anonymous).")
    async def liked_by_me(self, info: Info) -> bool:
        return "LIKE" in await info.context.loaders.my_interactions.load(self.row.id)

    @strawberry.field(description="Whether the viewer favorited it (false when anonymous).")
    async def favorited_by_me(self, info: Info) -> bool:
        return "FAVORITE" in await info.context.loaders.my_interactions.load(self.row.id)

    @strawberry.field(description="The owner's public profile.")
    async def owner(self, info: Info) -> PublicProfile | None:
        user = await info.context.loaders.user_by_id.load(self.row.owner_id)
        if user is None:
            return None
        return PublicProfile(id=strawberry.ID(user.id), display_name=user.display_name)

    @strawberry.field(description="The request that produced the model; owner only.")
    async def source_request(
        self, info: Info
    ) -> Annotated[GenerationRequestType, strawberry.lazy("app.requests.types")] | None:
        from app.requests.types import GenerationRequestType

        if not await self._viewer_owns(info) or self.row.request_id is None:
            return None
        row = await info.context.loaders.request_by_id.load(self.row.request_id)
        return GenerationRequestType(row=row) if row else None

    @strawberry.field(description="The image the model was built from; owner only.")
    async def source_image(
        self, info: Info
    ) -> Annotated[GeneratedImageType, strawberry.lazy("app.requests.types")] | None:
        from app.requests.types import GeneratedImageType

        if not await self._viewer_owns(info) or self.row.source_image_id is None:
            return None
        row = await info.context.loaders.image_by_id.load(self.row.source_image_id)
        return GeneratedImageType(row=row) if row else None

    @strawberry.field(description="A signed, expiring URL of the model file.")
    def file_url(self, info: Info) -> str:
        return signed_url(info, self.row.file_key, f"{self.row.id}.{self.row.format}")

    @strawberry.field(description="A signed, expiring URL of a preview image, if any.")
    def preview_url(self, info: Info) -> str | None:
        return signed_url(info, self.row.preview_key) if self.row.preview_key else None

    async def _viewer_owns(self, info: Info) -> bool:
        viewer = await info.context.viewer()
        return viewer is not None and viewer.id == self.row.owner_id


@strawberry.type(name="ModelFile", description="One file of a 3D model.")
class ModelFileType:
    name: str = strawberry.field(description="File name, e.g. model.obj, material.mtl.")
    content_type: str = strawberry.field(description="MIME type.")
    size: int = strawberry.field(description="Size in bytes.")
    url: str = strawberry.field(description="A signed, expiring URL of the file.")


@strawberry.type(description="A page of models.")
class ModelConnection:
    edges: list[Edge[ModelType]] = strawberry.field(description="This page's items.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")


@strawberry.type(description="A short-lived link to download a model file.")
class ModelDownload:
    url: str = strawberry.field(description="Signed URL of the file.")
    expires_at: datetime = strawberry.field(description="When the URL stops working (UTC).")
    model: ModelType = strawberry.field(description="The model, its download counted.")


@strawberry.type(description="The viewer's likes and favorites of one model.")
class InteractionStatus:
    model_id: strawberry.ID = strawberry.field(description="The model.")
    liked: bool = strawberry.field(description="The viewer likes it.")
    favorited: bool = strawberry.field(description="The viewer favorited it.")


@strawberry.input(description="Changes to a model; omitted fields stay as they are.")
class UpdateModelInput:
    name: str | None = strawberry.field(default=None, description="1-200 characters.")
    description: str | None = strawberry.field(
        default=None, description="At most 2000 characters; empty clears it."
    )


def signed_url(info: Info, key: str, filename: str | None = None) -> str:
    deps = info.context.deps
    url = deps.storage.url(key, expires_in=deps.settings.file_url_ttl_seconds, filename=filename)
    return info.context.absolute_url(url)
