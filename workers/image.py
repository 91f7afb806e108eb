"""Stage 2: one image per job, stored in our bucket; the last one settles the phase."""

from __future__ import annotations

from dataclasses import replace

from app.deps import Deps
from app.requests import jobs, repository, service
from app.requests.stages import Status
from providers.base import (
    ImageGenerator,
    ImageResult,
)
from providers.formats import checked_image
from providers.storage import new_key
from workers.claims import JobGone, download, timed, watched
from workers.slots import Slots, attempt_ended

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


async def generate_image(deps: Deps, job_id: str) -> None:
    """One image, claimed, made, stored and settled in two short transactions.

    The hot path of the pipeline, so every statement counts: one read and one
    conditional UPDATE claim the job (its image shows GENERATING with it), each
    committing on its own (a transaction would only add a COMMIT); after the
    vendor, the request's row is locked, the job and image finish in one UPDATE fenced
    by the attempt, and the request's own tally says whether this image was the last.
    No lock is taken on the user until the event is numbered, just before the commit.
    """
    async with deps.db.single_statements() as session:
        work = await repository.image_work(session, job_id)
        if work is None or work.kind != "IMAGE":
            return
        if Status(work.request_status) not in jobs.DUE["IMAGE"]:
            return  # cancelled, or a repeated message after the phase closed
        if not await repository.claim_image(session, job_id, work.image_id, work.attempt):
            return  # another delivery has it, or its retry is not due yet
    attempt = work.attempt + 1
    prompt, seed, width, height = work.prompt, work.seed, work.width, work.height
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
                make, only=work.image_provider, usable=slots.take
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
        # The request first, as everywhere (cancel locks it, then its jobs).
        request = await repository.get(unit.session, work.request_id, for_update=True)
        if request is None or Status(request.status) not in jobs.DUE["IMAGE"]:
            return  # cancelled while the vendor worked: cancel wins
        if not await repository.finish_image(
            unit.session,
            job_id,
            attempt,
            work.image_id,
            storage_key=key,
            content_type=result.content_type,
            width=result.width,
            height=result.height,
            provider=provider.name,
        ):
            return  # no longer this attempt's (the sweeper gave it to another)
        await service.settle_images(unit, request, work.image_id, work.image_index, ok=True)
