"""The webhook courier: a loop in every worker process (and the embedded API) that feeds
the outbox from the event log and sends what is due.

Feeding reads each user's events after their cursor and writes the deliveries and the
moved cursor in one transaction, so the pipeline's stages pay nothing for webhooks and
an event enters the outbox once, whichever process gets there. Sending leases due
deliveries (SKIP LOCKED on MariaDB), calls the receivers outside any transaction, and
records each result with its next attempt. A process that dies mid-call leaves its
deliveries leased until the lease ends; then any courier sends them again (at least
once, same `webhook-id`). The loop runs every `webhook_poll_seconds`; every
`PRUNE_SECONDS` it also deletes the deliveries that finished (delivered or failed for
good) over `webhook_retention_days` ago, so the outbox does not grow for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import httpx

from app.deps import Deps
from app.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_LAG
from app.tables import WebhookDelivery, utcnow
from app.webhooks import repository, service, signing
from app.webhooks.sender import Outcome, post
from app.webhooks.ssrf import UrlGuard, guard_for
from workers.runtime import LoopService, WorkerRuntime

log = logging.getLogger(__name__)

FEED_USERS = 100  # users fed per round
FEED_EVENTS = 500  # events per user per transaction
PRUNE_SECONDS = 600.0  # how often a courier deletes finished deliveries past retention
PRUNE_BATCH = 1000  # deliveries deleted per transaction
PRUNE_BATCHES = 10  # per round at most: a large backlog goes over several rounds


async def feed(deps: Deps) -> int:
    """Moves every user's cursor to their last event; how many events it read."""
    async with deps.db.read() as session:
        users = await repository.behind(session, FEED_USERS)
    read = 0
    for user_id in users:
        while True:
            async with deps.db.write() as session:
                count = await service.dispatch(session, user_id, FEED_EVENTS)
            read += count
            if count < FEED_EVENTS:
                break
    return read


async def prune(deps: Deps) -> tuple[int, bool]:
    """Deletes the deliveries that finished over `webhook_retention_days` ago (none when
    it is 0), a batch per transaction and at most PRUNE_BATCHES batches, so sending is
    not held up by a large backlog; how many, and whether more may be left."""
    days = deps.settings.webhook_retention_days
    if not days:
        return 0, False
    before = utcnow() - timedelta(days=days)
    deleted = 0
    for _ in range(PRUNE_BATCHES):
        async with deps.db.write() as session:
            count = await repository.delete_finished(session, before, PRUNE_BATCH)
        deleted += count
        if count < PRUNE_BATCH:
            return deleted, False
    return deleted, True


async def _secrets(deps: Deps, deliveries: list[WebhookDelivery]) -> dict[str, list[str]]:
    """Each delivery's signing secrets as of now (a rotation applies at once)."""
    now = utcnow()
    async with deps.db.read() as session:
        endpoints = await repository.endpoints_by_id(
            session, sorted({d.endpoint_id for d in deliveries if d.endpoint_id})
        )
        accounts = {}
        for owner in {d.owner_id for d in deliveries if d.endpoint_id is None}:
            accounts[owner] = await repository.account(session, owner)
    found: dict[str, list[str]] = {}
    for d in deliveries:
        holder = endpoints.get(d.endpoint_id) if d.endpoint_id else accounts.get(d.owner_id)
        if holder is not None:
            found[d.id] = service.secrets_of(holder, now)
    return found


async def send_due(deps: Deps, guard: UrlGuard, client: httpx.AsyncClient) -> int:
    """Sends one batch of due deliveries; how many it sent."""
    settings = deps.settings
    now = utcnow()
    until = now + timedelta(seconds=settings.webhook_timeout_seconds + 10)
    async with deps.db.read() as session:
        if not await repository.any_due(session, now):
            return 0
    async with deps.db.write() as session:
        leased = await repository.lease_due(session, now, until, settings.webhook_batch)
    if not leased:
        return 0
    secrets = await _secrets(deps, leased)
    outcomes = await asyncio.gather(
        *(_attempt(deps, guard, client, d, secrets.get(d.id)) for d in leased)
    )
    done = utcnow()
    results: list[tuple[WebhookDelivery, object]] = []
    async with deps.db.write() as session:
        for delivery, outcome in zip(leased, outcomes, strict=True):
            values = service.after_attempt(
                delivery.attempts + 1,
                outcome.delivered,
                outcome.status_code,
                outcome.error,
                settings.webhook_retry_delays,
                done,
            )
            await repository.record(session, delivery.id, until, values)
            results.append((delivery, values.get("status")))
    for delivery, status in results:  # counted once written
        WEBHOOK_ATTEMPTS.labels(str(status or "retry").lower()).inc()
        if status == repository.DELIVERED:
            WEBHOOK_LAG.observe(max(0.0, (done - delivery.created_at).total_seconds()))
    return len(leased)


async def _attempt(
    deps: Deps,
    guard: UrlGuard,
    client: httpx.AsyncClient,
    delivery: WebhookDelivery,
    secrets: list[str] | None,
) -> Outcome:
    if not secrets:  # its endpoint was deleted meanwhile
        return Outcome(False, error="the webhook no longer exists")
    body = delivery.body.encode()
    headers = signing.headers(secrets, delivery.id, int(utcnow().timestamp()), body)
    outcome = await post(
        client, guard, delivery.url, body, headers, deps.settings.webhook_timeout_seconds
    )
    if not outcome.delivered:
        log.info(
            "webhook delivery failed",
            extra={
                "delivery": delivery.id,
                "error": outcome.error,
                "attempt": delivery.attempts + 1,
            },
        )
    return outcome


class WebhookCourier(LoopService):
    """Feeds the outbox and sends due deliveries every `webhook_poll_seconds`, and
    deletes finished ones past retention every `PRUNE_SECONDS`."""

    def __init__(self, runtime: WorkerRuntime, guard: UrlGuard | None = None) -> None:
        super().__init__(runtime)
        self.guard = guard or guard_for(runtime.settings)

    async def run(self) -> None:
        # A client of its own: no proxies from the environment (the call must go to the
        # address just checked), no redirects, and vendors' connections left alone.
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
            await self._rounds(client)

    async def _rounds(self, client: httpx.AsyncClient) -> None:
        interval = self.runtime.settings.webhook_poll_seconds
        stopping = self.stopping
        pruned_at = -PRUNE_SECONDS  # at the first round, then every PRUNE_SECONDS
        while not stopping.is_set():
            busy = False
            try:
                deps = await self.runtime.deps()
                if time.monotonic() - pruned_at >= PRUNE_SECONDS:
                    deleted, more = await prune(deps)
                    # A backlog left: the next round goes on with it, after a send.
                    pruned_at = time.monotonic() - (PRUNE_SECONDS if more else 0)
                    if deleted:
                        log.info("deleted %s finished webhook deliveries", deleted)
                await feed(deps)
                busy = await send_due(deps, self.guard, client) > 0
            except Exception:
                log.exception("webhook round failed; trying again in %.1f s", interval)
            if busy:
                continue  # more may be due right away (a full batch, the next in order)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stopping.wait()
