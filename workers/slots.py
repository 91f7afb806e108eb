"""Vendor concurrency slots (`LUMI_PROVIDER_CONCURRENCY`): a job attempt holds one at
a limited vendor while its work is there, and waits (not fails) when all are taken."""

from __future__ import annotations

from app.deps import Deps
from app.requests import jobs, repository, service
from app.requests.stages import Status
from providers.registry import Named, NoProvider
from workers.claims import attempt_failed, still_running


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


async def attempt_ended(
    deps: Deps, job_id: str, attempt: int, slots: Slots, error: BaseException
) -> None:
    """An attempt raised `error`: it waits for a vendor slot, or it failed."""
    if slots.waiting(error):
        await wait_for_slot(deps, job_id, attempt, slots.refused)
    else:
        await attempt_failed(deps, job_id, attempt, error)


async def wait_for_slot(deps: Deps, job_id: str, attempt: int, vendors: list[str]) -> None:
    """Gives the claim back (the job shows as queued again) and asks again later."""
    delay = min(5.0, max(0.5, deps.settings.model_poll_interval_seconds))
    async with deps.unit() as unit:
        locked = await still_running(unit, job_id, attempt)
        if locked is None:
            return
        job, request = locked
        if not await repository.unclaim_job(unit.session, job_id, attempt, delay=delay):
            return
        step = f"waiting for a free slot at {' or '.join(vendors)}"
        if request.step != step:
            await service.transition(unit, request, Status(request.status), step=step)
        unit.messages.append(jobs.message_for(request, job, delay=delay))
