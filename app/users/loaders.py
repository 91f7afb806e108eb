"""The users room's DataLoaders: users by id, in batches (a gallery page's owners)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from strawberry.dataloader import DataLoader

from app.graphql.loaders import LoaderSet
from app.tables import User
from app.users import repository


class UserLoaders(LoaderSet):
    @cached_property
    def user_by_id(self) -> DataLoader[str, User | None]:
        return self._loader(self._user_by_id)

    async def _user_by_id(self, ids: Sequence[str]) -> list[User | None]:
        return await self._one_each(repository.get_many, ids)
