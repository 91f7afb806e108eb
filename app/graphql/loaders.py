"""DataLoaders: every nested list and per-viewer field is fetched in one batch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

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
    """`read` opens a session to read in (the operation's, see `Context.read`)."""

    def __init__(self, read: Read, viewer: ViewerOf, *, cache: bool = True) -> None:
        self._read = read
        self._viewer = viewer
        self.user_by_id = DataLoader(self._user_by_id, cache=cache)
        self.image_by_id = DataLoader(self._image_by_id, cache=cache)
        # the viewer's likes and favorites of each model, as a set of types
        self.my_interactions = DataLoader(self._my_interactions, cache=cache)
        self.images_by_request = DataLoader(self._images_by_request, cache=cache)
        self.jobs_by_request = DataLoader(self._jobs_by_request, cache=cache)
        self.model_by_request = DataLoader(self._model_by_request, cache=cache)
        self.request_by_id = DataLoader(self._request_by_id, cache=cache)

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
