"""DataLoaders: every nested list and per-viewer field is fetched in one batch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from strawberry.dataloader import DataLoader

from app.models import repository as models
from app.requests import repository as requests
from app.tables import GeneratedImage, GenerationRequest, Model

if TYPE_CHECKING:
    from app.deps import Deps


class Loaders:
    def __init__(self, deps: Deps, *, cache: bool = True) -> None:
        self._deps = deps
        self.images_by_request = DataLoader(self._images_by_request, cache=cache)
        self.model_by_request = DataLoader(self._model_by_request, cache=cache)
        self.request_by_id = DataLoader(self._request_by_id, cache=cache)

    async def _images_by_request(self, ids: Sequence[str]) -> list[list[GeneratedImage]]:
        async with self._deps.db.read() as session:
            rows = await requests.images_of(session, ids)
        grouped: dict[str, list[GeneratedImage]] = defaultdict(list)
        for row in rows:
            grouped[row.request_id].append(row)
        return [grouped[i] for i in ids]

    async def _model_by_request(self, ids: Sequence[str]) -> list[Model | None]:
        async with self._deps.db.read() as session:
            rows = await models.by_request_ids(session, ids)
        found = {row.request_id: row for row in rows}
        return [found.get(i) for i in ids]

    async def _request_by_id(self, ids: Sequence[str]) -> list[GenerationRequest | None]:
        async with self._deps.db.read() as session:
            rows = await requests.get_many(session, ids)
        found = {row.id: row for row in rows}
        return [found.get(i) for i in ids]
