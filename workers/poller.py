"""The 3D poller: one per worker process, it asks the vendors about many jobs per round.

A round leases each vendor's due 3D jobs from the database (`app/requests/polls.py`),
as many as the vendor's request-rate quota admits in about a second, books their polls
with the quota every process shares (`LUMI_PROVIDER_REQUEST_RATES`), asks the vendor
about all of them at once, copies the files of the finished ones into our storage, and
then commits every job's outcome in one transaction: the next poll of each job still
running (with an event where its progress moved far enough), and each finished job's
model and completed request. Events go out after that commit, one per change.

A poller that dies leaves its jobs leased until the lease runs out; then any other
poller takes them. The database stays the source of truth: nothing about a poll lives
in the broker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.deps import Deps
from app.models.service import StoredModel
from app.requests import polls, service
from app.requests.polls import Leased
from app.requests.stages import Status
from app.tables import GenerationRequest, utcnow
from app.unit import Unit
from providers.base import (
    JobState,
    ModelGenerator,
    ModelJobStatus,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from workers.claims import VendorJobTimeout, attempt_failed, timed
from workers.model import (
    cancel_vendor_job,
    finish_in,
    go_at,
    model_lease,
    model_progress,
    paced_rate,
    poll_delay,
    store_model,
    worth_an_event,
)
from workers.runtime import LoopService

log = logging.getLogger(__name__)

# A round leases about this many seconds of a rate-limited vendor's polls: its jobs are
# asked soon after they are leased, and a round ends about as often.
ROUND_SECONDS = 1.0
# Vendor calls one round makes at once, and rounds a poller runs at once.
CONCURRENT_CALLS = 64
CONCURRENT_ROUNDS = 4
# A lease outlives the longest vendor answer by this much.
LEASE_MARGIN_SECONDS = 5.0


@dataclass
class Outcome:
    """What one poll found, and what to write for it."""

    job: Leased
    state: str  # running, finished, failed, closed (nothing more to ask)
    next_poll_at: datetime | None = None
    figure: float = 0.0
    estimated: bool = True
    stored: StoredModel | None = None
    error: BaseException | None = None

    @property
    def holder(self) -> str:
        return f"{self.job.job_id}:{self.job.attempt}"


def lease_seconds(deps: Deps) -> float:
    """How long a poller holds the jobs it leased: its polls may be booked behind those
    of its other rounds under way, then wait for the vendor's answer."""
    rounds = ROUND_SECONDS * CONCURRENT_ROUNDS
    return deps.settings.provider_timeout_seconds + rounds + LEASE_MARGIN_SECONDS


async def poll_round(deps: Deps) -> int:
    """One round of the poller: how many jobs it took."""
    leased = await _lease(deps)
    if leased:
        await _work(deps, leased)
    return len(leased)


async def _work(deps: Deps, leased: list[Leased]) -> None:
    """Polls the leased jobs, commits what the polls found, then renews or frees slots."""
    began = time.perf_counter()
    outcomes = await _poll_all(deps, leased)
    polled_at = time.perf_counter()
    await _commit_all(deps, outcomes)
    committed_at = time.perf_counter()
    await _after_commit(deps, outcomes)
    log.debug(
        "3D poll round: %s jobs (%s done); polls %.3f s, commit %.3f s, after %.3f s",
        len(leased),
        sum(o.state == "finished" for o in outcomes),
        polled_at - began,
        committed_at - polled_at,
        time.perf_counter() - committed_at,
    )


async def seconds_until_due(deps: Deps) -> float | None:
    """How long until any 3D job's next poll is due (0: now); None when none is owed."""
    async with deps.db.read() as session:
        due = await polls.next_due(session)
    if due is None:
        return None
    return max(0.0, (due - utcnow()).total_seconds())


def _batch(deps: Deps, vendor: str) -> int:
    """How many of `vendor`'s jobs a round takes: about a second of its quota."""
    limit = deps.settings.model_poll_batch
    rate = paced_rate(deps, vendor)
    if rate is None:
        return limit
    return max(1, min(limit, math.ceil(rate * ROUND_SECONDS)))


async def _lease(deps: Deps) -> list[Leased]:
    now = utcnow()
    until = now + timedelta(seconds=lease_seconds(deps))
    names = deps.providers.model.names
    leased: list[Leased] = []
    async with deps.db.write() as session:
        for vendor in names:
            leased += await polls.lease_due(
                session, now=now, until=until, limit=_batch(deps, vendor), provider=vendor
            )
        # jobs of a vendor the settings no longer name: each fails its attempt
        leased += await polls.lease_due(
            session, now=now, until=until, limit=deps.settings.model_poll_batch, not_among=names
        )
    return leased


async def _poll_all(deps: Deps, leased: list[Leased]) -> list[Outcome]:
    """Asks the vendors about every leased job at once, each poll at its booked moment."""
    calls = asyncio.Semaphore(CONCURRENT_CALLS)
    starts = await _book(deps, [job for job in leased if _asks_vendor(deps, job)])
    return list(
        await asyncio.gather(
            *(_poll_one(deps, job, starts.get(job.job_id), calls) for job in leased)
        )
    )


def _asks_vendor(deps: Deps, job: Leased) -> bool:
    return (
        job.job_status == "RUNNING"
        and job.request_status == Status.MODEL_GENERATING
        and job.provider in deps.providers.model.names
    )


async def _book(deps: Deps, jobs: list[Leased]) -> dict[str, float]:
    """When (a `time.monotonic()` moment) each job's poll may go, within its vendor's
    quota; the polls of a vendor without one go at once."""
    starts: dict[str, float] = {}
    by_vendor: dict[str, list[Leased]] = {}
    for job in jobs:
        by_vendor.setdefault(job.provider, []).append(job)
    for vendor, group in by_vendor.items():
        rate = paced_rate(deps, vendor)
        if rate is None:
            continue
        wait = await deps.providers.rates.reserve(
            f"{vendor}:poll", per_second=rate, count=len(group)
        )
        first = time.monotonic() + wait
        starts.update((job.job_id, first + index / rate) for index, job in enumerate(group))
    return starts


async def _poll_one(
    deps: Deps, job: Leased, start: float | None, calls: asyncio.Semaphore
) -> Outcome:
    if job.job_status == "CANCELLED":  # the request was cancelled: stop the vendor's work
        await cancel_vendor_job(deps, job.provider, job.vendor_job_id)
        return Outcome(job, "closed")
    if job.request_status != Status.MODEL_GENERATING:
        return Outcome(job, "closed")
    if job.provider not in deps.providers.model.names:  # the settings changed under the job
        gone = f"{job.provider} is no longer configured"
        return Outcome(job, "failed", error=ProviderUnavailable(gone, provider=job.provider))
    provider = deps.providers.model.named(job.provider)
    elapsed = (utcnow() - job.started_at).total_seconds() if job.started_at else 0.0
    limit = deps.settings.model_job_timeout_seconds
    if elapsed > limit:
        await cancel_vendor_job(deps, job.provider, job.vendor_job_id)
        timeout = VendorJobTimeout(f"the 3D job did not finish within {limit:.0f} s")
        return Outcome(job, "failed", error=timeout)
    try:
        async with calls:
            if start is not None:
                await go_at(deps, job.provider, "poll", start)
            return await _ask(deps, job, provider, elapsed)
    except Exception as exc:  # unexpected: the attempt fails and is retried, logged
        return Outcome(job, "failed", error=exc)


async def _ask(deps: Deps, job: Leased, provider: ModelGenerator, elapsed: float) -> Outcome:
    try:
        async with timed(job.provider, "poll_model"):
            status = await provider.poll(job.vendor_job_id)
    except ProviderError as exc:
        if not exc.transient:
            return Outcome(job, "failed", error=exc)
        status = ModelJobStatus(state=JobState.RUNNING)  # ask again at the next poll
    if status.state is JobState.FAILED:
        code = status.error_code or "MODEL_GENERATION_FAILED"
        message = f"{job.provider}: {status.error_message or code}"
        kind = ProviderUnavailable if status.transient else ProviderRejected
        return Outcome(job, "failed", error=kind(message, provider=job.provider))
    if status.files:
        limit = deps.settings.stage_time_limit_seconds
        try:
            async with asyncio.timeout(limit):
                stored = await store_model(deps, job.model_format, status, job.provider)
        except TimeoutError:
            message = f"storing the model took longer than its limit of {limit:.0f} s"
            return Outcome(job, "failed", error=ProviderTimeout(message))
        return Outcome(job, "finished", stored=stored)
    if status.state is JobState.SUCCEEDED:
        return Outcome(
            job, "failed", error=ProviderUnavailable("the 3D job finished without a file")
        )
    figure, estimated = model_progress(status, elapsed, provider.typical_seconds)
    at = utcnow() + timedelta(seconds=poll_delay(deps.settings, elapsed))
    return Outcome(job, "running", next_poll_at=at, figure=figure, estimated=estimated)


async def _commit_all(deps: Deps, outcomes: list[Outcome]) -> None:
    """Every outcome in one transaction; should that fail (a deadlock, say), each in its
    own, so one troubled job does not hold up the others. A job whose write is lost
    keeps its lease and is polled again when the lease runs out."""
    try:
        await _commit(deps, outcomes)
        return
    except Exception:
        if len(outcomes) == 1:
            log.exception("3D poll of job %s not committed", outcomes[0].job.job_id)
            return
        log.warning("a batch of %s 3D polls failed to commit; one by one", len(outcomes))
    for outcome in outcomes:
        try:
            await _commit(deps, [outcome])
        except Exception:
            log.exception("3D poll of job %s not committed", outcome.job.job_id)


async def _commit(deps: Deps, outcomes: list[Outcome]) -> None:
    running = [o for o in outcomes if o.state == "running"]
    finished = [o for o in outcomes if o.state == "finished"]
    closed = [o.job.job_id for o in outcomes if o.state == "closed"]
    async with deps.unit() as unit:
        noted = [o for o in running if worth_an_event(o.figure, o.estimated, o.job.progress)]
        locked = await polls.lock_requests(
            unit.session, [o.job.request_id for o in noted + finished]
        )
        loud = {id(o) for o in noted}
        quiet = [o for o in running if id(o) not in loud]
        await polls.reschedule(unit.session, [(o.job, _at(o)) for o in quiet])
        for outcome in noted:
            await _report_progress(unit, outcome, locked)
        for outcome in finished:
            assert outcome.stored is not None
            await finish_in(
                unit, outcome.job.job_id, outcome.job.attempt, outcome.stored, outcome.job.provider
            )
        await polls.unschedule(unit.session, closed)


def _at(outcome: Outcome) -> datetime:
    assert outcome.next_poll_at is not None
    return outcome.next_poll_at


async def _report_progress(
    unit: Unit, outcome: Outcome, locked: dict[str, GenerationRequest]
) -> None:
    if not await polls.reschedule_one(unit.session, outcome.job, _at(outcome)):
        return  # another attempt or poller has the job now
    request = locked.get(outcome.job.request_id)
    if request is None:
        return
    if request.status != Status.MODEL_GENERATING:
        return  # cancelled meanwhile
    if not worth_an_event(outcome.figure, outcome.estimated, request.progress):
        return
    await service.transition(
        unit,
        request,
        Status.MODEL_GENERATING,
        step=request.step,
        progress=outcome.figure,
        estimated=outcome.estimated,
    )


async def _after_commit(deps: Deps, outcomes: list[Outcome]) -> None:
    """Vendor slots: renewed for the jobs still running (one call per vendor), freed for
    the others; failed attempts are recorded (each retried or given up)."""
    limits = deps.providers.limits
    renew: dict[str, list[str]] = {}
    for outcome in outcomes:
        vendor = outcome.job.provider
        if vendor not in limits:
            continue
        if outcome.state == "running":
            renew.setdefault(vendor, []).append(outcome.holder)
        else:
            await deps.providers.limiter.release(vendor, outcome.holder)
    for vendor, holders in renew.items():
        longest = max(poll_delay(deps.settings, 1e9), ROUND_SECONDS) * 3
        lease = max(model_lease(deps), longest)
        await deps.providers.limiter.renew(vendor, holders, lease=lease)
    for outcome in outcomes:
        if outcome.state == "failed":
            assert outcome.error is not None
            await attempt_failed(deps, outcome.job.job_id, outcome.job.attempt, outcome.error)


class Poller(LoopService):
    """Leases due 3D jobs on a worker's event loop and polls them in rounds, up to
    CONCURRENT_ROUNDS at once, resting when none is due. Stopping lets the rounds under
    way write what they found; one that hangs is cancelled, its jobs then wait for
    their lease to run out."""

    LONGEST_REST = 1.0  # a new job's first poll is found at least this often

    async def run(self) -> None:
        stopping = self.stopping
        rounds: set[asyncio.Task[None]] = set()
        try:
            while not stopping.is_set():
                rest = await self._next(rounds)
                if rest > 0:
                    waits: list[Any] = [asyncio.ensure_future(stopping.wait()), *rounds]
                    await asyncio.wait(waits, timeout=rest, return_when=asyncio.FIRST_COMPLETED)
                    waits[0].cancel()
            if rounds:  # let the rounds under way write what they found
                await asyncio.wait(rounds)
        finally:
            for task in rounds:
                task.cancel()
            await asyncio.gather(*rounds, return_exceptions=True)

    async def _next(self, rounds: set[asyncio.Task[None]]) -> float:
        """Starts the next round when jobs are due and fewer than CONCURRENT_ROUNDS run
        (one waiting on slow downloads must not hold up the others' polls); how long to
        rest before looking again."""
        for task in [task for task in rounds if task.done()]:
            rounds.discard(task)
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("a 3D poll round failed", exc_info=error)
        if len(rounds) >= CONCURRENT_ROUNDS:
            return self.LONGEST_REST  # until one of them ends
        rest = self.LONGEST_REST
        try:
            deps = await self.runtime.deps()
            rest = min(rest, deps.settings.model_poll_interval_seconds)
            leased = await _lease(deps)
            if leased:
                rounds.add(asyncio.create_task(_work(deps, leased)))
                return 0.0
            due = await seconds_until_due(deps)
        except Exception:
            log.exception("leasing 3D polls failed; trying again in %.1f s", rest)
            return rest
        return max(0.01, rest if due is None else min(rest, due))
