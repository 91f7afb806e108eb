"""Credits: a balance per user that never goes below zero, and the ledger behind it.

Every change is one ledger row with a unique `key`, written in the same transaction
as the balance update, so a debit or a refund happens exactly once however often the
code that asks for it runs. Callers hold the user's row locked (see
`workers.claims.lock_job` for the lock order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.errors import InsufficientCredits
from app.tables import CreditEntry, GeneratedImage, User

IMAGES = "IMAGES"
MODEL = "MODEL"


@dataclass(frozen=True, slots=True)
class Prices:
    image: int
    model: int


async def _entry(
    session: AsyncSession,
    user: User,
    *,
    kind: str,
    reason: str,
    amount: int,
    quantity: int,
    key: str,
    request_id: str | None = None,
) -> CreditEntry:
    entry = CreditEntry(
        user_id=user.id,
        request_id=request_id,
        kind=kind,
        reason=reason,
        amount=amount,
        quantity=quantity,
        balance_after=user.credits,
        key=key,
    )
    session.add(entry)
    return entry


async def grant(
    session: AsyncSession, user: User, amount: int, *, key: str, reason: str = "INITIAL"
) -> CreditEntry | None:
    """Adds `amount` once per `key`; None when that grant was made already."""
    if await _exists(session, key):
        return None
    await _move(session, user, amount)
    return await _entry(
        session, user, kind="GRANT", reason=reason, amount=amount, quantity=1, key=key
    )


async def debit(
    session: AsyncSession,
    user: User,
    amount: int,
    *,
    reason: str,
    quantity: int,
    request_id: str,
    key: str,
) -> CreditEntry:
    """Takes `amount` from `user` or raises InsufficientCredits; never below zero."""
    if amount > 0:
        result = await session.execute(
            update(User)
            .where(col(User.id) == user.id, col(User.credits) >= amount)
            .values(credits=User.credits - amount)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            await session.refresh(user, ["credits"])
            raise InsufficientCredits(required=amount, balance=user.credits)
        await session.refresh(user, ["credits"])
    return await _entry(
        session,
        user,
        kind="DEBIT",
        reason=reason,
        amount=-amount,
        quantity=quantity,
        key=key,
        request_id=request_id,
    )


async def _move(session: AsyncSession, user: User, amount: int) -> None:
    await session.execute(
        update(User)
        .where(col(User.id) == user.id)
        .values(credits=User.credits + amount)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(user, ["credits"])


async def _exists(session: AsyncSession, key: str) -> bool:
    found = await session.execute(select(CreditEntry.id).where(col(CreditEntry.key) == key))
    return found.first() is not None


async def refund_undelivered(
    session: AsyncSession,
    user: User,
    request_id: str,
    *,
    key: str,
    model_delivered: bool = False,
    reasons: tuple[str, ...] = (IMAGES, MODEL),
) -> list[CreditEntry]:
    """Gives back what `request_id` paid for and did not deliver, once per `key`.

    Images delivered are those COMPLETED; the model is delivered only when the request
    completed. Amounts come from the ledger itself (credits paid and not yet refunded,
    and how many units they cover), so a price change between the debit and the refund
    cannot give back more than was paid.
    """
    keys = {reason: f"{key}:{reason}" for reason in reasons}
    found = await session.execute(
        select(CreditEntry.id).where(col(CreditEntry.key).in_(list(keys.values())))
    )
    if found.first() is not None:
        return []
    paid = await _outstanding(session, request_id)
    entries = []
    for reason in reasons:
        amount, quantity = paid.get(reason, (0, 0))
        if reason == IMAGES:
            delivered = await _completed_images(session, request_id)
        else:
            delivered = quantity if model_delivered else 0
        units = quantity - delivered
        if amount <= 0 or units <= 0:
            continue
        back = amount * units // quantity
        await _move(session, user, back)
        entries.append(
            await _entry(
                session,
                user,
                kind="REFUND",
                reason=reason,
                amount=back,
                quantity=units,
                key=keys[reason],
                request_id=request_id,
            )
        )
    return entries


async def units_owed(session: AsyncSession, request_id: str, reason: str) -> int:
    """How many units of `reason` the request paid for and has not been refunded."""
    return (await _outstanding(session, request_id)).get(reason, (0, 0))[1]


async def _outstanding(session: AsyncSession, request_id: str) -> dict[str, tuple[int, int]]:
    """Per reason: credits paid and not yet refunded, and how many units they pay for."""
    rows = await session.execute(
        select(
            CreditEntry.reason,
            CreditEntry.kind,
            func.sum(CreditEntry.amount),
            func.sum(CreditEntry.quantity),
        )
        .where(col(CreditEntry.request_id) == request_id)
        .group_by(col(CreditEntry.reason), col(CreditEntry.kind))
    )
    paid: dict[str, tuple[int, int]] = {}
    for reason, kind, amount, quantity in rows:
        sign = 1 if kind == "DEBIT" else -1
        credits, units = paid.get(reason, (0, 0))
        paid[reason] = (credits - int(amount or 0), units + sign * int(quantity or 0))
    return paid


async def _completed_images(session: AsyncSession, request_id: str) -> int:
    done = await session.execute(
        select(func.count())
        .select_from(GeneratedImage)
        .where(
            col(GeneratedImage.request_id) == request_id,
            col(GeneratedImage.status) == "COMPLETED",
        )
    )
    return int(done.scalar_one())


async def ledger_page(
    session: AsyncSession, user_id: str, *, limit: int, after: tuple[Any, str] | None
) -> Sequence[CreditEntry]:
    """Newest first; `after` is the (created_at, id) of the last entry already seen."""
    query = select(CreditEntry).where(col(CreditEntry.user_id) == user_id)
    if after is not None:
        created, last_id = after
        query = query.where(
            or_(
                col(CreditEntry.created_at) < created,
                (col(CreditEntry.created_at) == created) & (col(CreditEntry.id) < last_id),
            )
        )
    query = query.order_by(col(CreditEntry.created_at).desc(), col(CreditEntry.id).desc())
    result = await session.execute(query.limit(limit))
    return list(result.scalars())


async def ledger_count(session: AsyncSession, user_id: str) -> int:
    """How many entries the user's ledger holds: a count over the user's index."""
    query = select(func.count()).where(col(CreditEntry.user_id) == user_id)
    return int((await session.execute(query)).scalar_one())


async def entries_of(session: AsyncSession, user_id: str, ids: Sequence[str]) -> list[CreditEntry]:
    """The entries of `user_id` among `ids` (another user's are not among them)."""
    query = select(CreditEntry).where(
        col(CreditEntry.user_id) == user_id, col(CreditEntry.id).in_(ids)
    )
    return list((await session.execute(query)).scalars())
