"""Pipeline actors: optimize prompt → one image per variant → start 3D job → poll it.

Each actor takes a job id, checks in a transaction that its work is still due
(delivery is at-least-once, so a repeat must be a no-op), calls its provider outside
any transaction, and commits the outcome through the requests service. Follow-up
messages and events go out only after that commit.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import dramatiq
from dramatiq.asyncio import async_to_sync
from dramatiq.middleware import CurrentMessage

from app.deps import Deps
from app.metrics import PROVIDER_ERRORS, PROVIDER_LATENCY
from app.models import service as models
from app.observability import request_id
from app.queue import StageMessage
from app.requests import repository, service
from app.requests.service import Stage
from app.requests.stages import Status
from app.tables import GenerationJob, GenerationRequest
from app.unit import Unit
from app.users import repository as users
from providers.base import JobState, ModelFile, ModelJobStatus, ProviderError, ProviderUnavailable
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)

Locked = tuple[GenerationJob, GenerationRequest]

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
    return job, request


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


async def _complete(unit: Unit, job_id: str, expected: Status) -> GenerationRequest | None:
    """Marks a running job COMPLETED while its request is still at `expected`.

    None when the work is no longer wanted (cancelled) or another delivery finished it.
    """
    locked = await _locked(unit, job_id)
    if locked is None or locked[1].status != expected:
        return None
    if not await repository.finish_job(unit.session, job_id, "COMPLETED"):
        return None
    return locked[1]


async def _content(deps: Deps, data: bytes | None, url: str | None) -> bytes:
    """Output bytes, copied from the vendor's short-lived URL when it gave one."""
    if data is not None:
        return data
    if url is None:
        raise ProviderUnavailable("the provider returned neither data nor a URL")
    try:
        response = await deps.http.get(url)
        response.raise_for_status()
    except Exception as exc:
        raise ProviderUnavailable("could not download the provider's output") from exc
    return response.content


async def _fail(deps: Deps, job_id: str, target: Status, code: str, message: str) -> None:
    """Marks the job FAILED and moves its request to `target`, unless it moved on already."""
    async with deps.unit() as unit:
        locked = await _locked(unit, job_id)
        if locked is None:
            return
        _, request = locked
        if not await repository.finish_job(
            unit.session, job_id, "FAILED", error_code=code, error_message=message[:1000]
        ):
            return
        if request.status in (
            Status.IMAGE_GENERATING,
            Status.MODEL_PENDING,
            Status.MODEL_GENERATING,
        ):
            step = (
                "image generation failed"
                if target is Status.IMAGE_FAILED
                else "3D generation failed"
            )
            await service.transition(
                unit, request, target, step=step, error_code=code, message=message
            )


# -- optimize prompt --------------------------------------------------------------------


async def optimize_prompt(deps: Deps, job_id: str) -> None:
    async with deps.unit() as unit:
        locked = await _locked(unit, job_id)
        if locked is None or locked[1].status != Status.IMAGE_PENDING:
            return
        _, request = locked
        if not await repository.claim_job(unit.session, job_id, "PROMPT"):
            return
        step = "optimizing prompt" if request.optimize_prompt else "preparing images"
        await service.transition(
            unit, request, Status.IMAGE_GENERATING, step=step, progress=service.PROGRESS_OPTIMIZING
        )
        prompt, count, optimize = request.prompt, request.image_count, request.optimize_prompt
    try:
        if optimize:
            async with _timed(deps.providers.llm.name, "optimize"):
                prompts = await deps.providers.llm.optimize(prompt, count)
        else:
            prompts = [prompt] * count
    except ProviderError as exc:
        await _fail(deps, job_id, Status.IMAGE_FAILED, exc.code, str(exc))
        return
    async with deps.unit() as unit:
        still_due = await _complete(unit, job_id, Status.IMAGE_GENERATING)
        if still_due is not None:
            await service.begin_images(unit, still_due, prompts[:count])


# -- generate one image -----------------------------------------------------------------


async def generate_image(deps: Deps, job_id: str) -> None:
    async with deps.unit() as unit:
        locked = await _locked(unit, job_id)
        if locked is None or locked[1].status != Status.IMAGE_GENERATING:
            return
        job, request = locked
        if not await repository.claim_job(unit.session, job_id, "IMAGE"):
            return
        image = await repository.get_image(unit.session, str(job.image_id))
        assert image is not None, "an image job points at its image"
        image.status = "GENERATING"
        prompt, seed, image_id = image.prompt, image.seed, image.id
        width, height = request.image_width, request.image_height
    provider = deps.providers.image
    try:
        async with _timed(provider.name, "generate_image"):
            result = await provider.generate(prompt, seed=seed, width=width, height=height)
        data = await _content(deps, result.data, result.url)
        key = (
            f"requests/{request.id}/images/{image_id}.{_EXTENSIONS.get(result.content_type, 'bin')}"
        )
        await deps.storage.put(key, data, result.content_type)
    except ProviderError as exc:
        await _settle_image(deps, job_id, None, error=exc)
        return
    stored = {
        "storage_key": key,
        "width": result.width,
        "height": result.height,
        "content_type": result.content_type,
        "provider": provider.name,
    }
    await _settle_image(deps, job_id, stored)


async def _settle_image(
    deps: Deps, job_id: str, stored: dict[str, Any] | None, *, error: Exception | None = None
) -> None:
    async with deps.unit() as unit:
        locked = await _locked(unit, job_id)
        if locked is None:
            return
        job, request = locked
        outcome = "COMPLETED" if stored else "FAILED"
        failure = _failure(error) if error else {}
        if not await repository.finish_job(unit.session, job_id, outcome, **failure):
            return
        image = await repository.get_image(unit.session, str(job.image_id))
        assert image is not None
        image.status = outcome
        for name, value in (stored or {}).items():
            setattr(image, name, value)
        if request.status == Status.IMAGE_GENERATING:
            await service.settle_images(unit, request, image)


def _failure(error: Exception) -> dict[str, str]:
    if isinstance(error, ProviderError):
        return {"error_code": error.code, "error_message": str(error)[:1000]}
    return {"error_code": "INTERNAL", "error_message": "internal error"}


# -- start and poll a 3D job ------------------------------------------------------------


async def start_model(deps: Deps, job_id: str) -> None:
    async with deps.unit() as unit:
        locked = await _locked(unit, job_id)
        if locked is None or locked[1].status != Status.MODEL_PENDING:
            return
        job, request = locked
        if not await repository.claim_job(unit.session, job_id, "MODEL"):
            return
        image = await repository.get_image(unit.session, str(job.image_id))
        assert image is not None
        assert image.storage_key is not None
        key, content_type, prompt = image.storage_key, image.content_type, image.prompt
        await service.transition(
            unit,
            request,
            Status.MODEL_GENERATING,
            step="submitting 3D job",
            progress=service.PROGRESS_MODEL_START,
        )
    provider = deps.providers.model
    try:
        data = await deps.storage.get(key)
        async with _timed(provider.name, "submit_model"):
            vendor_job_id = await provider.submit(data, content_type or "image/png", prompt=prompt)
    except ProviderError as exc:
        await _fail(deps, job_id, Status.MODEL_FAILED, exc.code, str(exc))
        return
    async with deps.unit() as unit:
        locked = await _locked(unit, job_id)
        if locked is None or locked[1].status != Status.MODEL_GENERATING:
            return
        if not await repository.set_vendor_job(unit.session, job_id, provider.name, vendor_job_id):
            return
        await service.transition(
            unit, locked[1], Status.MODEL_GENERATING, step="generating 3D model"
        )
        unit.messages.append(_next_poll(deps, job_id, 0))


def _next_poll(deps: Deps, job_id: str, poll_no: int) -> StageMessage:
    delay = deps.settings.model_poll_interval_seconds
    return StageMessage(Stage.POLL_MODEL, (job_id, poll_no), delay_seconds=delay)


async def poll_model(deps: Deps, job_id: str, poll_no: int) -> None:
    async with deps.unit() as unit:
        locked = await _locked(unit, job_id)
        if locked is None or locked[1].status != Status.MODEL_GENERATING:
            return
        job, _ = locked
        if not await repository.claim_poll(unit.session, job_id, poll_no):
            return
        vendor_job_id, started = str(job.vendor_job_id), job.started_at
    try:
        async with _timed(deps.providers.model.name, "poll_model"):
            status = await deps.providers.model.poll(vendor_job_id)
    except ProviderError as exc:
        if not exc.transient:
            await _fail(deps, job_id, Status.MODEL_FAILED, exc.code, str(exc))
            return
        status = ModelJobStatus(state=JobState.RUNNING)
    if status.state is JobState.SUCCEEDED:
        await _finish_model(deps, job_id, status)
    elif status.state is JobState.FAILED:
        code = status.error_code or "MODEL_GENERATION_FAILED"
        await _fail(deps, job_id, Status.MODEL_FAILED, code, status.error_message or code)
    else:
        elapsed = time.time() - started.timestamp() if started else 0.0
        await _report_model_progress(deps, job_id, poll_no + 1, status, elapsed)


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
    deps: Deps, job_id: str, next_poll: int, status: ModelJobStatus, elapsed: float
) -> None:
    if next_poll >= deps.settings.model_poll_max_attempts:
        await _fail(deps, job_id, Status.MODEL_FAILED, "TIMEOUT", "the 3D job took too long")
        return
    figure, estimated = model_progress(status, elapsed, deps.providers.model.typical_seconds)
    async with deps.unit() as unit:
        locked = await _locked(unit, job_id)
        if locked is None or locked[1].status != Status.MODEL_GENERATING:
            return
        request = locked[1]
        if int(figure) > int(request.progress):  # one event per whole percent, no chatter
            await service.transition(
                unit,
                request,
                Status.MODEL_GENERATING,
                step="generating 3D model",
                progress=figure,
                estimated=estimated,
            )
        unit.messages.append(_next_poll(deps, job_id, next_poll))


async def _store(deps: Deps, key: str, file: ModelFile) -> int:
    data = await _content(deps, file.data, file.url)
    await deps.storage.put(key, data, file.content_type)
    return len(data)


async def _finish_model(deps: Deps, job_id: str, status: ModelJobStatus) -> None:
    files = sorted(status.files, key=lambda f: f.format != "glb")  # GLB first when offered
    if not files:
        await _fail(deps, job_id, Status.MODEL_FAILED, "NO_OUTPUT", "the 3D job returned no file")
        return
    main = files[0]
    async with deps.db.read() as session:
        job = await repository.get_job(session, job_id)
    assert job is not None
    prefix = f"requests/{job.request_id}/model/{job_id}"
    try:
        size = await _store(deps, f"{prefix}.{main.format}", main)
        preview_key = f"{prefix}-preview.png" if status.preview else None
        if status.preview and preview_key:
            await _store(deps, preview_key, status.preview)
    except ProviderError as exc:
        await _fail(deps, job_id, Status.MODEL_FAILED, exc.code, str(exc))
        return
    async with deps.unit() as unit:
        request = await _complete(unit, job_id, Status.MODEL_GENERATING)
        if request is None:
            return
        model = await models.add_to_library(
            unit,
            request,
            file_key=f"{prefix}.{main.format}",
            file_format=main.format,
            content_type=main.content_type,
            file_size=size,
            preview_key=preview_key,
            provider=deps.providers.model.name,
        )
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
}


def declare_actors(broker: dramatiq.Broker, runtime: WorkerRuntime) -> None:
    """Registers one actor per stage on `broker`, each running with `runtime`'s deps."""
    for name, stage in STAGES.items():
        _actor(broker, runtime, name, stage)  # an Actor declares itself on its broker


def _actor(
    broker: dramatiq.Broker,
    runtime: WorkerRuntime,
    name: str,
    stage: Callable[..., Awaitable[None]],
) -> dramatiq.Actor[..., Any]:
    async def run_async(rid: str | None, *args: Any) -> None:
        token = request_id.set(rid)
        try:
            log.info("stage %s %s", name, args)
            deps = await runtime.deps()
            try:
                await stage(deps, *args)
            except Exception:
                log.exception("stage %s failed for %s", name, args)
                await _fail_unexpected(deps, name, args)
        finally:
            request_id.reset(token)

    def run(*args: Any) -> None:
        # Runs in the worker thread, where the current message is known; the stage
        # itself runs on the worker's event loop, carrying the message's request id.
        message = CurrentMessage.get_current_message()
        rid = message.options.get("request_id") if message is not None else None
        async_to_sync(run_async)(rid, *args)

    run.__name__ = name
    # Retries, backoff and dead letters are the job table's business (see DESIGN §4):
    # Dramatiq must not run a stage again behind the state machine's back.
    return dramatiq.Actor(
        run,
        broker=broker,
        actor_name=name,
        queue_name="default",
        priority=0,
        options={"max_retries": 0},
    )


async def _fail_unexpected(deps: Deps, stage: str, args: tuple[Any, ...]) -> None:
    target = Status.IMAGE_FAILED if stage in (Stage.OPTIMIZE_PROMPT,) else Status.MODEL_FAILED
    if stage == Stage.GENERATE_IMAGE:
        await _settle_image(deps, args[0], None, error=RuntimeError())
        return
    await _fail(deps, args[0], target, "INTERNAL", "internal error")
