"""GraphQL types of the model library."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from app.graphql.context import Info
from app.graphql.enums import described
from app.graphql.lookahead import selected_names
from app.graphql.pagination import Edge, PageInfo
from app.graphql.relay import Node, global_id, load_node
from app.models.loaders import ModelLoaders
from app.models.repository import Extras, ModelCard, ModelRow
from app.models.service import can_see
from app.users.loaders import UserLoaders
from app.users.types import PublicProfile

if TYPE_CHECKING:
    # Only named for the type checker: the schema finds them through strawberry.lazy, and
    # `load_node` makes them, so this room never imports the requests room's types.
    from app.requests.types import GeneratedImageType, GenerationRequestType


@described(
    description="Who can see a model.",
    values={
        "PRIVATE": "Its owner only.",
        "PUBLIC": "Anyone, in the public gallery.",
    },
)
class Visibility(Enum):
    PRIVATE = "PRIVATE"
    PUBLIC = "PUBLIC"


@described(
    description="Orders of the public gallery, all descending.",
    values={
        "LATEST": "Most recently published first.",
        "POPULAR": "Most popular first: 2 per like, 3 per favorite, 1 per download.",
        "MOST_LIKED": "Most liked first.",
        "MOST_DOWNLOADED": "Most downloaded first.",
        "MOST_VIEWED": "Most viewed first (views written every few seconds).",
    },
)
class ModelSort(Enum):
    LATEST = "LATEST"
    POPULAR = "POPULAR"
    MOST_LIKED = "MOST_LIKED"
    MOST_DOWNLOADED = "MOST_DOWNLOADED"
    MOST_VIEWED = "MOST_VIEWED"


@described(
    description="3D file formats.",
    values={
        "GLB": "Binary glTF: one file, textures inside.",
        "OBJ": "Wavefront OBJ, with its material (MTL) and texture files.",
    },
)
class ModelFormat(Enum):
    GLB = "glb"
    OBJ = "obj"


# Not ModelFormat: that one is also what a request may ask a 3D vendor for, and no
# vendor makes STL, PLY or USDZ; those are converted from the stored model.
@described(
    description="Formats a model can be downloaded in.",
    values={
        "GLB": "Binary glTF: only for a model stored as GLB.",
        "OBJ": "Wavefront OBJ (its main file; `files` lists the material and textures): "
        "only for a model stored as OBJ.",
        "STL": "STL (binary), the mesh alone, converted from the stored model.",
        "PLY": "PLY (binary), the mesh alone, converted from the stored model.",
        "USDZ": "USDZ (what AR Quick Look opens): the mesh with its base colour texture "
        "and material from a GLB, the mesh alone from an OBJ; converted from the stored "
        "model.",
    },
)
class DownloadFormat(Enum):
    GLB = "glb"
    OBJ = "obj"
    STL = "stl"
    PLY = "ply"
    USDZ = "usdz"


@described(
    description="Where a model is.",
    values={
        "READY": "Its files are stored: ready to use.",
    },
)
class ModelStatus(Enum):
    READY = "READY"


@strawberry.type(name="Model", description="A 3D model in its owner's library.")
class ModelType(Node):
    """Fields are copied from the row and from batch loads, so they resolve by attribute,
    the cheapest path (a resolver per field of every node was most of a gallery page's
    cost). Build nodes with `model_nodes` or `card_nodes`: they load the viewer's likes
    and the owners' profiles, once for all the nodes, when the operation asks for them."""

    id: strawberry.ID = strawberry.field(description="Global id of the model.")
    name: str = strawberry.field(description="Name shown in the library and the gallery.")
    description: str | None = strawberry.field(description="Free text from the owner.")

    format: ModelFormat = strawberry.field(description="File format of `fileUrl`: GLB or OBJ.")
    file_size: int = strawberry.field(
        description="Size of the model's own files in bytes, all together (files converted "
        "for downloads in other formats not included)."
    )
    status: ModelStatus = strawberry.field(description="READY once the file is stored.")
    visibility: Visibility = strawberry.field(
        description="PRIVATE (owner only) or PUBLIC (the gallery)."
    )
    published_at: datetime | None = strawberry.field(
        description="When the model was last published (UTC); null if private."
    )
    like_count: int = strawberry.field(description="How many users like the model.")
    favorite_count: int = strawberry.field(
        description="How many users keep the model among their favorites."
    )
    download_count: int = strawberry.field(description="How many times the model was downloaded.")
    view_count: int = strawberry.field(
        description="How many times the model was viewed while public (`viewModel`); "
        "written every few seconds, so the newest views may not show yet."
    )
    provider: str | None = strawberry.field(description="Which 3D provider built the model.")
    created_at: datetime = strawberry.field(description="When the model was created (UTC).")

    liked_by_me: bool = strawberry.field(
        description="Whether the viewer likes the model (false when anonymous)."
    )
    favorited_by_me: bool = strawberry.field(
        description="Whether the viewer favorited it (false when anonymous)."
    )
    owner: PublicProfile | None = strawberry.field(description="The owner's public profile.")

    row: strawberry.Private[ModelRow]

    @classmethod
    def of(
        cls,
        row: ModelRow,
        *,
        kinds: frozenset[str] | None = None,
        owner: PublicProfile | None = None,
    ) -> ModelType:
        """`kinds`: the viewer's LIKE and FAVORITE of it, and `owner`, loaded in batches
        (`model_nodes`, `card_nodes`) when the operation asks for them; None otherwise."""
        return cls(
            id=global_id("Model", row.id),
            name=row.name,
            description=row.description,
            format=ModelFormat(row.format),
            file_size=row.file_size,
            status=ModelStatus(row.status),
            visibility=Visibility(row.visibility),
            published_at=row.published_at,
            like_count=row.like_count,
            favorite_count=row.favorite_count,
            download_count=row.download_count,
            view_count=row.view_count,
            provider=row.provider,
            created_at=row.created_at,
            liked_by_me=_NOT_LOADED if kinds is None else "LIKE" in kinds,
            favorited_by_me=_NOT_LOADED if kinds is None else "FAVORITE" in kinds,
            owner=owner,
            row=row,
        )

    @classmethod
    async def resolve_nodes(cls, info: Info, ids: Sequence[str]) -> list[ModelType | None]:
        """Those the viewer may see: their own, and public ones."""
        viewer_id = await info.context.viewer_id()
        rows = await ModelLoaders.of(info).model_by_id.load_many(ids)
        visible = [row for row in rows if row is not None and can_see(row, viewer_id)]
        nodes = {node.row.id: node for node in await model_nodes(info, visible)}
        return [nodes.get(i) for i in ids]

    @strawberry.field(description="The request that produced the model; owner only.")
    async def source_request(
        self, info: Info
    ) -> Annotated[GenerationRequestType, strawberry.lazy("app.requests.types")] | None:
        if not await self._viewer_owns(info) or self.row.request_id is None:
            return None
        node = await load_node(info, "GenerationRequest", self.row.request_id)
        return cast("GenerationRequestType | None", node)

    @strawberry.field(description="The image the model was built from; owner only.")
    async def source_image(
        self, info: Info
    ) -> Annotated[GeneratedImageType, strawberry.lazy("app.requests.types")] | None:
        if not await self._viewer_owns(info) or self.row.source_image_id is None:
            return None
        node = await load_node(info, "GeneratedImage", self.row.source_image_id)
        return cast("GeneratedImageType | None", node)

    @strawberry.field(
        description="Every file of the model, the main one first: a GLB alone, or an OBJ "
        "with its material (MTL) and textures. Each URL is signed on its own, so load the "
        "material's textures from these URLs, not relative to the MTL. Then the files "
        "converted for downloads in other formats (model.stl, model.ply; `converted`), once "
        "someone has downloaded the model in that format."
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
                converted=bool(file.get("converted")),
            )
            for file in files
        ]

    @strawberry.field(description="A signed, expiring URL of the model file.")
    def file_url(self, info: Info) -> str:
        return signed_url(info, self.row.file_key, f"{self.row.id}.{self.row.format}")

    @strawberry.field(description="A signed, expiring URL of a preview image, if any.")
    def preview_url(self, info: Info) -> str | None:
        return signed_url(info, self.row.preview_key) if self.row.preview_key else None

    async def _viewer_owns(self, info: Info) -> bool:
        viewer = await info.context.viewer()
        return viewer is not None and viewer.id == self.row.owner_id


# Fields of a model that need more than its row: loaded in batches, when asked for.
_FLAG_KINDS = {"likedByMe": "LIKE", "favoritedByMe": "FAVORITE"}
_OWNER_FIELDS = frozenset({"owner"})
# What a non-null field holds when nobody loaded it: resolving it is a GraphQL error
# (loud), never a quiet `false`. Loading follows the operation's own selection, so
# this is a guard against a node built by hand.
_NOT_LOADED: Any = None


@dataclass(frozen=True, slots=True)
class Asked:
    """Which of a model's batch-loaded fields the operation asks for under a field."""

    flags: frozenset[str]  # the kinds of likedByMe (LIKE) and favoritedByMe (FAVORITE)
    owner: bool

    @property
    def kinds(self) -> bool:
        return bool(self.flags)

    @classmethod
    def of(cls, info: Info) -> Asked:
        names = selected_names(info)
        flags = frozenset(kind for name, kind in _FLAG_KINDS.items() if name in names)
        return cls(flags=flags, owner=bool(names & _OWNER_FIELDS))

    async def extras(self, info: Info) -> Extras:
        """What a card query must add to each row for these fields (see `card_nodes`)."""
        viewer_id = await info.context.viewer_id() if self.kinds else None
        return Extras(owner=self.owner, viewer_id=viewer_id)


def card_nodes(rows: Sequence[ModelCard], asked: Asked, extras: Extras) -> list[ModelType]:
    """Nodes from the rows of a card query made with `extras` (one statement for a page)."""
    return [
        ModelType.of(
            row,
            kinds=_card_kinds(row, asked, extras),
            owner=PublicProfile.of(row.owner_id, row.owner_name) if asked.owner else None,
        )
        for row in rows
    ]


def _card_kinds(row: ModelCard, asked: Asked, extras: Extras) -> frozenset[str] | None:
    if not asked.kinds:
        return None
    if extras.viewer_id is None:  # anonymous: likes nothing
        return frozenset()
    return _KINDS[bool(row.liked), bool(row.favorited)]


_KINDS = {
    (True, True): frozenset({"LIKE", "FAVORITE"}),
    (True, False): frozenset({"LIKE"}),
    (False, True): frozenset({"FAVORITE"}),
    (False, False): frozenset(),
}


async def model_nodes(
    info: Info, rows: Sequence[ModelRow], *, known: Mapping[str, bool] | None = None
) -> list[ModelType]:
    """Nodes for `rows`, with the viewer's likes and favorites and the owners' profiles of
    all of them loaded at once (a batch each, through the operation's DataLoaders, so
    the nodes of many parents share them) when the operation asks for them anywhere
    under the current field. Those fields then resolve without awaiting. The two loads
    go one after the other, so both can use the operation's one session.

    `known`: whether the viewer has each kind (LIKE, FAVORITE) of every row, as far as
    the caller knows (a like just made): no load when it answers every flag asked."""
    if not rows:
        return []
    asked = Asked.of(info)
    kinds: Sequence[frozenset[str] | None] = [None] * len(rows)
    profiles: Sequence[PublicProfile | None] = [None] * len(rows)
    if known is not None and asked.flags <= known.keys():
        kinds = [frozenset(kind for kind in asked.flags if known[kind])] * len(rows)
    elif asked.kinds:
        loaders = ModelLoaders.of(info)
        kinds = await loaders.my_interactions.load_many([row.id for row in rows])
    if asked.owner:
        users = await UserLoaders.of(info).user_by_id.load_many([row.owner_id for row in rows])
        profiles = [
            PublicProfile.of(user.id, user.display_name) if user else None for user in users
        ]
    return [
        ModelType.of(row, kinds=k, owner=p) for row, k, p in zip(rows, kinds, profiles, strict=True)
    ]


@strawberry.type(name="ModelFile", description="One file of a 3D model.")
class ModelFileType:
    name: str = strawberry.field(description="File name, e.g. model.obj, material.mtl.")
    content_type: str = strawberry.field(description="MIME type.")
    size: int = strawberry.field(description="Size in bytes.")
    url: str = strawberry.field(description="A signed, expiring URL of the file.")
    converted: bool = strawberry.field(
        description="Made from the model for a download in another format (STL, PLY), "
        "rather than one of the model's own files."
    )


Count = Callable[[AsyncSession], Awaitable[int]]


@strawberry.type(description="A page of models.")
class ModelConnection:
    edges: list[Edge[ModelType]] = strawberry.field(description="This page's items.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
    count: strawberry.Private[Count | None]

    @strawberry.field(
        description="How many models the whole list holds, all pages. Null for the public "
        "gallery: counting it would read the whole gallery's index on every page, for "
        "every visitor."
    )
    async def total_count(self, info: Info) -> int | None:
        if self.count is None:
            return None
        async with info.context.read() as session:
            return await self.count(session)


@strawberry.type(description="A short-lived link to download a model file.")
class ModelDownload:
    url: str = strawberry.field(description="Signed URL of the file.")
    format: DownloadFormat = strawberry.field(description="The file's format.")
    content_type: str = strawberry.field(description="The file's MIME type.")
    expires_at: datetime = strawberry.field(description="When the URL stops working (UTC).")
    model: ModelType = strawberry.field(description="The model, its download counted.")


@strawberry.type(description="The viewer's likes and favorites of one model.")
class InteractionStatus:
    model_id: strawberry.ID = strawberry.field(description="Global id of the model.")
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
