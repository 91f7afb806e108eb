"""Pipeline actors: optimize prompt → one image per variant → start 3D job → poll it.

Each actor takes a job id, checks in a transaction that its work is still due
(delivery is at-least-once, so a repeat must be a no-op), calls its provider outside
any transaction, and commits the outcome through the requests service. Follow-up
messages and events go out only after that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import dramatiq
import httpx
from dramatiq.middleware import CurrentMessage

from app.config import Settings
from app.deps import Deps
from app.metrics import PROVIDER_ERRORS, PROVIDER_LATENCY
from app.models import service as models
from app.models.service import StoredFile, StoredModel
from app.observability import redact, request_id
from app.queue import PRIORITY, QUEUES, StageMessage, actor_name
from app.requests import jobs, repository, service
from app.requests.service import JobNote, Stage
from app.requests.stages import Status
from app.tables import GenerationJob, GenerationRequest
from app.unit import Unit, send_messages
from app.users import repository as users
from providers.base import (
    CancelsJobs,
    ImageGenerator,
    ImageResult,
    JobState,
    ModelGenerator,
    ModelJobStatus,
    PromptOptimizer,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from providers.formats import checked_image, model_files
from providers.registry import Named, NoProvider
from providers.storage import new_key
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)

Locked = tuple[GenerationJob, GenerationRequest]
Claimed = tuple[GenerationJob, GenerationRequest, int]

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


async def _locked(unit: Unit, job_id: str) -> Locked | None:
    """The job and its request, with the request's and then its owner's rows locked.

    One lock order everywhere: request, then user, before any insert. An insert that
    refers to the user (a model row) takes a shared lock on it under MySQL; two
    transactions upgrading shared locks to the event counter's exclusive one deadlock.
    """
    job = await repository.get_job(unit.session, job_id)
    if job is None:
        return None
    request = await repository.get(unit.session, job.request_id, for_update=True)
    if request is None:
        return None
    await users.get(unit.session, request.user_id, for_update=True)
    await unit.session.refresh(job)  # as of the lock: another attempt may have moved it
    return job, request


async def _claim(unit: Unit, job_id: str, kind: str) -> Claimed | None:
    """Takes the job for one attempt when its work is still due; None otherwise (a
    repeated message, a cancelled request, a retry not due yet)."""
    locked = await _locked(unit, job_id)
    if locked is None:
        return None
    job, request = locked
    if job.kind != kind or Status(request.status) not in jobs.DUE[kind]:
        return None
    attempt = await repository.claim_job(unit.session, job)
    if attempt is None:
        return None
    return job, request, attempt


async def _still_running(unit: Unit, job_id: str, attempt: int) -> Locked | None:
    """The job and its request, locked, when `attempt` still owns the job and its request
    still wants the work (checked after every provider call: cancel wins)."""
    locked = await _locked(unit, job_id)
    if locked is None:
        return None
    job, request = locked
    if job.status != "RUNNING" or job.attempt != attempt:
        return None
    if Status(request.status) not in jobs.DUE[job.kind]:
        return None
    return locked


class JobGone(Exception):
    """The job is no longer this attempt's: cancelled, or recovered by the sweeper."""


@contextlib.asynccontextmanager
async def _watched(deps: Deps, job_id: str, attempt: int) -> AsyncIterator[None]:
    """Runs a stage's provider work under its time limit while beating the job's heart.

    The heartbeat tells the sweeper the attempt is alive; when it finds the job taken
    away (the request was cancelled), the work is abandoned at once.
    """
    settings = deps.settings
    interval = max(0.05, settings.stall_seconds / 4)
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def beat() -> None:
        nonlocal gone
        while True:
            await asyncio.sleep(interval)
            try:
                async with deps.db.write() as session:
                    alive = await repository.heartbeat(session, job_id, attempt)
            except Exception:  # a database hiccup: the next beat will tell
                log.warning("heartbeat of job %s failed", job_id, exc_info=True)
                continue
            if not alive:
                gone = True
                task.cancel()
                return

    beater = asyncio.create_task(beat())
    try:
        async with asyncio.timeout(settings.stage_time_limit_seconds):
            yield
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise JobGone() from None
        raise
    except TimeoutError:
        limit = settings.stage_time_limit_seconds
        raise ProviderTimeout(f"the stage took longer than its limit of {limit:.0f} s") from None
    finally:
        beater.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beater


def _failure(error: BaseException) -> jobs.Failure:
    if isinstance(error, _VendorJobTimeout):
        return jobs.Failure(error.code, str(error), transient=True, job_status="TIMEOUT")
    if isinstance(error, ProviderError):
        retry_after = error.retry_after if isinstance(error, ProviderRateLimited) else None
        # Shown to the request's owner: never a key, whatever the vendor echoed back.
        return jobs.Failure(error.code, redact(str(error))[:1000], error.transient, retry_after)
    return jobs.Failure("INTERNAL", "internal error", transient=True)


async def _attempt_failed(deps: Deps, job_id: str, attempt: int, error: BaseException) -> None:
    """Records a failed attempt: a retry later, or the job's final failure."""
    if isinstance(error, ProviderError):  # expected: one line, the vendor's words redacted
        log.warning("job %s attempt %s failed: %s", job_id, attempt, redact(str(error))[:500])
    else:
        log.error("job %s attempt %s failed", job_id, attempt, exc_info=error)
    async with deps.unit() as unit:
        locked = await _locked(unit, job_id)
        if locked is None:
            return
        job, request = locked
        await jobs.attempt_failed(unit, deps.settings, job, request, attempt, _failure(error))


@contextlib.asynccontextmanager
async def _timed(provider: str, operation: str) -> AsyncIterator[None]:
    """Provider latency and errors for /metrics."""
    started = time.perf_counter()
    try:
        yield
    except ProviderError as exc:
        PROVIDER_ERRORS.labels(provider, operation, exc.code).inc()
        raise
    finally:
        PROVIDER_LATENCY.labels(provider, operation).observe(time.perf_counter() - started)


async def _content(deps: Deps, data: bytes | None, url: str | None) -> bytes:
    """Output bytes, copied from the vendor's short-lived URL when it gave one."""
    if data is not None:
        return data
    if url is None:
        raise ProviderUnavailable("the provider returned neither data nor a URL")
    try:
        response = await deps.http.get(url)
    except httpx.HTTPError as exc:  # `from None`: a vendor URL can carry its signature
        message = f"could not download the provider's output ({type(exc).__name__})"
        raise ProviderUnavailable(message) from None
    if not response.is_success:
        message = f"the provider's output answered {response.status_code} (expired?)"
        raise ProviderUnavailable(message)
    return response.content


def _running(job_id: str, attempt: int) -> JobNote:
    return JobNote(job_id, "RUNNING", attempt)


# -- vendor concurrency slots -----------------------------------------------------------


class NoSlot(Exception):
    """Every vendor the job may use is at its concurrency limit: wait, do not fail."""


class Slots:
    """The slots one job attempt holds at limited vendors (`LUMI_PROVIDER_CONCURRENCY`).

    Held by `job:attempt`, so a later attempt never frees an earlier one's by mistake;
    a lease bounds how long a slot outlives a holder that died.
    """

    def __init__(self, deps: Deps, job_id: str, attempt: int, lease: float) -> None:
        self.providers = deps.providers
        self.holder = f"{job_id}:{attempt}"
        self.lease = lease
        self.refused: list[str] = []

    def limited(self, vendor: str) -> bool:
        return vendor in self.providers.limits

    async def take(self, vendor: Named) -> bool:
        """For `Chain.call(usable=...)`: whether `vendor` has room for this attempt."""
        if not self.limited(vendor.name):
            return True
        limit = self.providers.limits[vendor.name]
        taken = await self.providers.limiter.acquire(
            vendor.name, self.holder, limit=limit, lease=self.lease
        )
        if not taken:
            self.refused.append(vendor.name)
        return taken

    async def free(self, vendor: str) -> None:
        if self.limited(vendor):
            await self.providers.limiter.release(vendor, self.holder)

    def waiting(self, error: BaseException) -> bool:
        """Whether the chain failed only because limited vendors were full."""
        return isinstance(error, NoProvider) and bool(self.refused)


async def _attempt_ended(
    deps: Deps, job_id: str, attempt: int, slots: Slots, error: BaseException
) -> None:
    """An attempt raised `error`: it waits for a vendor slot, or it failed."""
    if slots.waiting(error):
        await _wait_for_slot(deps, job_id, attempt, slots.refused)
    else:
        await _attempt_failed(deps, job_id, attempt, error)


async def _wait_for_slot(deps: Deps, job_id: str, attempt: int, vendors: list[str]) -> None:
    """Gives the claim back (the job shows as queued again) and asks again later."""
    delay = min(5.0, max(0.5, deps.settings.model_poll_interval_seconds))
    async with deps.unit() as unit:
        locked = await _still_running(unit, job_id, attempt)
        if locked is None:
            return
        job, request = locked
        if not await repository.unclaim_job(unit.session, job_id, attempt, delay=delay):
            return
        step = f"waiting for a free slot at {' or '.join(vendors)}"
        if request.step != step:
            await service.transition(unit, request, Status(request.status), step=step)
        unit.messages.append(jobs.message_for(request, job, delay=delay))


# -- optimize prompt --------------------------------------------------------------------


async def optimize_prompt(deps: Deps, job_id: str) -> None:
    async with deps.unit() as unit:
        claimed = await _claim(unit, job_id, "PROMPT")
        if claimed is None:
            return
        _, request, attempt = claimed
        step = "optimizing prompt" if request.optimize_prompt else "preparing images"
        await service.transition(
            unit,
            request,
            Status.IMAGE_GENERATING,
            step=step,
            progress=service.PROGRESS_OPTIMIZING,
            job=_running(job_id, attempt),
        )
        prompt, count, optimize = request.prompt, request.image_count, request.optimize_prompt
    try:
        async with _watched(deps, job_id, attempt):
            if optimize:

                async def ask(llm: PromptOptimizer) -> list[str]:
                    async with _timed(llm.name, "optimize"):
                        return await llm.optimize(prompt, count)

                _, prompts = await deps.providers.llm.call(ask)
            else:
                prompts = [prompt] * count
    except JobGone:
        return
    except Exception as exc:
        await _attempt_failed(deps, job_id, attempt, exc)
        return
    async with deps.unit() as unit:
        locked = await _still_running(unit, job_id, attempt)
        if locked is None:
            return
        if await repository.finish_job(unit.session, job_id, "COMPLETED", attempt=attempt):
            await service.begin_images(unit, locked[1], prompts[:count])


# -- generate one image -----------------------------------------------------------------


async def generate_image(deps: Deps, job_id: str) -> None:
    async with deps.unit() as unit:
        claimed = await _claim(unit, job_id, "IMAGE")
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
            async with _timed(vendor.name, "generate_image"):
                made = await vendor.generate(prompt, seed=seed, width=width, height=height)
            data = await _content(deps, made.data, made.url)
            # the stored size is the picture's own: a vendor may round what we asked for
            real = checked_image(data, vendor.name)
            made = replace(
                made, content_type=real.content_type, width=real.width, height=real.height
            )
            return made, data
        finally:
            await slots.free(vendor.name)

    try:
        async with _watched(deps, job_id, attempt):
            provider, (result, data) = await deps.providers.image.call(
                make, only=chosen, usable=slots.take
            )
            extension = _EXTENSIONS.get(result.content_type, "bin")
            key = new_key("images", f".{extension}")
            await deps.storage.put(key, data, result.content_type)
    except JobGone:
        return
    except Exception as exc:
        await _attempt_ended(deps, job_id, attempt, slots, exc)
        return
    async with deps.unit() as unit:
        locked = await _still_running(unit, job_id, attempt)
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


# -- start and poll a 3D job ------------------------------------------------------------


def _model_lease(deps: Deps) -> float:
    """How long a 3D job's vendor slot outlives its last poll."""
    settings = deps.settings
    return max(settings.stall_seconds * 2, settings.model_poll_interval_seconds * 10)


async def start_model(deps: Deps, job_id: str) -> None:
    async with deps.unit() as unit:
        claimed = await _claim(unit, job_id, "MODEL")
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
            async with _timed(vendor.name, "submit_model"):
                return await vendor.submit(
                    data, content_type or "image/png", prompt=prompt, format=file_format
                )
        except BaseException:
            await slots.free(vendor.name)
            raise

    try:
        async with _watched(deps, job_id, attempt):
            data = await deps.storage.get(key)
            provider, vendor_job_id = await deps.providers.model.call(
                submit, only=chosen, usable=slots.take
            )
    except JobGone:
        return
    except Exception as exc:
        await _attempt_ended(deps, job_id, attempt, slots, exc)
        return
    async with deps.unit() as unit:
        locked = await _still_running(unit, job_id, attempt)
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
            job=_running(job_id, attempt),
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
        await _attempt_failed(deps, job_id, attempt, gone)
        return
    provider = deps.providers.model.named(vendor)
    await slots.take(provider)  # renews the lease of the slot this job holds
    started = target.started_at
    elapsed = time.time() - started.timestamp() if started else 0.0
    try:
        if elapsed > deps.settings.model_job_timeout_seconds:
            await _cancel_vendor_job(deps, vendor, vendor_job_id)
            limit = deps.settings.model_job_timeout_seconds
            raise _VendorJobTimeout(f"the 3D job did not finish within {limit:.0f} s")
        async with _watched(deps, job_id, attempt):
            try:
                async with _timed(vendor, "poll_model"):
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
        await _attempt_failed(deps, job_id, attempt, exc)
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


class _VendorJobTimeout(ProviderTimeout):
    """A vendor 3D job ran out of time: the job shows TIMEOUT when it is given up."""

    code = "TIMEOUT"


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
        locked = await _still_running(unit, job_id, attempt)
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
    data = await _content(deps, main.data, main.url)
    files = model_files(main.format, data, vendor)
    folder = new_key("models")  # one folder, original names: the MTL names its textures
    stored = []
    for file in files:
        key = f"{folder}/{file.name}"
        await deps.storage.put(key, file.data, file.content_type)
        stored.append(StoredFile(file.name, key, file.content_type, len(file.data)))
    preview_key = None
    if status.preview:
        preview = await _content(deps, status.preview.data, status.preview.url)
        # beside the folder, not in it: a texture may well be called preview.png
        preview_key = new_key("previews", ".png")
        await deps.storage.put(preview_key, preview, status.preview.content_type)
    return StoredModel(format=files[0].format, files=stored, preview_key=preview_key)


async def _finish_model(
    deps: Deps, job_id: str, attempt: int, stored: StoredModel, vendor: str
) -> None:
    async with deps.unit() as unit:
        locked = await _still_running(unit, job_id, attempt)
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


# -- declaration ------------------------------------------------------------------------

STAGES: dict[str, Callable[..., Awaitable[None]]] = {
    Stage.OPTIMIZE_PROMPT: optimize_prompt,
    Stage.GENERATE_IMAGE: generate_image,
    Stage.START_MODEL: start_model,
    Stage.POLL_MODEL: poll_model,
    Stage.CANCEL_MODEL: cancel_model,
}


def declare_actors(broker: dramatiq.Broker, runtime: WorkerRuntime) -> None:
    """Registers each stage on `broker` once per queue, each running with `runtime`'s deps.

    The queue a message is sent to picks the actor, and the actor's priority orders the
    work a worker has fetched: high before default before low.
    """
    for name, stage in STAGES.items():
        for queue in QUEUES:
            _actor(broker, runtime, name, stage, queue)  # an Actor declares itself


def _actor(
    broker: dramatiq.Broker,
    runtime: WorkerRuntime,
    name: str,
    stage: Callable[..., Awaitable[None]],
    queue: str,
) -> dramatiq.Actor[..., Any]:
    async def run_async(rid: str | None, *args: Any) -> None:
        token = request_id.set(rid)
        try:
            log.info("stage %s %s", name, args)
            deps = await runtime.deps()
            await stage(deps, *args)
        except Exception:
            # The job stays as it was; the sweeper finds it (stalled or waiting) and
            # runs it again, so an unexpected failure is retried like a lost worker.
            log.exception("stage %s failed for %s", name, args)
        finally:
            request_id.reset(token)

    def run(*args: Any) -> None:
        # Runs in the worker thread, where the current message is known; the stage
        # itself runs on the worker's event loop, carrying the message's request id,
        # and the thread goes back for the next message (see StageLauncher).
        message = CurrentMessage.get_current_message()
        rid = message.options.get("request_id") if message is not None else None
        runtime.stages.launch(run_async(rid, *args))

    run.__name__ = actor_name(name, queue)
    # Retries, backoff and dead letters are the job table's business (see DESIGN §4):
    # Dramatiq must not run a stage again behind the state machine's back.
    return dramatiq.Actor(
        run,
        broker=broker,
        actor_name=actor_name(name, queue),
        queue_name=queue,
        priority=PRIORITY[queue],
        options={"max_retries": 0},
    )
