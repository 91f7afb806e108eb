"""Queries and mutations of the model library."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Annotated, Any

import strawberry

from app.errors import BadUserInput
from app.graphql.context import Info
from app.graphql.pagination import (
    DEFAULT_PAGE,
    MAX_PAGE,
    After,
    First,
    RankCursor,
    check_first,
    decode_cursor,
    decode_rank_cursor,
    encode_cursor,
    encode_rank_cursor,
    paginate,
)
from app.graphql.permissions import IsAnyone, IsAuthenticated
from app.graphql.relay import global_id
from app.models import repository, service, snapshots
from app.models.conversions import converted_file
from app.models.errors import ModelNotFound, RankingExpired
from app.models.loaders import ModelLoaders
from app.models.repository import Extras, ModelCard
from app.models.types import (
    Asked,
    Count,
    DownloadFormat,
    InteractionStatus,
    ModelConnection,
    ModelDownload,
    ModelSort,
    ModelType,
    UpdateModelInput,
    card_nodes,
    model_nodes,
)
from app.requests.service import check_id
from app.tables import Model, utcnow

ModelId = Annotated[
    strawberry.ID,
    strawberry.argument(description="The model's global id (its row id is accepted too)."),
]


@strawberry.type
class ModelQueries:
    @strawberry.field(
        description="The viewer's own models, newest first.", permission_classes=[IsAuthenticated]
    )
    async def my_models(
        self, info: Info, first: First = DEFAULT_PAGE, after: After = None
    ) -> ModelConnection:
        viewer = await info.context.require_viewer()
        limit, cursor = check_first(first), decode_cursor(after)
        position = (cursor.value, cursor.row_id) if cursor else None
        asked = Asked.of(info)
        extras = await asked.extras(info)
        async with info.context.read() as session:
            rows = await repository.list_owned(
                session, viewer.id, limit=limit + 1, after=position, extras=extras
            )
        return _connection(
            rows,
            card_nodes(rows[:limit], asked, extras),
            limit=limit,
            after=after,
            cursor_of=lambda r: encode_cursor(r.created_at, r.id),
            count=lambda session: repository.count_owned(session, viewer.id),
        )

    @strawberry.field(
        description=(
            "The public gallery. A walk through its pages sees each model at most once and "
            "skips none that stays public: LATEST lists the gallery as it was at the first "
            "page; the other sorts follow a ranking taken at most "
            "LUMI_GALLERY_RANKING_SECONDS before the first page, while each card shows its "
            "counts as they are now. Models published meanwhile appear on a new walk."
        ),
        permission_classes=[IsAnyone],
    )
    async def public_models(
        self,
        info: Info,
        first: First = DEFAULT_PAGE,
        after: After = None,
        sort: Annotated[
            ModelSort, strawberry.argument(description="The order, all descending.")
        ] = ModelSort.LATEST,
    ) -> ModelConnection:
        limit = check_first(first)
        if sort is ModelSort.LATEST:
            return await _latest(info, limit, after)
        return await _ranked(info, sort.value, limit, after)

    @strawberry.field(
        description="A model the viewer may see: their own, or a public one. Null, with "
        "NOT_FOUND in `errors`, for any other (the other fields of the query still answer).",
        permission_classes=[IsAnyone],
    )
    async def model(self, info: Info, id: ModelId) -> ModelType | None:
        viewer_id = await info.context.viewer_id()
        async with info.context.read() as session:
            row = await service.visible(session, viewer_id, id)
        return await _node(info, row)

    @strawberry.field(
        description="Models the viewer likes, latest like first.",
        permission_classes=[IsAuthenticated],
    )
    async def liked_models(
        self, info: Info, first: First = DEFAULT_PAGE, after: After = None
    ) -> ModelConnection:
        return await _interacted(info, "LIKE", first, after)

    @strawberry.field(
        description="Models the viewer favorited, latest first.",
        permission_classes=[IsAuthenticated],
    )
    async def favorited_models(
        self, info: Info, first: First = DEFAULT_PAGE, after: After = None
    ) -> ModelConnection:
        return await _interacted(info, "FAVORITE", first, after)

    @strawberry.field(
        description="The viewer's likes and favorites of many models in one round trip.",
        permission_classes=[IsAnyone],
    )
    async def interaction_status(
        self,
        info: Info,
        model_ids: Annotated[
            list[strawberry.ID],
            strawberry.argument(description=f"Global ids of models, at most {MAX_PAGE}."),
        ],
    ) -> list[InteractionStatus]:
        if len(model_ids) > MAX_PAGE:
            raise BadUserInput(f"at most {MAX_PAGE} model ids", field="modelIds")
        ids = [check_id(i, "modelIds") for i in model_ids]
        kinds = await ModelLoaders.of(info).my_interactions.load_many(ids)
        return [
            InteractionStatus(
                model_id=global_id("Model", i), liked="LIKE" in k, favorited="FAVORITE" in k
            )
            for i, k in zip(ids, kinds, strict=True)
        ]


async def _latest(info: Info, limit: int, after: str | None) -> ModelConnection:
    """LATEST by keyset on (published_at, id), as of the walk's first page."""
    cursor = decode_cursor(after)
    as_of = (cursor.as_of if cursor else None) or utcnow()
    position = (cursor.value, cursor.row_id) if cursor else None
    asked = Asked.of(info)
    extras = await asked.extras(info)
    async with info.context.read() as session:
        rows = await repository.list_public(
            session, "LATEST", limit=limit + 1, after=position, as_of=as_of, extras=extras
        )
    return _connection(
        rows,
        card_nodes(rows[:limit], asked, extras),
        limit=limit,
        after=after,
        cursor_of=lambda r: encode_cursor(r.published_at, r.id, as_of),  # type: ignore[arg-type]
        count=None,  # see ModelConnection.total_count
    )


async def _ranked(info: Info, sort: str, limit: int, after: str | None) -> ModelConnection:
    """A counter sort, from one ranking snapshot: the newest for a first page (see
    app/models/ranking.py), the cursor's for the pages after."""
    cursor = decode_rank_cursor(after, sort)
    if cursor is None:
        deps = info.context.deps
        version = (await deps.rankings.newest(deps.db, deps.public_changes)).version
    else:
        version = cursor.version
    asked = Asked.of(info)
    extras = await asked.extras(info)
    rows = await _ranked_rows(info, sort, version, limit, cursor, extras)
    if not rows and cursor is None:
        # A read transaction begun before the snapshot was committed (SQLite keeps the
        # snapshot a transaction began with) does not see it: read it in a new one.
        await info.context.end_reads()
        rows = await _ranked_rows(info, sort, version, limit, cursor, extras)
    positions = {card.id: position for card, position in rows}
    cards = [card for card, _ in rows]
    return _connection(
        cards,
        card_nodes(cards[:limit], asked, extras),
        limit=limit,
        after=after,
        cursor_of=lambda r: encode_rank_cursor(sort, version, positions[r.id]),
        count=None,  # see ModelConnection.total_count
    )


async def _ranked_rows(
    info: Info, sort: str, version: int, limit: int, cursor: RankCursor | None, extras: Extras
) -> list[tuple[ModelCard, int]]:
    """`limit + 1` rows of the snapshot; RankingExpired when a cursor's is gone (its page,
    like a last page's, is empty: only then is it looked up)."""
    after = cursor.position if cursor else None
    async with info.context.read() as session:
        rows = await repository.list_ranked(
            session, sort, version=version, limit=limit + 1, after=after, extras=extras
        )
        if not rows and cursor is not None and not await snapshots.exists(session, version):
            raise RankingExpired()
    return rows


async def _interacted(
    info: Info, kind: str, first: int | None, after: str | None
) -> ModelConnection:
    viewer = await info.context.require_viewer()
    limit, cursor = check_first(first), decode_cursor(after)
    position = (cursor.value, cursor.row_id) if cursor else None
    asked = Asked.of(info)
    extras = await asked.extras(info)
    async with info.context.read() as session:
        rows = await repository.list_interacted(
            session, viewer.id, kind, limit=limit + 1, after=position, extras=extras
        )
    stamps = {card.id: stamp for card, stamp in rows}
    cards = [card for card, _ in rows]
    return _connection(
        cards,
        card_nodes(cards[:limit], asked, extras),
        limit=limit,
        after=after,
        cursor_of=lambda r: encode_cursor(stamps[r.id], r.id),
        count=lambda session: repository.count_interacted(session, viewer.id, kind),
    )


def _connection(
    rows: Sequence[ModelCard],
    nodes: list[ModelType],
    *,
    limit: int,
    after: str | None,
    cursor_of: Callable[[ModelCard], str],
    count: Count | None,
) -> ModelConnection:
    """A page from `limit + 1` fetched rows and the nodes of the first `limit`; `count`
    counts the whole list, when the operation asks (`totalCount`)."""
    by_id = {node.row.id: node for node in nodes}
    edges, page = paginate(
        rows, limit=limit, after=after, cursor_of=cursor_of, node_of=lambda r: by_id[r.id]
    )
    return ModelConnection(edges=edges, page_info=page, count=count)


async def _node(info: Info, row: Model) -> ModelType:
    return (await model_nodes(info, [row]))[0]


async def _interact(info: Info, model_id: str, kind: str, *, on: bool) -> ModelType:
    viewer_id = await info.context.require_viewer_id()
    async with info.context.unit() as unit:
        row = await service.set_interaction(unit, viewer_id, model_id, kind, on=on)
    # Whether the viewer likes (or favorites) it now is what they just did.
    return (await model_nodes(info, [row], known={kind: on}))[0]


async def _visibility(info: Info, model_id: str, visibility: str) -> ModelType:
    viewer = await info.context.require_viewer()
    async with info.context.unit() as unit:
        row = await service.set_visibility(unit, viewer, model_id, visibility)
    return await _node(info, row)


@strawberry.type
class ModelMutations:
    @strawberry.mutation(
        description="Rename or describe one of the viewer's models.",
        permission_classes=[IsAuthenticated],
    )
    async def update_model(
        self,
        info: Info,
        id: ModelId,
        input: Annotated[UpdateModelInput, strawberry.argument(description="The changes.")],
    ) -> ModelType:
        viewer = await info.context.require_viewer()
        async with info.context.unit() as unit:
            row = await service.update_model(
                unit, viewer, id, name=input.name, description=input.description
            )
        return await _node(info, row)

    @strawberry.mutation(
        description="Show the model in the public gallery.", permission_classes=[IsAuthenticated]
    )
    async def publish_model(self, info: Info, id: ModelId) -> ModelType:
        return await _visibility(info, id, service.PUBLIC)

    @strawberry.mutation(
        description="Take the model out of the public gallery.",
        permission_classes=[IsAuthenticated],
    )
    async def unpublish_model(self, info: Info, id: ModelId) -> ModelType:
        return await _visibility(info, id, service.PRIVATE)

    @strawberry.mutation(
        description="Delete the model, its files, likes and favorites; returns its global id.",
        permission_classes=[IsAuthenticated],
    )
    async def delete_model(self, info: Info, id: ModelId) -> strawberry.ID:
        viewer = await info.context.require_viewer()
        async with info.context.unit() as unit:
            await service.delete_model(unit, viewer, id)
        return global_id("Model", id)

    @strawberry.mutation(
        description="A short-lived download URL; counts the download. The first download "
        "of a model in STL, PLY or USDZ converts it (once: later ones reuse the file, which "
        "`files` lists from then on).",
        permission_classes=[IsAuthenticated],
    )
    async def download_model(
        self,
        info: Info,
        id: ModelId,
        format: Annotated[
            DownloadFormat | None,
            strawberry.argument(
                description="The file's format; null: the format the model is stored in."
            ),
        ] = None,
    ) -> ModelDownload:
        viewer_id = await info.context.require_viewer_id()
        target = await _converted(info, viewer_id, id, format)
        async with info.context.unit() as unit:
            row = await service.count_download(unit, viewer_id, id)
        file = _download_file(row, target)
        ttl = info.context.deps.settings.download_url_ttl_seconds
        url = info.context.deps.storage.url(
            file["key"], expires_in=ttl, filename=f"{_filename(row)}.{file['format']}"
        )
        return ModelDownload(
            url=info.context.absolute_url(url),
            format=DownloadFormat(file["format"]),
            content_type=file["content_type"],
            expires_at=utcnow() + timedelta(seconds=ttl),
            model=await _node(info, row),
        )

    @strawberry.mutation(
        description="Count a view of a public model: call it once each time a page shows "
        "one. Views are written every LUMI_VIEW_FLUSH_SECONDS, so `viewCount` (here and "
        "everywhere) shows them after that. An owner's views of their own model, and views "
        "of private models, are not counted. Anyone may call it, signed in or not.",
        permission_classes=[IsAnyone],
    )
    async def view_model(self, info: Info, id: ModelId) -> ModelType:
        viewer_id = await info.context.viewer_id()
        async with info.context.read() as session:
            row = await service.visible(session, viewer_id, id)
        views = info.context.deps.views
        if views is not None:
            service.count_view(views, viewer_id, row)
        return await _node(info, row)

    @strawberry.mutation(description="Like a model (once).", permission_classes=[IsAuthenticated])
    async def like_model(self, info: Info, id: ModelId) -> ModelType:
        return await _interact(info, id, "LIKE", on=True)

    @strawberry.mutation(description="Remove a like.", permission_classes=[IsAuthenticated])
    async def unlike_model(self, info: Info, id: ModelId) -> ModelType:
        return await _interact(info, id, "LIKE", on=False)

    @strawberry.mutation(
        description="Add a model to favorites (once).", permission_classes=[IsAuthenticated]
    )
    async def favorite_model(self, info: Info, id: ModelId) -> ModelType:
        return await _interact(info, id, "FAVORITE", on=True)

    @strawberry.mutation(
        description="Remove a model from favorites.", permission_classes=[IsAuthenticated]
    )
    async def unfavorite_model(self, info: Info, id: ModelId) -> ModelType:
        return await _interact(info, id, "FAVORITE", on=False)


async def _converted(
    info: Info, viewer_id: str, model_id: str, wanted: DownloadFormat | None
) -> str | None:
    """The format the download converts the model to (None: its own file), converted
    and stored now if nobody did before; before the download is counted, so a model
    that cannot be converted counts no download."""
    if wanted is None:  # the stored file: no read before the count's
        return None
    async with info.context.read() as session:
        row = await service.visible(session, viewer_id, model_id)
    target = service.download_kind(row, wanted.value if wanted else None)
    if target is not None and converted_file(row, target) is None:
        await info.context.end_reads()  # no read transaction held while converting
        deps = info.context.deps
        await deps.conversions.file(row, target, storage=deps.storage, unit=deps.unit)
    return target


def _download_file(row: Model, target: str | None) -> dict[str, Any]:
    """The stored file a download hands out, with its format."""
    if target is None:
        return {"key": row.file_key, "format": row.format, "content_type": row.content_type}
    file = converted_file(row, target)
    if file is None:  # recorded before the count's read; only a deletion removes it
        raise ModelNotFound()
    return {**file, "format": target}


def _filename(row: Model) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in row.name)[:60].strip("-")
    return safe or row.id
