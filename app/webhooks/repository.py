"""All SQL of webhooks: endpoints, the per-user cursor over the event log, the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from app.tables import (
    RequestEvent,
    User,
    WebhookAccount,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookRequestUrl,
)

PENDING, DELIVERED, FAILED = "PENDING", "DELIVERED", "FAILED"


def _locking(session: AsyncSession) -> bool:
    """Row locks on MariaDB; SQLite has one writer at a time anyway."""
    return session.get_bind().dialect.name != "sqlite"


# Endpoints.


async def endpoints_of(
    session: AsyncSession, owner_id: str, *, before_id: str | None = None, limit: int = 1000
) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).where(col(WebhookEndpoint.owner_id) == owner_id)
    if before_id is not None:
        query = query.where(col(WebhookEndpoint.id) < before_id)
    query = query.order_by(col(WebhookEndpoint.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def endpoint_owned(
    session: AsyncSession, endpoint_id: str, owner_id: str
) -> WebhookEndpoint | None:
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    return endpoint if endpoint is not None and endpoint.owner_id == owner_id else None


async def endpoints_by_id(session: AsyncSession, ids: Sequence[str]) -> dict[str, WebhookEndpoint]:
    if not ids:
        return {}
    query = select(WebhookEndpoint).where(col(WebhookEndpoint.id).in_(ids))
    return {e.id: e for e in (await session.execute(query)).scalars()}


async def delete_endpoint(session: AsyncSession, endpoint: WebhookEndpoint) -> None:
    """The endpoint and its outbox rows: nothing is sent to it any more."""
    await session.execute(
        delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint.id)
    )
    await session.delete(endpoint)


# The per-user cursor.


async def account(
    session: AsyncSession, user_id: str, *, for_update: bool = False
) -> WebhookAccount | None:
    query = select(WebhookAccount).where(col(WebhookAccount.user_id) == user_id)
    if for_update and _locking(session):
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def last_event_seq(session: AsyncSession, user_id: str) -> int:
    query = select(col(User.event_seq)).where(col(User.id) == user_id)
    return int((await session.execute(query)).scalar_one())


async def behind(session: AsyncSession, limit: int) -> list[str]:
    """Users with events their cursor has not passed yet."""
    query = (
        select(col(WebhookAccount.user_id))
        .join(User, col(User.id) == col(WebhookAccount.user_id))
        .where(col(User.event_seq) > col(WebhookAccount.cursor))
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def events_after(
    session: AsyncSession, user_id: str, after: int, limit: int
) -> list[RequestEvent]:
    query = (
        select(RequestEvent)
        .where(col(RequestEvent.user_id) == user_id, col(RequestEvent.user_seq) > after)
        .order_by(col(RequestEvent.user_seq))
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def request_urls(session: AsyncSession, request_ids: Sequence[str]) -> dict[str, str]:
    if not request_ids:
        return {}
    query = select(WebhookRequestUrl).where(col(WebhookRequestUrl.request_id).in_(request_ids))
    return {row.request_id: row.url for row in (await session.execute(query)).scalars()}


async def request_url(session: AsyncSession, request_id: str) -> WebhookRequestUrl | None:
    return await session.get(WebhookRequestUrl, request_id)


# The outbox.


async def any_due(session: AsyncSession, now: datetime) -> bool:
    """Whether a PENDING delivery is due: one index probe, in a read, so an idle courier
    opens no write transaction (on SQLite that would take the database's write lock)."""
    query = (
        select(col(WebhookDelivery.id))
        .where(
            col(WebhookDelivery.status) == PENDING,
            col(WebhookDelivery.next_attempt_at) <= now,
        )
        .limit(1)
    )
    return (await session.execute(query)).first() is not None


async def lease_due(
    session: AsyncSession, now: datetime, until: datetime, limit: int
) -> list[WebhookDelivery]:
    """Due PENDING deliveries with no earlier PENDING one of the same target and request
    (a request's events go out in order), leased until `until`: another process skips
    them (SKIP LOCKED) and, once this transaction commits, finds them not due."""
    earlier = aliased(WebhookDelivery)
    blocked = exists().where(
        and_(
            col(earlier.target) == col(WebhookDelivery.target),
            col(earlier.request_id) == col(WebhookDelivery.request_id),
            col(earlier.status) == PENDING,
            col(earlier.seq) < col(WebhookDelivery.seq),
        )
    )
    query = (
        select(WebhookDelivery)
        .where(
            col(WebhookDelivery.status) == PENDING,
            col(WebhookDelivery.next_attempt_at) <= now,
            ~blocked,
        )
        .order_by(col(WebhookDelivery.next_attempt_at))
        .limit(limit)
    )
    if _locking(session):
        query = query.with_for_update(skip_locked=True)
    rows = list((await session.execute(query)).scalars())
    for row in rows:
        row.next_attempt_at = until
    return rows


async def record(
    session: AsyncSession,
    delivery_id: str,
    leased_until: datetime,
    values: dict[str, object],
) -> None:
    """Writes an attempt's result, unless the delivery changed since it was leased (a
    redelivery asked for meanwhile wins)."""
    await session.execute(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.id) == delivery_id,
            col(WebhookDelivery.status) == PENDING,
            col(WebhookDelivery.next_attempt_at) == leased_until,
        )
        .values(**values)
    )


async def delete_finished(session: AsyncSession, before: datetime, limit: int) -> int:
    """Deletes up to `limit` DELIVERED or FAILED deliveries last changed before `before`;
    how many. (Ids first: MariaDB takes no LIMIT in a DELETE's IN subquery.)"""
    query = (
        select(col(WebhookDelivery.id))
        .where(
            col(WebhookDelivery.status).in_((DELIVERED, FAILED)),
            col(WebhookDelivery.updated_at) < before,
        )
        .limit(limit)
    )
    ids = list((await session.execute(query)).scalars())
    if ids:
        await session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.id).in_(ids)))
    return len(ids)


async def delivery_owned(
    session: AsyncSession, delivery_id: str, owner_id: str, *, for_update: bool = False
) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(
        col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.owner_id) == owner_id
    )
    if for_update and _locking(session):
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def deliveries_of(
    session: AsyncSession,
    owner_id: str,
    *,
    endpoint_id: str | None,
    request_id: str | None,
    before_id: str | None,
    limit: int,
) -> list[WebhookDelivery]:
    """Newest first."""
    query = select(WebhookDelivery).where(col(WebhookDelivery.owner_id) == owner_id)
    if endpoint_id is not None:
        query = query.where(col(WebhookDelivery.endpoint_id) == endpoint_id)
    if request_id is not None:
        query = query.where(col(WebhookDelivery.request_id) == request_id)
    if before_id is not None:
        query = query.where(col(WebhookDelivery.id) < before_id)
    query = query.order_by(col(WebhookDelivery.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())
