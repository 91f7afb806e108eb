"""What happens to a job after an attempt: done, retried later, or given up for good.

Shared by the pipeline actors, the stall sweeper and `lumi queue`, so a retry or a
final failure looks the same whoever decides it. The caller holds the request and its
owner locked (`workers.claims.lock_job`) and passes the attempt it claimed, which
fences off any older attempt still running somewhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.config import Settings
from app.metrics import DEAD_LETTERS, JOB_RETRIES
from app.requests import repository, service
from app.requests.service import JobNote, Stage
from app.requests.stages import Status
from app.tables import DeadLetter, GenerationJob, GenerationRequest, utcnow
from app.unit import Unit

# Where each kind of job may run: the request statuses in which its work is still due.
DUE: dict[str, frozenset[Status]] = {
    "PROMPT": frozenset({Status.IMAGE_PENDING, Status.IMAGE_GENERATING}),
    "IMAGE": frozenset({Status.IMAGE_GENERATING}),
    "MODEL": frozenset({Status.MODEL_PENDING, Status.MODEL_GENERATING}),
}


_LONGEST_RETRY_AFTER = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed: a code for machines, words for people, and whether a
    later attempt may succeed (with the vendor's own hint of when)."""

    code: str
    message: str
    transient: bool
    retry_after: float | None = None
    job_status: str = "FAILED"  # or TIMEOUT, for a vendor job that ran out of time


def backoff(settings: Settings, attempt: int, retry_after: float | None = None) -> float:
    """Seconds before attempt `attempt + 1`: exponential with jitter (between half and all
    of base * 2^(attempt-1), capped), never sooner than the vendor's Retry-After."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:  # honoured, up to what the broker can delay a message by
        delay = max(delay, min(retry_after, _LONGEST_RETRY_AFTER))
    return delay


def message_for(request: GenerationRequest, job: GenerationJob, *, delay: float = 0.0) -> Any:
    """The stage message that runs `job` (again): a 3D job with a vendor job is polled."""
    stage, args = _stage_of(job)
    return service.stage_message(request, stage, *args, delay=delay)


def _stage_of(job: GenerationJob) -> tuple[str, tuple[Any, ...]]:
    if job.kind == "PROMPT":
        return Stage.OPTIMIZE_PROMPT, (job.id,)
    if job.kind == "IMAGE":
        return Stage.GENERATE_IMAGE, (job.id,)
    if job.vendor_job_id:
        return Stage.POLL_MODEL, (job.id, job.poll_count)
    return Stage.START_MODEL, (job.id,)


def describe(job: GenerationJob, request: GenerationRequest, index: int | None = None) -> str:
    if job.kind == "PROMPT":
        return "prompt optimization"
    if job.kind == "IMAGE":
        return f"image {(index or 0) + 1} of {request.image_count}"
    return "3D generation"


async def attempt_failed(
    unit: Unit,
    settings: Settings,
    job: GenerationJob,
    request: GenerationRequest,
    attempt: int,
    failure: Failure,
) -> None:
    """Retries the job later when the failure is transient and attempts remain; else
    gives it up for good. Does nothing when the attempt is no longer the job's."""
    if failure.transient and attempt < settings.job_max_attempts:
        delay = backoff(settings, attempt, failure.retry_after)
        at = utcnow() + timedelta(seconds=delay)
        retried = await repository.retry_job(
            unit.session,
            job.id,
            attempt=attempt,
            at=at,
            error_code=failure.code,
            error_message=failure.message,
        )
        if not retried:
            return
        JOB_RETRIES.labels(job.kind, failure.code).inc()
        if Status(request.status) in DUE[job.kind]:
            image = await repository.get_image(unit.session, job.image_id) if job.image_id else None
            what = describe(job, request, image.index if image else None)
            await service.transition(
                unit,
                request,
                Status(request.status),
                step=f"retrying {what} in {delay:.0f} s (attempt {attempt + 1} of "
                f"{settings.job_max_attempts})",
                message=f"{what} failed: {failure.message}"[:500],
                error_code=failure.code,
                job=JobNote(job.id, "RETRYING", attempt, at),
            )
        job.vendor_job_id = None  # the message must start the work again, not poll
        unit.messages.append(message_for(request, job, delay=delay))
        return
    await give_up(unit, job, request, failure, attempt=attempt)


async def give_up(
    unit: Unit,
    job: GenerationJob,
    request: GenerationRequest,
    failure: Failure,
    *,
    attempt: int | None,
    expect: tuple[str, ...] = ("RUNNING",),
) -> bool:
    """Fails the job for good: its message becomes a dead letter and the request moves
    on (another image may still come) or fails, refunding what it did not deliver."""
    if not await repository.finish_job(
        unit.session,
        job.id,
        failure.job_status,
        attempt=attempt,
        expect=expect,
        error_code=failure.code,
        error_message=failure.message[:1000],
    ):
        return False
    stage, _ = _stage_of(job)
    DEAD_LETTERS.labels(job.kind, failure.code).inc()
    unit.session.add(
        DeadLetter(
            job_id=job.id,
            request_id=request.id,
            stage=stage,
            queue=request.priority,
            attempts=attempt or job.attempt,
            error_code=failure.code,
            error_message=failure.message[:1000],
        )
    )
    status = Status(request.status)
    if job.kind == "IMAGE":
        image = await repository.get_image(unit.session, str(job.image_id))
        assert image is not None, "an image job points at its image"
        image.status = "FAILED"
        if status is not Status.IMAGE_GENERATING:
            request.images_failed += 1  # tallied, though no phase is left to settle
        else:
            await service.settle_images(
                unit,
                request,
                image.id,
                image.index,
                ok=False,
                failure=(failure.code, failure.message),
            )
    elif status in DUE[job.kind]:
        target = Status.IMAGE_FAILED if job.kind == "PROMPT" else Status.MODEL_FAILED
        await service.fail_request(
            unit, request, target, code=failure.code, message=failure.message
        )
    return True
