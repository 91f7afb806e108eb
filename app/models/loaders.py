"""The model library's DataLoaders: models and the viewer's likes, in batches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property

from strawberry.dataloader import DataLoader

from app.graphql.loaders import LoaderSet
from app.models import repository
from app.tables import Model


class ModelLoaders(LoaderSet):
    @cached_property
    def model_by_id(self) -> DataLoader[str, Model | None]:
        return self._loader(self._model_by_id)

    @cached_property
    def model_by_request(self) -> DataLoader[str, Model | None]:
        return self._loader(self._model_by_request)

    @cached_property
    def my_interactions(self) -> DataLoader[str, frozenset[str]]:
        """The viewer's likes and favorites of each model, as a set of types."""
        return self._loader(self._my_interactions)

    async def _model_by_id(self, ids: Sequence[str]) -> list[Model | None]:
        return await self._one_each(repository.get_many, ids)

    async def _model_by_request(self, ids: Sequence[str]) -> list[Model | None]:
        return await self._one_each(repository.by_request_ids, ids, lambda row: row.request_id)

    async def _my_interactions(self, model_ids: Sequence[str]) -> list[frozenset[str]]:
        viewer = await self._viewer()
        if viewer is None:
            return [frozenset()] * len(model_ids)
        async with self._read() as session:
            rows = await repository.interactions_of(session, viewer.id, model_ids)
        kinds: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            kinds[row.model_id].add(row.type)
        return [frozenset(kinds[i]) for i in model_ids]
