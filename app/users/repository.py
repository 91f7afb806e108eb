"""All SQL about users."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

from sqlalchemy import bindparam, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col, select

from app.tables import User, utcnow


async def get_by_external_id(session: AsyncSession, external_id: str) -> User | None:
    result = await session.execute(select(User).where(col(User.external_id) == external_id))
    return result.scalar_one_or_none()


class Identity(Protocol):
    """Who a user is: what every operation needs of its viewer."""

    @property
    def id(self) -> str: ...
    @property
    def external_id(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def role(self) -> str: ...


# Built once: every authenticated operation runs it, and building it cost more than
# running it.
_IDENTITY = select(
    col(User.id), col(User.external_id), col(User.display_name), col(User.role)
).where(col(User.external_id) == bindparam("external_id"))


async def identity(session: AsyncSession, external_id: str) -> Identity | None:
    """The identity of the user with this token subject, if known."""
    row = (await session.execute(_IDENTITY, {"external_id": external_id})).first()
    return cast(Identity | None, row)


async def get(session: AsyncSession, user_id: str, *, for_update: bool = False) -> User | None:
    query = select(User).where(col(User.id) == user_id)
    if for_update:
        query = query.with_for_update()
    result = await session.execute(query)
    return result.scalar_one_or_none()


_TAKE_SEQS_MYSQL = text(
    "UPDATE users SET event_seq = LAST_INSERT_ID(event_seq + :n) WHERE id = :user_id"
)
_TAKE_SEQS = (
    update(User)
    .where(col(User.id) == bindparam("user_id"))
    .values(event_seq=col(User.event_seq) + bindparam("n"))
    .returning(col(User.event_seq))
)


async def take_event_seqs(session: AsyncSession, user_id: str, count: int) -> int:
    """Hands out the next `count` numbers of the user's event sequence; the last of them.

    One statement: MySQL returns the new value through LAST_INSERT_ID (in the reply
    to the UPDATE itself), SQLite through RETURNING. The user's row stays locked until
    the transaction ends, so a user's events commit in the order of their numbers:
    take them at the end of the transaction (`Unit.store_events`), not before the work.
    """
    values = {"user_id": user_id, "n": count}
    if session.get_bind().dialect.name == "sqlite":
        return int((await session.execute(_TAKE_SEQS, values)).scalar_one())
    result = await session.execute(_TAKE_SEQS_MYSQL, values)
    return int(result.lastrowid)  # type: ignore[attr-defined]


async def latest_event_seqs(session: AsyncSession, ids: Sequence[str]) -> dict[str, int]:
    """Each user's latest event number across their requests (`event_seq`)."""
    query = select(User.id, User.event_seq).where(col(User.id).in_(ids))
    return {user_id: seq for user_id, seq in await session.execute(query)}


async def get_many(session: AsyncSession, ids: Sequence[str]) -> list[User]:
    result = await session.execute(select(User).where(col(User.id).in_(ids)))
    return list(result.scalars())


async def set_display_name(session: AsyncSession, user_id: str, name: str) -> None:
    query = (
        update(User).where(col(User.id) == user_id).values(display_name=name, updated_at=utcnow())
    )
    await session.execute(query)


async def insert_if_absent(session: AsyncSession, user: User, *rows: SQLModel) -> bool:
    """Adds `user` and `rows` that refer to it; False when another transaction created
    the same external id first (then nothing is added)."""
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
            session.add_all(rows)
    except IntegrityError:
        return False
    return True
