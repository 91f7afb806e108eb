"""What webhooks do: register endpoints, turn a user's new events into deliveries (the
outbox), and decide what an attempt's result means for the next one. Never commits:
callers open the transaction."""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import BadUserInput, NotFound
from app.tables import (
    GenerationRequest,
    RequestEvent,
    WebhookAccount,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookRequestUrl,
    new_id,
    utcnow,
)
from app.webhooks import payload, repository
from app.webhooks.signing import new_secret

REQUEST_TARGET = "request"  # `target` of deliveries to a request's own webhookUrl
MAX_ENDPOINTS = 20


class WebhookEvent(Enum):
    REQUEST_UPDATED = "REQUEST_UPDATED"  # every event of every request
    REQUEST_FINISHED = "REQUEST_FINISHED"  # only the final one: COMPLETED, FAILED, CANCELLED


class WebhookNotFound(NotFound):
    default_message = "no such webhook"


class DeliveryNotFound(NotFound):
    default_message = "no such webhook delivery"


def wants(events: str, row: RequestEvent) -> bool:
    chosen = set(events.split(","))
    if WebhookEvent.REQUEST_UPDATED.value in chosen:
        return True
    return WebhookEvent.REQUEST_FINISHED.value in chosen and row.status in payload.FINAL


def secrets_of(holder: WebhookEndpoint | WebhookAccount, now: datetime) -> list[str]:
    """The secrets that sign now: the current one, and a rotated one in its grace time."""
    secrets = [holder.secret]
    expires = holder.previous_secret_expires_at
    if holder.previous_secret and expires is not None and expires > now:
        secrets.append(holder.previous_secret)
    return secrets


def rotate(holder: WebhookEndpoint | WebhookAccount, grace_seconds: float) -> str:
    holder.previous_secret = holder.secret
    holder.previous_secret_expires_at = utcnow() + timedelta(seconds=grace_seconds)
    holder.secret = new_secret()
    return holder.secret


async def ensure_account(session: AsyncSession, user_id: str) -> WebhookAccount:
    """The user's cursor (from their last event on: older events are not sent) and
    default secret, made on first use."""
    found = await repository.account(session, user_id)
    if found is not None:
        return found
    created = WebhookAccount(
        user_id=user_id,
        cursor=await repository.last_event_seq(session, user_id),
        secret=new_secret(),
    )
    session.add(created)
    await session.flush()
    return created


def check_events(events: Sequence[WebhookEvent]) -> str:
    if not events:
        raise BadUserInput("choose at least one event", field="events")
    return ",".join(sorted({e.value for e in events}))


async def create_endpoint(
    session: AsyncSession,
    owner_id: str,
    url: str,
    events: Sequence[WebhookEvent],
    secret: str | None,
) -> WebhookEndpoint:
    """`url` is vetted already (ssrf.UrlGuard.vet)."""
    chosen = check_events(events)
    if secret is not None and not _valid_secret(secret):
        raise BadUserInput("secret must be whsec_ and base64 of 24-64 bytes", field="secret")
    if len(await repository.endpoints_of(session, owner_id, limit=MAX_ENDPOINTS)) >= MAX_ENDPOINTS:
        raise BadUserInput(f"at most {MAX_ENDPOINTS} webhooks per user", field="url")
    await ensure_account(session, owner_id)
    endpoint = WebhookEndpoint(
        owner_id=owner_id,
        url=url,
        events=chosen,
        secret=secret or new_secret(),
        after_user_seq=await repository.last_event_seq(session, owner_id),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


def _valid_secret(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return False
    return 24 <= len(key) <= 64


async def follow_request(session: AsyncSession, request: GenerationRequest, url: str) -> None:
    """Sends `request`'s events to `url` too (called before its first event is stored:
    the unit stores events at commit). A request answered again for its idempotency
    key keeps the URL it was made with."""
    if request.seq > 1 or await repository.request_url(session, request.id) is not None:
        return
    await ensure_account(session, request.user_id)
    session.add(WebhookRequestUrl(request_id=request.id, user_id=request.user_id, url=url))


async def dispatch(session: AsyncSession, user_id: str, limit: int) -> int:
    """Turns the user's events after their cursor into deliveries and moves the cursor,
    in the caller's transaction: each event enters the outbox once. Returns how many
    events it read (0: the cursor is caught up, or another process has it)."""
    account = await repository.account(session, user_id, for_update=True)
    if account is None:
        return 0
    events = await repository.events_after(session, user_id, account.cursor, limit)
    if not events:
        return 0
    endpoints = await repository.endpoints_of(session, user_id)
    urls = await repository.request_urls(session, sorted({e.request_id for e in events}))
    now = utcnow()
    for event in events:
        body = payload.body(event)
        for endpoint in endpoints:
            if event.user_seq > endpoint.after_user_seq and wants(endpoint.events, event):
                session.add(_delivery(event, body, now, endpoint.id, endpoint.url, endpoint.id))
        if (url := urls.get(event.request_id)) is not None:
            session.add(_delivery(event, body, now, REQUEST_TARGET, url, None))
    account.cursor = events[-1].user_seq
    return len(events)


def _delivery(
    event: RequestEvent, body: str, now: datetime, target: str, url: str, endpoint_id: str | None
) -> WebhookDelivery:
    return WebhookDelivery(
        id="msg_" + new_id(),
        owner_id=event.user_id,
        endpoint_id=endpoint_id,
        target=target,
        url=url,
        request_id=event.request_id,
        seq=event.seq,
        user_seq=event.user_seq,
        event_type=payload.event_type(event),
        body=body,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


def after_attempt(
    attempts: int,
    delivered: bool,
    status_code: int | None,
    error: str | None,
    delays: Sequence[float],
    now: datetime,
) -> dict[str, object]:
    """The columns an attempt's result sets: DELIVERED; or the next attempt after the
    schedule's delay for it (+-10% jitter, so a receiver back up is not hit by all its
    retries at once); or FAILED when the schedule is spent."""
    values: dict[str, object] = {
        "attempts": attempts,
        "last_status_code": status_code,
        "last_error": error[:500] if error else None,
        "updated_at": now,
    }
    if delivered:
        return {
            **values,
            "status": repository.DELIVERED,
            "delivered_at": now,
            "next_attempt_at": None,
        }
    if attempts > len(delays):
        return {**values, "status": repository.FAILED, "next_attempt_at": None}
    delay = delays[attempts - 1] * random.uniform(0.9, 1.1)
    return {**values, "next_attempt_at": now + timedelta(seconds=delay)}


async def redeliver(session: AsyncSession, owner_id: str, delivery_id: str) -> WebhookDelivery:
    """Sends it again now, with the same id and body, and a fresh retry schedule."""
    delivery = await repository.delivery_owned(session, delivery_id, owner_id, for_update=True)
    if delivery is None:
        raise DeliveryNotFound()
    now = utcnow()
    delivery.status = repository.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.updated_at = now
    return delivery
