"""DataLoaders: every nested list and per-viewer field is fetched in one batch.

Each room keeps its loaders in its own `loaders.py`, as a `LoaderSet`; an operation's
`Loaders` makes each room's set on first use. The kit knows no room.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from typing import Self

    from app.auth import Viewer
    from app.graphql.context import Info

    ViewerOf = Callable[[], Awaitable[Viewer | None]]
    Read = Callable[[], AbstractAsyncContextManager[AsyncSession]]

RowT = TypeVar("RowT")
SetT = TypeVar("SetT", bound="LoaderSet")


class LoaderSet:
    """A room's DataLoaders for one operation, each made on first use. `read` opens a
    session to read in (the operation's, see `Context.read`); `viewer` is the viewer's.

    Made lazily: a websocket context lives as long as its connection, and most never use
    most loaders (ten thousand idle subscriptions held seven DataLoaders each).
    """

    def __init__(self, read: Read, viewer: ViewerOf, *, cache: bool = True) -> None:
        self._read = read
        self._viewer = viewer
        self._cache = cache

    @classmethod
    def of(cls, info: Info) -> Self:
        """This room's loaders of the operation `info` belongs to."""
        return info.context.loaders.of(cls)

    def _loader(self, load: Callable[[list[Any]], Awaitable[list[Any]]]) -> DataLoader[Any, Any]:
        return DataLoader(load, cache=self._cache)

    async def _many_each(
        self,
        fetch: Callable[[AsyncSession, Sequence[str]], Awaitable[Sequence[RowT]]],
        ids: Sequence[str],
        key: Callable[[RowT], str] = lambda row: row.request_id,  # type: ignore[attr-defined]
    ) -> list[list[RowT]]:
        """One query for the whole batch; each id gets its rows (by `key`), in fetch order."""
        async with self._read() as session:
            rows = await fetch(session, ids)
        grouped: dict[str, list[RowT]] = defaultdict(list)
        for row in rows:
            grouped[key(row)].append(row)
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


class Loaders:
    """The loader sets of one operation (or websocket connection), one per room."""

    def __init__(self, read: Read, viewer: ViewerOf, *, cache: bool = True) -> None:
        self._read = read
        self._viewer = viewer
        self._cache = cache
        self._sets: dict[type[LoaderSet], LoaderSet] = {}

    def of(self, kind: type[SetT]) -> SetT:
        found = self._sets.get(kind)
        if found is None:
            found = self._sets[kind] = kind(self._read, self._viewer, cache=self._cache)
        return found  # type: ignore[return-value]
