"""DataLoaders: every nested list and per-viewer field is fetched in one batch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from app.models import repository as models
from app.requests import repository as requests
from app.tables import GeneratedImage, GenerationJob, GenerationRequest, Model, User
from app.users import repository as users

RowT = TypeVar("RowT")

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from app.auth import Viewer

    ViewerOf = Callable[[], Awaitable[Viewer | None]]
    Read = Callable[[], AbstractAsyncContextManager[AsyncSession]]


class Loaders:
    """`read` opens a session to read in (the operation's, see `Context.read`).

    Each loader is made on first use: a websocket context lives as long as its
    connection, and most never use most of them (ten thousand idle subscriptions
    held seven DataLoaders each).
    """

    def __init__(self, read: Read, viewer: ViewerOf, *, cache: bool = True) -> None:
        self._read = read
        self._viewer = viewer
        self._cache = cache

    def _loader(self, load: Callable[[list[Any]], Awaitable[list[Any]]]) -> DataLoader[Any, Any]:
        return DataLoader(load, cache=self._cache)

    @cached_property
    def user_by_id(self) -> DataLoader[str, User | None]:
        return self._loader(self._user_by_id)

    @cached_property
    def image_by_id(self) -> DataLoader[str, GeneratedImage | None]:
        return self._loader(self._image_by_id)

    @cached_property
    def my_interactions(self) -> DataLoader[str, frozenset[str]]:
        """The viewer's likes and favorites of each model, as a set of types."""
        return self._loader(self._my_interactions)

    @cached_property
    def images_by_request(self) -> DataLoader[str, list[GeneratedImage]]:
        return self._loader(self._images_by_request)

    @cached_property
    def jobs_by_request(self) -> DataLoader[str, list[GenerationJob]]:
        return self._loader(self._jobs_by_request)

    @cached_property
    def model_by_request(self) -> DataLoader[str, Model | None]:
        return self._loader(self._model_by_request)

    @cached_property
    def request_by_id(self) -> DataLoader[str, GenerationRequest | None]:
        return self._loader(self._request_by_id)

    async def _images_by_request(self, ids: Sequence[str]) -> list[list[GeneratedImage]]:
        return await self._many_each(requests.images_of, ids)

    async def _jobs_by_request(self, ids: Sequence[str]) -> list[list[GenerationJob]]:
        return await self._many_each(requests.jobs_of, ids)

    async def _many_each(
        self,
        fetch: Callable[[AsyncSession, Sequence[str]], Awaitable[Sequence[RowT]]],
        ids: Sequence[str],
    ) -> list[list[RowT]]:
        """One query for the whole batch; each request id gets its rows, in fetch order."""
        async with self._read() as session:
            rows = await fetch(session, ids)
        grouped: dict[str, list[RowT]] = defaultdict(list)
        for row in rows:
            grouped[row.request_id].append(row)  # type: ignore[attr-defined]
        return [grouped[i] for i in ids]

    async def _one_each(
        self,
        fetch: Callable[[AsyncSession, Sequence[str]], Awaitable[Sequence[RowT]]],
        ids: Sequence[str],
        key: Callable[[RowT], str | None] = lambda row: row.id,  # type: ignore[attr-defined]
    ) -> list[RowT | None]:
        """One query for the whole batch; each key gets its row or None."""
        async with self._read() as session:
            rows = await fetch(session, ids)
        found = {key(row): row for row in rows}
        return [found.get(i) for i in ids]

    async def _model_by_request(self, ids: Sequence[str]) -> list[Model | None]:
        return await self._one_each(models.by_request_ids, ids, lambda row: row.request_id)

    async def _request_by_id(self, ids: Sequence[str]) -> list[GenerationRequest | None]:
        return await self._one_each(requests.get_many, ids)

    async def _user_by_id(self, ids: Sequence[str]) -> list[User | None]:
        return await self._one_each(users.get_many, ids)

    async def _image_by_id(self, ids: Sequence[str]) -> list[GeneratedImage | None]:
        return await self._one_each(requests.images_by_ids, ids)

    async def _my_interactions(self, model_ids: Sequence[str]) -> list[frozenset[str]]:
        viewer = await self._viewer()
        if viewer is None:
            return [frozenset()] * len(model_ids)
        async with self._read() as session:
            rows = await models.interactions_of(session, viewer.id, model_ids)
        kinds: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            kinds[row.model_id].add(row.type)
        return [frozenset(kinds[i]) for i in model_ids]
