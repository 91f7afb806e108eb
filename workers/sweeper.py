"""Stall recovery: the database, not the broker, says what work is owed.

Every pass looks for three things:
- running jobs whose heartbeat stopped (a killed worker): a 3D job already at the
  vendor is polled again; any other job is retried like a failed attempt;
- waiting jobs (PENDING, or RETRYING and due) with no message in the broker (a lost
  message, an embedded-mode restart): their message is sent again. A job whose message
  is still queued is left alone, however long the queue, unless the delayed message it
  waits for was due over `overdue_seconds` ago: Dramatiq's Redis consumer forgets the
  delayed messages it holds at a connection error (and its thread can die of one, see
  workers/watchdog.py), while Redis still lists them as its own for as long as the
  worker lives; such a message claims to be queued and never comes (dramatiq #527);
- active requests with no open job at all: nothing can move them on, so they fail
  (refunding what they did not deliver) and can be retried.
Every action is conditional on the row it read, and a repeated message is a no-op, so
several workers may sweep at once. (A 3D job at its vendor is RUNNING and belongs to
the pollers (workers/poller.py) while its next poll is not long overdue, however old
its heartbeat: a vendor's rate limit may space its polls wider than a heartbeat lives.
Its poll overdue by `stall_seconds` means no poller is running: it is made due again
and counted as polled, and the first poller to run takes it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.deps import Deps
from app.metrics import RECOVERED_JOBS
from app.requests import jobs, polls, repository, service
from app.requests.stages import Status
from app.tables import utcnow
from app.unit import Unit
from workers.claims import lock_job
from workers.runtime import LoopService, WorkerRuntime

log = logging.getLogger(__name__)

# A job sent less than this long ago may have its message still on the way.
_GRACE = timedelta(seconds=2)


@dataclass
class SweepReport:
    polled: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.polled or self.retried or self.resent or self.failed)


async def sweep(deps: Deps, *, orphaned_before: datetime | None = None) -> SweepReport:
    """One pass. `orphaned_before`: running jobs whose heartbeat is older than this are
    stalled whatever their age (at an embedded start: the process that ran them is gone)."""
    report = SweepReport()
    now = utcnow()
    cutoff = now - timedelta(seconds=deps.settings.stall_seconds)
    if orphaned_before is not None:
        cutoff = max(cutoff, orphaned_before)
    async with deps.db.read() as session:
        stalled = await polls.stalled_jobs(session, cutoff)
    for job_id in stalled:
        async with deps.unit() as unit:
            await _recover(unit, deps, job_id, cutoff, report)
    settled = now - _GRACE
    if orphaned_before is not None:  # all that was queued before it is gone
        settled = max(settled, orphaned_before)
    overdue_before = now - timedelta(seconds=deps.settings.overdue_seconds)
    async with deps.db.read() as session:
        waiting = await repository.waiting_jobs(session, settled)
        overdue = set(await repository.overdue_jobs(session, overdue_before))
    if waiting:
        queued = await asyncio.to_thread(deps.queue.outstanding_job_ids)
        for job_id in waiting:
            if job_id in queued and job_id not in overdue:
                continue
            async with deps.unit() as unit:
                await _resend(unit, job_id, report, overdue_before if job_id in queued else None)
    async with deps.db.read() as session:
        stuck = await repository.requests_without_open_jobs(session, cutoff)
    for request_id in stuck:
        async with deps.unit() as unit:
            await _fail_stuck(unit, request_id, cutoff, report)
    for action in ("polled", "retried", "resent", "failed"):
        if count := len(getattr(report, action)):
            RECOVERED_JOBS.labels(action).inc(count)
    if report:
        log.warning(
            "sweep: %s polled again, %s retried, %s resent, %s failed",
            len(report.polled),
            len(report.retried),
            len(report.resent),
            len(report.failed),
            extra={"sweep": report.__dict__},
        )
    return report


async def _recover(
    unit: Unit, deps: Deps, job_id: str, cutoff: datetime, report: SweepReport
) -> None:
    locked = await lock_job(unit, job_id)
    if locked is None:
        return
    job, request = locked
    if job.status != "RUNNING" or job.heartbeat_at is None or job.heartbeat_at >= cutoff:
        return  # it moved on since the query
    if job.kind == "MODEL" and job.vendor_job_id and request.status == Status.MODEL_GENERATING:
        if job.next_poll_at is not None and job.next_poll_at >= cutoff:
            return  # a poller has it
        # The vendor still has the job: ask it again rather than pay for a second one.
        await polls.make_due(unit.session, job.id, only_unscheduled=False)
        report.polled.append(job.id)
        return
    failure = jobs.Failure("WORKER_LOST", "the worker running this job stopped", transient=True)
    await jobs.attempt_failed(unit, deps.settings, job, request, job.attempt, failure)
    report.retried.append(job.id)


async def _resend(
    unit: Unit, job_id: str, report: SweepReport, untouched_before: datetime | None = None
) -> None:
    """Sends a waiting job's message again. `untouched_before`: its old message is said
    to be queued, so only if the job did not change since (another sweep resent it)."""
    locked = await lock_job(unit, job_id)
    if locked is None:
        return
    job, request = locked
    if job.status not in ("PENDING", "RETRYING"):
        return
    if job.status == "RETRYING" and job.next_attempt_at and job.next_attempt_at > utcnow():
        return
    if untouched_before is not None and job.updated_at >= untouched_before:
        return
    # Under the request's lock, like every change of a waiting job. A job overdue with
    # its stranded message still listed is thus resent once per `overdue_seconds`, not
    # at every pass, while it waits behind a long queue.
    job.updated_at = utcnow()
    unit.messages.append(jobs.message_for(request, job))
    report.resent.append(job.id)


async def _fail_stuck(unit: Unit, request_id: str, cutoff: datetime, report: SweepReport) -> None:
    request = await repository.get(unit.session, request_id, for_update=True)
    if request is None or request.updated_at >= cutoff:
        return
    if await repository.has_open_jobs(unit.session, request_id):
        return
    if Status(request.status) not in repository.STUCK_STATUSES:
        return
    await service.fail_stuck(unit, request)
    report.failed.append(request_id)


class Sweeper(LoopService):
    """Runs `sweep` every `sweep_interval_seconds` on a worker's event loop."""

    def __init__(self, runtime: WorkerRuntime, *, orphaned_before: datetime | None = None):
        super().__init__(runtime)
        self.orphaned_before = orphaned_before

    async def run(self) -> None:
        interval = self.runtime.settings.sweep_interval_seconds
        orphaned_before = self.orphaned_before
        stopping = self.stopping
        while not stopping.is_set():
            try:
                deps = await self.runtime.deps()
                await sweep(deps, orphaned_before=orphaned_before)
                orphaned_before = None
            except Exception:
                log.exception("sweep failed; trying again in %.0f s", interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stopping.wait()
