"""Stage 2: one image per job, stored in our bucket; the last one settles the phase."""

from __future__ import annotations

from dataclasses import replace

from app.deps import Deps
from app.requests import repository, service
from providers.base import (
    ImageGenerator,
    ImageResult,
)
from providers.formats import checked_image
from providers.storage import new_key
from workers.claims import JobGone, claim, download, still_running, timed, watched
from workers.slots import Slots, attempt_ended

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


async def generate_image(deps: Deps, job_id: str) -> None:
    async with deps.unit() as unit:
        claimed = await claim(unit, job_id, "IMAGE")
        if claimed is None:
            return
        job, request, attempt = claimed
        image = await repository.get_image(unit.session, str(job.image_id))
        assert image is not None, "an image job points at its image"
        image.status = "GENERATING"
        prompt, seed, image_id = image.prompt, image.seed, image.id
        width, height = request.image_width, request.image_height
        chosen = request.image_provider
    slots = Slots(deps, job_id, attempt, lease=deps.settings.stage_time_limit_seconds + 30)

    async def make(vendor: ImageGenerator) -> tuple[ImageResult, bytes]:
        try:
            async with timed(vendor.name, "generate_image"):
                made = await vendor.generate(prompt, seed=seed, width=width, height=height)
            data = await download(deps, made.data, made.url)
            # the stored size is the picture's own: a vendor may round what we asked for
            real = checked_image(data, vendor.name)
            made = replace(
                made, content_type=real.content_type, width=real.width, height=real.height
            )
            return made, data
        finally:
            await slots.free(vendor.name)

    try:
        async with watched(deps, job_id, attempt):
            provider, (result, data) = await deps.providers.image.call(
                make, only=chosen, usable=slots.take
            )
            extension = _EXTENSIONS.get(result.content_type, "bin")
            key = new_key("images", f".{extension}")
            await deps.storage.put(key, data, result.content_type)
    except JobGone:
        return
    except Exception as exc:
        await attempt_ended(deps, job_id, attempt, slots, exc)
        return
    async with deps.unit() as unit:
        locked = await still_running(unit, job_id, attempt)
        if locked is None:
            return
        if not await repository.finish_job(unit.session, job_id, "COMPLETED", attempt=attempt):
            return
        stored = await repository.get_image(unit.session, image_id)
        assert stored is not None
        stored.status = "COMPLETED"
        stored.storage_key, stored.content_type = key, result.content_type
        stored.width, stored.height, stored.provider = result.width, result.height, provider.name
        await service.settle_images(unit, locked[1], stored)
