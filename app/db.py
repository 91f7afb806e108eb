"""Engine, session factory and the transaction helper.

Transactions are opened at the edge (a resolver or an actor) and commit once. On
SQLite every write transaction starts with BEGIN IMMEDIATE: two writers that both
began with a read would otherwise fail with SQLITE_BUSY instead of waiting their turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

_WRITE = "lumi_write"


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    # READ COMMITTED: a stage that waited for a row lock must then see what the holder
    # committed (under REPEATABLE READ it would count from its older snapshot).
    return create_async_engine(
        url,
        echo=echo,
        isolation_level="READ COMMITTED",
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_size=10,
        max_overflow=20,
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the driver so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


async def close_session(session: AsyncSession) -> None:
    """Closes `session`, returning its connection to the pool, even when the caller is
    cancelled meanwhile (GraphQL cancels a query's other fields when one fails): a
    rollback cut short would leave the connection neither in use nor reset."""
    await asyncio.shield(session.close())


class Database:
    """Holds one engine and hands out sessions: `read()` for queries, `write()` to change."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._reads = async_sessionmaker(engine, expire_on_commit=False)
        self._writes = async_sessionmaker(
            engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        session = self._reads()
        try:
            yield session
        finally:
            await close_session(session)

    def read_session(self) -> AsyncSession:
        """A read session the caller closes (`read()` is the usual way)."""
        return self._reads()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One transaction: commits when the block ends, rolls back if it raises."""
        async with self._writes() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


class SharedReads:
    """The reads of one short scope (a GraphQL operation over HTTP) in one session: one
    pooled connection, one ping and one transaction instead of one of each per read,
    which was most of the database's share of a query's cost.

    A read that finds the session in use gets a session of its own instead of waiting,
    so no reader ever waits on another. `release()` ends the transaction: call it before
    writing, so reads after the write see it (a SQLite read transaction keeps the
    snapshot it began with; a MySQL session would hand back rows loaded before), and
    when the scope ends.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._session: AsyncSession | None = None
        self._busy = False
        self._stale = False  # released while in use: closed when its reader is done

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        if self._busy:
            async with self._db.read() as session:
                yield session
            return
        self._busy = True
        if self._session is None:
            self._session = self._db.read_session()
        try:
            yield self._session
        except BaseException:
            self._stale = True  # a failed statement can leave the transaction unusable
            raise
        finally:
            self._busy = False
            if self._stale:
                await self.release()

    async def release(self) -> None:
        if self._busy:
            self._stale = True
            return
        session, self._session, self._stale = self._session, None, False
        if session is not None:
            await close_session(session)
