"""All SQL about 3D models and their likes and favorites."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Update,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select

from app.tables import GalleryRank, Model, ModelInteraction, User, utcnow

# What each interaction adds to the counters (and to popularity, which weighs them).
COUNTER = {"LIKE": "like_count", "FAVORITE": "favorite_count"}
WEIGHT = {"LIKE": 2, "FAVORITE": 3, "DOWNLOAD": 1}

# sort name → the column it orders by (descending, then id descending)
SORT_COLUMNS: dict[str, Any] = {
    "LATEST": Model.published_at,
    "POPULAR": Model.popularity,
    "MOST_LIKED": Model.like_count,
    "MOST_DOWNLOADED": Model.download_count,
    "MOST_VIEWED": Model.view_count,
}


async def by_request_ids(session: AsyncSession, request_ids: Sequence[str]) -> list[Model]:
    result = await session.execute(select(Model).where(col(Model.request_id).in_(request_ids)))
    return list(result.scalars())


# Built once (as the list statements below): every detail, like and download reads one.
_GET = select(Model).where(col(Model.id) == bindparam("model_id"))
_GET_FOR_UPDATE = _GET.with_for_update()


async def get(session: AsyncSession, model_id: str, *, for_update: bool = False) -> Model | None:
    query = _GET_FOR_UPDATE if for_update else _GET
    result = await session.execute(query, {"model_id": model_id})
    return result.scalar_one_or_none()


async def get_many(session: AsyncSession, ids: Sequence[str]) -> list[Model]:
    result = await session.execute(select(Model).where(col(Model.id).in_(ids)))
    return list(result.scalars())


def _after(column: Any, value: Any, model_id: Any) -> ColumnElement[bool]:
    """Rows strictly after (value, id) in descending order: the keyset condition."""
    return or_(column < value, and_(column == value, col(Model.id) < model_id))


class ModelRow(Protocol):
    """A model's columns: an ORM `Model`, or a row of a card query (read-only lists
    skip the ORM: building a table object per row cost more than the query)."""

    @property
    def id(self) -> str: ...
    @property
    def owner_id(self) -> str: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def source_image_id(self) -> str | None: ...
    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def file_key(self) -> str: ...
    @property
    def content_type(self) -> str: ...
    @property
    def preview_key(self) -> str | None: ...
    @property
    def files(self) -> list[dict[str, Any]] | None: ...
    @property
    def file_size(self) -> int: ...
    @property
    def provider(self) -> str | None: ...
    @property
    def visibility(self) -> str: ...
    @property
    def published_at(self) -> datetime | None: ...
    @property
    def like_count(self) -> int: ...
    @property
    def favorite_count(self) -> int: ...
    @property
    def download_count(self) -> int: ...
    @property
    def view_count(self) -> int: ...
    @property
    def popularity(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...


class ModelCard(ModelRow, Protocol):
    """A model's columns and, when its query was asked for them (`Extras`), its owner's
    display name and whether the viewer likes and favorites it."""

    @property
    def owner_name(self) -> str: ...
    @property
    def liked(self) -> bool: ...
    @property
    def favorited(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Extras:
    """What a card query adds to each model: the owner's name, and the viewer's likes
    and favorites (`viewer_id`; None adds nothing)."""

    owner: bool = False
    viewer_id: str | None = None


_MODEL_COLUMNS = tuple(c for c in Model.__table__.columns if c.key != "updated_at")  # type: ignore[attr-defined]

# The list statements are built once per shape and run with new parameters each time:
# building a statement (and its cache key) cost more than running it.


@functools.cache
def _cards(owner: bool, viewer: bool, *, ranked: bool = False) -> Select[Any]:
    """SELECT a model's columns and the asked extras, in one statement; with `viewer`,
    the parameter `viewer_id`; `ranked`, from the rows of a ranking snapshot first."""
    query: Select[Any] = select(*_MODEL_COLUMNS)
    if ranked:
        query = query.select_from(GalleryRank).join(
            Model, col(Model.id) == col(GalleryRank.model_id)
        )
    if owner:
        query = query.add_columns(col(User.display_name).label("owner_name")).join(
            User, col(User.id) == col(Model.owner_id)
        )
    if viewer:
        for kind, label in (("LIKE", "liked"), ("FAVORITE", "favorited")):
            other = aliased(ModelInteraction)  # a list of likes joins the table itself
            mine = exists().where(
                col(other.user_id) == bindparam("viewer_id"),
                col(other.model_id) == col(Model.id),
                col(other.type) == kind,
            )
            query = query.add_columns(mine.correlate(Model).label(label))
    return query


def _paged(query: Select[Any], column: Any, *, paged: bool) -> Select[Any]:
    """`query` ordered by `column` then id, descending, from after the parameters
    `after_value`, `after_id` when `paged`, `limit` rows."""
    if paged:
        query = query.where(_after(column, bindparam("after_value"), bindparam("after_id")))
    return query.order_by(column.desc(), col(Model.id).desc()).limit(bindparam("limit"))


def _params(
    extras: Extras, limit: int, after: tuple[Any, str] | None, **values: Any
) -> dict[str, Any]:
    params = {"limit": limit, **values}
    if extras.viewer_id is not None:
        params["viewer_id"] = extras.viewer_id
    if after is not None:
        params["after_value"], params["after_id"] = after
    return params


@functools.cache
def _owned_query(paged: bool, owner: bool, viewer: bool) -> Select[Any]:
    query = _cards(owner, viewer).where(col(Model.owner_id) == bindparam("owner_id"))
    return _paged(query, col(Model.created_at), paged=paged)


@functools.cache
def _public_query(sort: str, paged: bool, owner: bool, viewer: bool) -> Select[Any]:
    query = _cards(owner, viewer).where(
        col(Model.visibility) == "PUBLIC", col(Model.published_at) <= bindparam("as_of")
    )
    # Models first, read in order from ix_models_public_latest: MariaDB otherwise may
    # start from users (when few own many models) and sort every public model.
    query = query.prefix_with("STRAIGHT_JOIN", dialect="mysql")
    return _paged(query, col(SORT_COLUMNS[sort]), paged=paged)


@functools.cache
def _ranked_query(paged: bool, owner: bool, viewer: bool) -> Select[Any]:
    """The rows of one sort of one snapshot after a position (the primary key's range),
    joined to the live models: counts as they are now, and only models still public."""
    position = col(GalleryRank.position)
    query = (
        _cards(owner, viewer, ranked=True)
        .add_columns(position.label("rank_position"))
        .where(
            col(GalleryRank.version) == bindparam("version"),
            col(GalleryRank.sort) == bindparam("sort"),
            col(Model.visibility) == "PUBLIC",
        )
        # MariaDB would rather start from a model index (or the owners) and sort what
        # it joined; in the order written, a page reads `limit` ranks and their models.
        .prefix_with("STRAIGHT_JOIN", dialect="mysql")
    )
    if paged:
        query = query.where(position > bindparam("after_position"))
    return query.order_by(position).limit(bindparam("limit"))


@functools.cache
def _interacted_query(paged: bool, owner: bool, viewer: bool) -> Select[Any]:
    stamp = col(ModelInteraction.created_at)
    query = (
        _cards(owner, viewer)
        .add_columns(stamp.label("interacted_at"))
        .join(ModelInteraction, col(ModelInteraction.model_id) == col(Model.id))
        .where(
            col(ModelInteraction.user_id) == bindparam("user_id"),
            col(ModelInteraction.type) == bindparam("kind"),
            or_(col(Model.visibility) == "PUBLIC", col(Model.owner_id) == bindparam("user_id")),
        )
    )
    return _paged(query, stamp, paged=paged)


async def _fetch_cards(
    session: AsyncSession, query: Select[Any], params: dict[str, Any]
) -> list[ModelCard]:
    rows = (await session.execute(query, params)).all()
    return cast(list[ModelCard], rows)


async def list_owned(
    session: AsyncSession,
    owner_id: str,
    *,
    limit: int,
    after: tuple[Any, str] | None,
    extras: Extras = Extras(),
) -> list[ModelCard]:
    query = _owned_query(after is not None, extras.owner, extras.viewer_id is not None)
    return await _fetch_cards(session, query, _params(extras, limit, after, owner_id=owner_id))


async def list_public(
    session: AsyncSession,
    sort: str,
    *,
    limit: int,
    after: tuple[Any, str] | None,
    as_of: datetime,
    extras: Extras = Extras(),
) -> list[ModelCard]:
    """Public models by `sort` from their live columns (LATEST; the counter sorts read
    `list_ranked`); only those published by `as_of`, so a walk through the pages is not
    shifted by models published during it."""
    query = _public_query(sort, after is not None, extras.owner, extras.viewer_id is not None)
    return await _fetch_cards(session, query, _params(extras, limit, after, as_of=as_of))


async def list_ranked(
    session: AsyncSession,
    sort: str,
    *,
    version: int,
    limit: int,
    after: int | None,
    extras: Extras = Extras(),
) -> list[tuple[ModelCard, int]]:
    """Public models in the order of snapshot `version` of `sort` (a counter sort), after
    position `after`, each with its position."""
    query = _ranked_query(after is not None, extras.owner, extras.viewer_id is not None)
    params = _params(extras, limit, None, version=version, sort=sort)
    if after is not None:
        params["after_position"] = after
    rows = await _fetch_cards(session, query, params)
    return [(row, row.rank_position) for row in cast(list[Any], rows)]


async def list_interacted(
    session: AsyncSession,
    user_id: str,
    kind: str,
    *,
    limit: int,
    after: tuple[Any, str] | None,
    extras: Extras = Extras(),
) -> list[tuple[ModelCard, datetime]]:
    """Models `user_id` liked (or favorited) that they may still see, latest first."""
    query = _interacted_query(after is not None, extras.owner, extras.viewer_id is not None)
    params = _params(extras, limit, after, user_id=user_id, kind=kind)
    rows = await _fetch_cards(session, query, params)
    return [(row, row.interacted_at) for row in cast(list[Any], rows)]


async def count_owned(session: AsyncSession, owner_id: str) -> int:
    """How many models `owner_id` has: a count over the owner's index."""
    query = select(func.count()).where(col(Model.owner_id) == owner_id)
    return int((await session.execute(query)).scalar_one())


async def count_interacted(session: AsyncSession, user_id: str, kind: str) -> int:
    """How many models `list_interacted` lists in all: the user's likes (or favorites)
    of models they may still see."""
    query = (
        select(func.count())
        .select_from(ModelInteraction)
        .join(Model, col(ModelInteraction.model_id) == col(Model.id))
        .where(
            col(ModelInteraction.user_id) == user_id,
            col(ModelInteraction.type) == kind,
            or_(col(Model.visibility) == "PUBLIC", col(Model.owner_id) == user_id),
        )
    )
    return int((await session.execute(query)).scalar_one())


class InteractionRow(Protocol):
    """One like or favorite of a user: which model, which kind."""

    @property
    def model_id(self) -> str: ...
    @property
    def type(self) -> str: ...


_INTERACTIONS_TABLE = ModelInteraction.__table__  # type: ignore[attr-defined]
# Built once, of the table's columns: every signed-in gallery read asks, and building
# the statement, its cache key and an ORM object per row cost more than the query.
_INTERACTIONS_OF = select(_INTERACTIONS_TABLE.c.model_id, _INTERACTIONS_TABLE.c.type).where(
    _INTERACTIONS_TABLE.c.user_id == bindparam("user_id"),
    _INTERACTIONS_TABLE.c.model_id.in_(bindparam("model_ids", expanding=True)),
)


async def interactions_of(
    session: AsyncSession, user_id: str, model_ids: Sequence[str]
) -> list[InteractionRow]:
    """The user's likes and favorites of `model_ids`."""
    if not model_ids:
        return []
    params = {"user_id": user_id, "model_ids": list(model_ids)}
    rows = (await session.execute(_INTERACTIONS_OF, params)).all()
    return cast(list[InteractionRow], rows)


@functools.cache
def _add_interaction(dialect: str) -> Insert:
    """An INSERT of an interaction that leaves one already there alone, in one statement
    (no savepoint around it): ON CONFLICT DO NOTHING on SQLite, INSERT IGNORE on MariaDB
    (whose ON DUPLICATE KEY UPDATE counts a row found as a row changed)."""
    if dialect == "sqlite":
        return sqlite_insert(_INTERACTIONS_TABLE).on_conflict_do_nothing()
    return insert(_INTERACTIONS_TABLE).prefix_with("IGNORE", dialect="mysql")


async def add_interaction(session: AsyncSession, user_id: str, model_id: str, kind: str) -> bool:
    """Records the like or favorite; False (nothing written) if it existed.

    The primary key (user, model, type) decides: of two concurrent identical likes, one
    inserts and the other meets the key and changes nothing.
    """
    statement = _add_interaction(session.get_bind().dialect.name)
    values = {"user_id": user_id, "model_id": model_id, "type": kind, "created_at": utcnow()}
    result = await session.execute(statement, values)
    return bool(getattr(result, "rowcount", 0) == 1)


_REMOVE_INTERACTION = delete(_INTERACTIONS_TABLE).where(
    _INTERACTIONS_TABLE.c.user_id == bindparam("user_id"),
    _INTERACTIONS_TABLE.c.model_id == bindparam("model_id"),
    _INTERACTIONS_TABLE.c.type == bindparam("kind"),
)


async def remove_interaction(session: AsyncSession, user_id: str, model_id: str, kind: str) -> bool:
    """Removes the like or favorite; False (nothing written) if there was none."""
    values = {"user_id": user_id, "model_id": model_id, "kind": kind}
    result = await session.execute(_REMOVE_INTERACTION, values)
    return bool(getattr(result, "rowcount", 0) == 1)


async def count(session: AsyncSession, model: Model, kind: str, step: int) -> None:
    """Moves a counter of `model` (LIKE, FAVORITE or DOWNLOAD) and its popularity by
    `step`, in one atomic UPDATE: counters never lose a concurrent change.

    `model` must have been read with its row locked (`get(for_update=True)`; on SQLite
    a write transaction is the only writer): nobody else can have moved its counters
    since, so it is brought to the stored values here, without reading it again.
    """
    counter = COUNTER.get(kind, "download_count")
    now = utcnow()
    values = {"model_id": model.id, "step": step, "weighted": WEIGHT[kind] * step, "now": now}
    await session.execute(_count_statement(counter), values)
    set_committed_value(model, counter, getattr(model, counter) + step)
    set_committed_value(model, "popularity", model.popularity + WEIGHT[kind] * step)
    set_committed_value(model, "updated_at", now)


@functools.cache
def _count_statement(counter: str) -> Update:
    models = Model.__table__  # type: ignore[attr-defined]
    return (
        update(models)
        .where(models.c.id == bindparam("model_id"))
        .values(
            {
                counter: models.c[counter] + bindparam("step"),
                "popularity": models.c.popularity + bindparam("weighted"),
                "updated_at": bindparam("now", type_=models.c.updated_at.type),
            }
        )
    )


async def add_views(session: AsyncSession, views: Mapping[str, int]) -> None:
    """Adds `views[id]` to each model's view count, in ONE statement for them all:
    `view_count = view_count + CASE id WHEN ... END` (a model deleted meanwhile matches
    nothing). Neither `updated_at` nor popularity moves: a view changes nothing of it."""
    if not views:
        return
    models = Model.__table__  # type: ignore[attr-defined]
    added = case(
        {model_id: literal(count) for model_id, count in views.items()},
        value=models.c.id,
        else_=literal(0),
    )
    await session.execute(
        update(models)
        .where(models.c.id.in_(list(views)))
        .values(view_count=models.c.view_count + added)
    )


async def detach_from_request(session: AsyncSession, request_id: str) -> None:
    """The model made by a request being deleted stays in its owner's library, with no
    source request or image any more."""
    await session.execute(
        update(Model)
        .where(col(Model.request_id) == request_id)
        .values(request_id=None, source_image_id=None, updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )


async def stored_keys(session: AsyncSession, batch: int = 1000) -> AsyncIterator[str]:
    """Every storage key any model refers to (its file, preview and other files),
    streamed in batches; a key may come more than once."""
    query = select(Model.file_key, Model.preview_key, Model.files)
    result = await session.stream(query.execution_options(yield_per=batch))
    async for file_key, preview_key, files in result:
        yield file_key
        if preview_key:
            yield preview_key
        for file in files or []:
            yield file["key"]


async def delete_model(session: AsyncSession, model_id: str) -> None:
    await session.execute(
        delete(ModelInteraction).where(col(ModelInteraction.model_id) == model_id)
    )
    await session.execute(
        delete(Model).where(col(Model.id) == model_id),
        execution_options={"synchronize_session": False},
    )
