"""Stage 3: start a 3D job at a vendor, poll it, store its files and finish the request."""

from __future__ import annotations

import asyncio
import logging
import time

from app.config import Settings
from app.deps import Deps
from app.models import service as models
from app.models.service import StoredFile, StoredModel
from app.queue import StageMessage
from app.requests import repository, service
from app.requests.service import Stage
from app.requests.stages import Status
from app.unit import send_messages
from providers.base import (
    CancelsJobs,
    JobState,
    ModelGenerator,
    ModelJobStatus,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.formats import model_files
from providers.storage import new_key
from workers.claims import (
    JobGone,
    VendorJobTimeout,
    attempt_failed,
    claim,
    download,
    running,
    still_running,
    timed,
    watched,
)
from workers.slots import Slots, attempt_ended

log = logging.getLogger(__name__)


# -- start and poll a 3D job ------------------------------------------------------------


def _model_lease(deps: Deps) -> float:
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
    slots = Slots(deps, job_id, attempt, lease=_model_lease(deps))

    async def submit(vendor: ModelGenerator) -> str:
        try:
            async with timed(vendor.name, "submit_model"):
                return await vendor.submit(
                    data, content_type or "image/png", prompt=prompt, format=file_format
                )
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
            await _cancel_vendor_job(deps, provider.name, vendor_job_id)
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
        unit.messages.append(_next_poll(deps, locked[1].priority, job_id, 0))


async def _cancel_vendor_job(deps: Deps, vendor: str, vendor_job_id: str) -> None:
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


def _next_poll(
    deps: Deps, queue: str, job_id: str, poll_no: int, elapsed: float = 0.0
) -> StageMessage:
    delay = poll_delay(deps.settings, elapsed)
    return StageMessage(Stage.POLL_MODEL, (job_id, poll_no), delay_seconds=delay, queue=queue)


def worth_an_event(figure: float, estimated: bool, shown: float) -> bool:
    """Whether a running 3D job's new progress `figure` is worth an event, given the
    figure the request shows: a whole percent the vendor reported, or an estimate a
    step further on."""
    if estimated:
        return figure >= shown + ESTIMATE_STEP
    return int(figure) > int(shown)


async def poll_model(deps: Deps, job_id: str, poll_no: int) -> None:
    """Asks the vendor how a 3D job is going. The common case (still running, nothing
    worth an event) touches the database once: the conditional UPDATE that admits poll
    number `poll_no` once, with no lock held on the request."""
    async with deps.db.write() as session:
        admitted = await repository.claim_poll(session, job_id, poll_no)
        target = await repository.poll_target(session, job_id)
    if target is None:
        return
    vendor, vendor_job_id, attempt = str(target.provider), target.vendor_job_id, target.attempt
    slots = Slots(deps, job_id, attempt, lease=_model_lease(deps))
    if target.request_status != Status.MODEL_GENERATING:
        if target.job_status == "CANCELLED" and vendor_job_id:  # the request was cancelled
            await _cancel_vendor_job(deps, vendor, vendor_job_id)
            await slots.free(vendor)
        return
    if not admitted or vendor_job_id is None:
        return  # a repeated message: another delivery has this poll
    if vendor not in deps.providers.model.names:  # the settings changed under the job
        gone = ProviderUnavailable(f"{vendor} is no longer configured", provider=vendor)
        await attempt_failed(deps, job_id, attempt, gone)
        return
    provider = deps.providers.model.named(vendor)
    await slots.take(provider)  # renews the lease of the slot this job holds
    started = target.started_at
    elapsed = time.time() - started.timestamp() if started else 0.0
    try:
        if elapsed > deps.settings.model_job_timeout_seconds:
            await _cancel_vendor_job(deps, vendor, vendor_job_id)
            limit = deps.settings.model_job_timeout_seconds
            raise VendorJobTimeout(f"the 3D job did not finish within {limit:.0f} s")
        async with watched(deps, job_id, attempt):
            try:
                async with timed(vendor, "poll_model"):
                    status = await provider.poll(vendor_job_id)
            except ProviderError as exc:
                if not exc.transient:
                    raise
                status = ModelJobStatus(state=JobState.RUNNING)  # ask again at the next poll
            if status.state is JobState.FAILED:
                code = status.error_code or "MODEL_GENERATION_FAILED"
                message = f"{vendor}: {status.error_message or code}"
                raise ProviderRejected(message, provider=vendor)
            stored = None
            if status.files:
                stored = await _store_model(deps, target, status, vendor)
            if status.state is JobState.SUCCEEDED and stored is None:
                raise ProviderUnavailable("the 3D job finished without a file")
    except JobGone:
        await slots.free(vendor)
        return
    except Exception as exc:
        await slots.free(vendor)
        await attempt_failed(deps, job_id, attempt, exc)
        return
    if stored is not None:
        await _finish_model(deps, job_id, attempt, stored, vendor)
        await slots.free(vendor)
        return
    figure, estimated = model_progress(status, elapsed, provider.typical_seconds)
    following = _next_poll(deps, target.priority, job_id, poll_no + 1, elapsed)
    if worth_an_event(figure, estimated, target.progress):
        await _report_model_progress(deps, job_id, attempt, figure, estimated, following)
    else:
        await asyncio.to_thread(send_messages, deps.queue, [following])


async def cancel_model(
    deps: Deps, job_id: str, attempt: int, vendor: str, vendor_job_id: str
) -> None:
    """Stops the vendor job of a deleted request and frees its slot: with the job's row
    gone, no poll is left to do it. Cancelling twice is harmless, so a repeat is too."""
    await _cancel_vendor_job(deps, vendor, vendor_job_id)
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


async def _report_model_progress(
    deps: Deps,
    job_id: str,
    attempt: int,
    figure: float,
    estimated: bool,
    following: StageMessage,
) -> None:
    async with deps.unit() as unit:
        locked = await still_running(unit, job_id, attempt)
        if locked is None:
            return
        request = locked[1]
        await service.transition(
            unit,
            request,
            Status.MODEL_GENERATING,
            step=request.step,
            progress=figure,
            estimated=estimated,
        )
        unit.messages.append(following)


async def _store_model(
    deps: Deps, request: repository.PollTarget, status: ModelJobStatus, vendor: str
) -> StoredModel:
    """Copies the finished model in the format the request asked for (else what the
    vendor offers, GLB first), and its preview, into our storage before the vendor's URLs
    expire. An OBJ comes with its material and textures.

    Keys are random (`new_key`): a published model's URLs must not name its request."""
    wanted = ("obj", "zip") if request.model_format == "obj" else ("glb",)
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


async def _finish_model(
    deps: Deps, job_id: str, attempt: int, stored: StoredModel, vendor: str
) -> None:
    async with deps.unit() as unit:
        locked = await still_running(unit, job_id, attempt)
        if locked is None:
            return
        if not await repository.finish_job(unit.session, job_id, "COMPLETED", attempt=attempt):
            return
        request = locked[1]
        model = await models.add_to_library(unit, request, stored, provider=vendor)
        await service.transition(
            unit,
            request,
            Status.MODEL_COMPLETED,
            step="model stored",
            progress=service.PROGRESS_STORING,
            model_id=model.id,
        )
        await service.transition(
            unit, request, Status.COMPLETED, step="completed", model_id=model.id
        )
