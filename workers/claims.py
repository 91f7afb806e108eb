"""Claiming a job for one attempt, watching it while its provider works, and
recording how the attempt ended: what every stage shares.

Each stage takes a job id, checks in a transaction that its work is still due
(delivery is at-least-once, so a repeat must be a no-op), calls its provider outside
any transaction, and commits the outcome through the requests service. Follow-up
messages and events go out only after that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import httpx

from app.deps import Deps
from app.metrics import PROVIDER_ERRORS, PROVIDER_LATENCY
from app.observability import redact
from app.requests import jobs, repository
from app.requests.service import JobNote
from app.requests.stages import Status
from app.tables import GenerationJob, GenerationRequest
from app.unit import Unit
from providers.base import (
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)

log = logging.getLogger(__name__)


Locked = tuple[GenerationJob, GenerationRequest]
Claimed = tuple[GenerationJob, GenerationRequest, int]


async def lock_job(unit: Unit, job_id: str) -> Locked | None:
    """The job and its request, the request's row locked and the job read as of that
    lock (cancel changes both under it, so what is read here is settled).

    One lock order everywhere: a request before its jobs and images, its owner last.
    The owner's row is locked by what needs it: numbering events at commit
    (`Unit.store_events`), paying or refunding, adding a model to the library.
    """
    request_id = await repository.request_of_job(unit.session, job_id)
    if request_id is None:
        return None
    request = await repository.get(unit.session, request_id, for_update=True)
    if request is None:
        return None
    job = await repository.get_job(unit.session, job_id, fresh=True)
    if job is None:
        return None
    return job, request


async def claim(unit: Unit, job_id: str, kind: str) -> Claimed | None:
    """Takes the job for one attempt when its work is still due; None otherwise (a
    repeated message, a cancelled request, a retry not due yet).

    The job is read before the request's lock: the claim's UPDATE requires the status
    and attempt read, so a job moved meanwhile (cancelled, taken) is simply not claimed."""
    job = await repository.get_job(unit.session, job_id)
    if job is None or job.kind != kind:
        return None
    request = await repository.get(unit.session, job.request_id, for_update=True)
    if request is None or Status(request.status) not in jobs.DUE[kind]:
        return None
    attempt = await repository.claim_job(unit.session, job)
    if attempt is None:
        return None
    return job, request, attempt


async def still_running(unit: Unit, job_id: str, attempt: int) -> Locked | None:
    """The job and its request, locked, when `attempt` still owns the job and its request
    still wants the work (checked after every provider call: cancel wins)."""
    locked = await lock_job(unit, job_id)
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
async def watched(deps: Deps, job_id: str, attempt: int) -> AsyncIterator[None]:
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


def failure(error: BaseException) -> jobs.Failure:
    if isinstance(error, VendorJobTimeout):
        return jobs.Failure(error.code, str(error), transient=True, job_status="TIMEOUT")
    if isinstance(error, ProviderError):
        retry_after = error.retry_after if isinstance(error, ProviderRateLimited) else None
        # Shown to the request's owner: never a key, whatever the vendor echoed back.
        return jobs.Failure(error.code, redact(str(error))[:1000], error.transient, retry_after)
    return jobs.Failure("INTERNAL", "internal error", transient=True)


async def attempt_failed(deps: Deps, job_id: str, attempt: int, error: BaseException) -> None:
    """Records a failed attempt: a retry later, or the job's final failure."""
    if isinstance(error, ProviderError):  # expected: one line, the vendor's words redacted
        log.warning("job %s attempt %s failed: %s", job_id, attempt, redact(str(error))[:500])
    else:
        log.error("job %s attempt %s failed", job_id, attempt, exc_info=error)
    async with deps.unit() as unit:
        locked = await lock_job(unit, job_id)
        if locked is None:
            return
        job, request = locked
        await jobs.attempt_failed(unit, deps.settings, job, request, attempt, failure(error))


@contextlib.asynccontextmanager
async def timed(provider: str, operation: str) -> AsyncIterator[None]:
    """Provider latency and errors for /metrics."""
    started = time.perf_counter()
    try:
        yield
    except ProviderError as exc:
        PROVIDER_ERRORS.labels(provider, operation, exc.code).inc()
        raise
    finally:
        PROVIDER_LATENCY.labels(provider, operation).observe(time.perf_counter() - started)


async def download(deps: Deps, data: bytes | None, url: str | None) -> bytes:
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


def running(job_id: str, attempt: int) -> JobNote:
    return JobNote(job_id, "RUNNING", attempt)


class VendorJobTimeout(ProviderTimeout):
    """A vendor 3D job ran out of time: the job shows TIMEOUT when it is given up."""

    code = "TIMEOUT"
