"""The requests room's DataLoaders: requests, their images and jobs, in batches."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from strawberry.dataloader import DataLoader

from app.graphql.loaders import LoaderSet
from app.requests import queue_position, repository
from app.requests.queue_position import NOT_WAITING, QueueEstimate
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

    @cached_property
    def queue_by_request(self) -> DataLoader[str, QueueEstimate]:
        """Each request's place in line: a few queries for the whole batch."""
        return self._loader(self._queue_by_request)

    @cached_property
    def queue_by_job(self) -> DataLoader[GenerationJob, QueueEstimate]:
        """Each job's own place in line (jobs already loaded: their rows are the keys)."""
        return DataLoader(self._queue_by_job, cache=False)

    async def _queue_by_job(self, jobs: Sequence[GenerationJob]) -> list[QueueEstimate]:
        async with self._read() as session:
            found = await queue_position.job_estimates(session, jobs, recent=True)
        return [found.get(job.id, NOT_WAITING) for job in jobs]

    async def _queue_by_request(self, ids: Sequence[str]) -> list[QueueEstimate]:
        async with self._read() as session:
            found = await queue_position.estimates_of(session, ids, recent=True)
        return [found.get(i, NOT_WAITING) for i in ids]

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
