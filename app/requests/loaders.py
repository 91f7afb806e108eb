"""The requests room's DataLoaders: requests, their images and jobs, in batches."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from strawberry.dataloader import DataLoader

from app.graphql.loaders import LoaderSet
from app.requests import repository
from app.tables import GeneratedImage, GenerationJob, GenerationRequest


class RequestLoaders(LoaderSet):
    @cached_property
    def request_by_id(self) -> DataLoader[str, GenerationRequest | None]:
        return self._loader(self._request_by_id)

    @cached_property
    def image_by_id(self) -> DataLoader[str, GeneratedImage | None]:
        return self._loader(self._image_by_id)

    @cached_property
    def job_by_id(self) -> DataLoader[str, GenerationJob | None]:
        return self._loader(self._job_by_id)

    @cached_property
    def images_by_request(self) -> DataLoader[str, list[GeneratedImage]]:
        return self._loader(self._images_by_request)

    @cached_property
    def jobs_by_request(self) -> DataLoader[str, list[GenerationJob]]:
        return self._loader(self._jobs_by_request)

    async def _request_by_id(self, ids: Sequence[str]) -> list[GenerationRequest | None]:
        return await self._one_each(repository.get_many, ids)

    async def _image_by_id(self, ids: Sequence[str]) -> list[GeneratedImage | None]:
        return await self._one_each(repository.images_by_ids, ids)

    async def _job_by_id(self, ids: Sequence[str]) -> list[GenerationJob | None]:
        return await self._one_each(repository.jobs_by_ids, ids)

    async def _images_by_request(self, ids: Sequence[str]) -> list[list[GeneratedImage]]:
        return await self._many_each(repository.images_of, ids)

    async def _jobs_by_request(self, ids: Sequence[str]) -> list[list[GenerationJob]]:
        return await self._many_each(repository.jobs_of, ids)
