"""Stage 3: start a 3D job at a vendor; what a poll of it does with its answer (the
polls themselves are the poller's, workers/poller.py): progress, files, the finish.

Once the vendor has the job, its first poll is scheduled in the same transaction that
records the vendor's job id; from then on the database says when it is due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from app.config import Settings
from app.deps import Deps
from app.models import service as models
from app.models.service import StoredFile, StoredModel
from app.requests import polls, repository, service
from app.requests.stages import Status
from app.tables import utcnow
from app.unit import Unit
from providers.base import CancelsJobs, ModelGenerator, ModelJobStatus, ProviderRateLimited
from providers.formats import model_files
from providers.storage import new_key
from workers.claims import JobGone, claim, download, running, still_running, timed, watched
from workers.slots import Slots, attempt_ended

log = logging.getLogger(__name__)


def model_lease(deps: Deps) -> float:
    """How long a 3D job's vendor slot outlives its last poll."""
    settings = deps.settings
    return max(settings.stall_seconds * 2, settings.model_poll_interval_seconds * 10)


async def start_model(deps: Deps, job_id: str) -> None:
    async with deps.unit() as unit:
        claimed = await claim(unit, job_id, "MODEL")
        if claimed is None:
            return
        job, request, attempt = claimed
        image = await repository.get_image(unit.session, str(job.image_id))
        assert image is not None
        assert image.storage_key is not None
        key, content_type, prompt = image.storage_key, image.content_type, image.prompt
        chosen, file_format = request.model_provider, request.model_format
    slots = Slots(deps, job_id, attempt, lease=model_lease(deps))

    async def submit(vendor: ModelGenerator) -> str:
        try:
            media = content_type or "image/png"
            return await _submit_within_quota(deps, vendor, data, media, prompt, file_format)
        except BaseException:
            await slots.free(vendor.name)
            raise

    try:
        async with watched(deps, job_id, attempt):
            data = await deps.storage.get(key)
            provider, vendor_job_id = await deps.providers.model.call(
                submit, only=chosen, usable=slots.take
            )
    except JobGone:
        return
    except Exception as exc:
        await attempt_ended(deps, job_id, attempt, slots, exc)
        return
    async with deps.unit() as unit:
        locked = await still_running(unit, job_id, attempt)
        if locked is None or not await repository.set_vendor_job(
            unit.session, job_id, provider.name, vendor_job_id
        ):
            await cancel_vendor_job(deps, provider.name, vendor_job_id)
            await slots.free(provider.name)
            return
        await service.transition(
            unit,
            locked[1],
            Status.MODEL_GENERATING,
            step=f"generating 3D model ({provider.name})",
            progress=service.PROGRESS_MODEL_START,
            job=running(job_id, attempt),
        )
        first = utcnow() + timedelta(seconds=poll_delay(deps.settings, 0.0))
        await polls.schedule(unit.session, job_id, first)  # the poller takes it from here


# Requests are paced at this share of a vendor's quota: a request booked for its turn
# may leave late (a busy event loop, a slow connection) and then go out right before the
# next one; a tenth of headroom keeps even such a pair within the vendor's second.
QUOTA_SHARE = 0.9
# A submit the vendor refuses for its request rate is tried again this often, each time
# at its next turn, before the attempt fails (and is retried later, as a failure).
RATE_LIMITED_TRIES = 3
# A turn is taken at most this late (with the tenth of headroom: a busy loop never
# crowds more than the quota into a second); later, it is booked again.
LATE_SECONDS = 0.05


def paced_rate(deps: Deps, vendor: str) -> float | None:
    """The requests per second (per API action) we send `vendor`; None: not limited."""
    rate = deps.providers.rate_limits.get(vendor)
    return None if rate is None else rate * QUOTA_SHARE


async def within_quota(deps: Deps, vendor: str, action: str) -> None:
    """Waits for this request's turn in the vendor's request-rate quota (per API action,
    shared by every process: `LUMI_PROVIDER_REQUEST_RATES`)."""
    rate = paced_rate(deps, vendor)
    if rate is not None:
        wait = await deps.providers.rates.reserve(f"{vendor}:{action}", per_second=rate)
        await go_at(deps, vendor, action, time.monotonic() + wait)


async def go_at(deps: Deps, vendor: str, action: str, turn: float) -> None:
    """Waits for a booked turn (a `time.monotonic()` moment). A turn missed by more than
    LATE_SECONDS (the event loop was busy) is booked again rather than taken late, where
    it would crowd the turns after it into one of the vendor's seconds."""
    rate = paced_rate(deps, vendor)
    while True:
        now = time.monotonic()
        if now < turn:
            await asyncio.sleep(turn - now)
            now = time.monotonic()
        if rate is None or now - turn <= LATE_SECONDS:
            return
        wait = await deps.providers.rates.reserve(f"{vendor}:{action}", per_second=rate)
        turn = time.monotonic() + wait


async def _submit_within_quota(
    deps: Deps, vendor: ModelGenerator, data: bytes, content_type: str, prompt: str, format: str
) -> str:
    for tries_left in range(RATE_LIMITED_TRIES - 1, -1, -1):
        await within_quota(deps, vendor.name, "submit")
        try:
            async with timed(vendor.name, "submit_model"):
                return await vendor.submit(data, content_type, prompt=prompt, format=format)
        except ProviderRateLimited:
            if not tries_left:
                raise
    raise AssertionError("unreachable")


async def cancel_vendor_job(deps: Deps, vendor: str, vendor_job_id: str) -> None:
    """Stops a vendor job nobody wants any more, where the vendor allows it."""
    if vendor not in deps.providers.model.names:
        return
    provider = deps.providers.model.named(vendor)
    if not isinstance(provider, CancelsJobs):
        return
    try:
        await provider.cancel(vendor_job_id)
    except Exception:
        log.warning("could not cancel %s job %s", vendor, vendor_job_id, exc_info=True)


# A poll spaces the next one by this share of the job's age (from the poll interval up
# to the longest one): a young job is asked often, a long one about every few seconds,
# so thousands of jobs in flight cost a worker little and each is seen done soon.
POLL_SPACING = 0.2
# Estimated progress (the vendor gives none) is reported in steps of this many points
# of the request's figure: each event is a locked write, and an estimate says little.
ESTIMATE_STEP = 5.0


def poll_delay(settings: Settings, elapsed: float) -> float:
    """Seconds until the next poll of a 3D job that has run `elapsed` seconds."""
    first, longest = settings.model_poll_interval_seconds, settings.model_poll_max_interval_seconds
    return max(first, min(longest, elapsed * POLL_SPACING))


def worth_an_event(figure: float, estimated: bool, shown: float) -> bool:
    """Whether a running 3D job's new progress `figure` is worth an event, given the
    figure the request shows: a whole percent the vendor reported, or an estimate a
    step further on."""
    if estimated:
        return figure >= shown + ESTIMATE_STEP
    return int(figure) > int(shown)


async def poll_model(deps: Deps, job_id: str, poll_no: int = 0) -> None:
    """A POLL_MODEL message: the poller of some worker process polls 3D jobs now
    (workers/poller.py), so a message only makes a job without a scheduled poll due,
    at once. Such are the jobs an older version started (its messages may still be
    queued); for every other job a message changes nothing."""
    async with deps.db.write() as session:
        await polls.make_due(session, job_id, only_unscheduled=True)


async def cancel_model(
    deps: Deps, job_id: str, attempt: int, vendor: str, vendor_job_id: str
) -> None:
    """Stops the vendor job of a deleted request and frees its slot: with the job's row
    gone, no poll is left to do it. Cancelling twice is harmless, so a repeat is too."""
    await cancel_vendor_job(deps, vendor, vendor_job_id)
    await Slots(deps, job_id, attempt, lease=0).free(vendor)


def model_progress(status: ModelJobStatus, elapsed: float, typical: float) -> tuple[float, bool]:
    """The request-wide figure for a running 3D job, and whether it is an estimate.

    A vendor's own percentage is passed through; without one the figure follows the
    elapsed time against the vendor's typical duration and never quite reaches the end.
    """
    if status.progress is not None:
        share, estimated = max(0.0, min(status.progress, 100.0)) / 100, False
    else:
        share, estimated = min(elapsed / max(typical, 0.001), 1.0) * 0.95, True
    span = service.PROGRESS_MODEL_END - service.PROGRESS_MODEL_START
    return service.PROGRESS_MODEL_START + span * share, estimated


async def store_model(
    deps: Deps, model_format: str, status: ModelJobStatus, vendor: str
) -> StoredModel:
    """Copies the finished model in the format the request asked for (else what the
    vendor offers, GLB first), and its preview, into our storage before the vendor's URLs
    expire. An OBJ comes with its material and textures.

    Keys are random (`new_key`): a published model's URLs must not name its request."""
    wanted = ("obj", "zip") if model_format == "obj" else ("glb",)
    main = sorted(status.files, key=lambda f: (f.format not in wanted, f.format != "glb"))[0]
    data = await download(deps, main.data, main.url)
    files = model_files(main.format, data, vendor)
    folder = new_key("models")  # one folder, original names: the MTL names its textures
    stored = []
    for file in files:
        key = f"{folder}/{file.name}"
        await deps.storage.put(key, file.data, file.content_type)
        stored.append(StoredFile(file.name, key, file.content_type, len(file.data)))
    preview_key = None
    if status.preview:
        preview = await download(deps, status.preview.data, status.preview.url)
        # beside the folder, not in it: a texture may well be called preview.png
        preview_key = new_key("previews", ".png")
        await deps.storage.put(preview_key, preview, status.preview.content_type)
    return StoredModel(format=files[0].format, files=stored, preview_key=preview_key)


async def finish_in(
    unit: Unit, job_id: str, attempt: int, stored: StoredModel, vendor: str
) -> bool:
    """Within `unit`: the job is done, its model joins the owner's library and the request
    completes; False (nothing written) when the attempt no longer owns the job."""
    locked = await still_running(unit, job_id, attempt)
    if locked is None:
        return False
    if not await repository.finish_job(unit.session, job_id, "COMPLETED", attempt=attempt):
        return False
    request = locked[1]
    model = await models.add_to_library(unit, request, stored, provider=vendor)
    # A vendor that made no file of the format asked for: its own, and said so.
    notice = None
    if stored.format != request.model_format:
        asked, made = request.model_format.upper(), stored.format.upper()
        notice = f"{asked} was asked for, but {vendor} made {made} only: the model is {made}"
    await service.transition(
        unit,
        request,
        Status.MODEL_COMPLETED,
        step="model stored",
        progress=service.PROGRESS_STORING,
        message=notice,
        model_id=model.id,
    )
    await service.transition(
        unit, request, Status.COMPLETED, step="completed", message=notice, model_id=model.id
    )
    return True
