"""Engine, session factory and the transaction helper.

Transactions are opened at the edge (a resolver or an actor) and commit once. On
SQLite every write transaction starts with BEGIN IMMEDIATE: two writers that both
began with a read would otherwise fail with SQLITE_BUSY instead of waiting their turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

_WRITE = "lumi_write"
# A pooled MySQL connection idle this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 2.0


def create_engine(
    url: str, *, echo: bool = False, pool_size: int = 20, autocommit: bool = False
) -> AsyncEngine:
    """The engine for `url`. `autocommit` (MySQL): each statement commits on its own, and
    no COMMIT or ROLLBACK is ever sent: for work that is one statement at a time."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    # READ COMMITTED: a stage that waited for a row lock must then see what the holder
    # committed (under REPEATABLE READ it would count from its older snapshot).
    engine = create_async_engine(
        url,
        echo=echo,
        isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
        skip_autocommit_rollback=autocommit,
        pool_recycle=1800,
        pool_size=pool_size,
        max_overflow=20,
        pool_reset_on_return=None,  # _reset_only_open_transactions does it
    )
    _ping_when_idle(engine, PING_AFTER_IDLE_SECONDS)
    _reset_only_open_transactions(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """`pool_pre_ping`, but only for a connection that sat in the pool `idle_seconds` or
    more: one that came back a moment ago is alive, and a ping per checkout was a round
    trip on top of every stage and query (a third of a gallery page's). A connection
    the server dropped (restart, `wait_timeout`) has sat idle, so it is still caught and
    replaced before use; one that dies while busy fails its statement, and the pool
    then refreshes every connection (SQLAlchemy's disconnect handling)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["lumi_idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get("lumi_idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # new, or back in the pool a moment ago
        try:
            sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # gone: the pool replaces it and tries again
            raise exc.DisconnectionError(f"a pooled connection is gone: {error}") from error


# The server's status flag for "a transaction is open on this connection" (MySQL's
# SERVER_STATUS_IN_TRANS), carried by every OK packet.
_IN_TRANSACTION = 0x0001
_OPEN = "lumi_transaction_open"


def _reset_only_open_transactions(engine: AsyncEngine) -> None:
    """The pool's reset-on-return, skipped when the transaction has already ended.

    SQLAlchemy rolls back every connection it takes back, also one whose transaction
    just committed: a ROLLBACK round trip after each COMMIT, a third of a short write's
    statements. A connection is now rolled back unless both say its transaction ended:
    SQLAlchemy (its last transaction committed or rolled back) and the server (the
    in-transaction flag of its last OK packet, which also sees a write sent on the
    driver's connection behind SQLAlchemy's back)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.info[_OPEN] = True

    @event.listens_for(sync_engine, "commit")
    @event.listens_for(sync_engine, "rollback")
    def _on_end(conn: Connection) -> None:
        conn.info[_OPEN] = False

    @event.listens_for(sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, record: ConnectionPoolEntry, _state: Any) -> None:
        status = getattr(getattr(dbapi_connection, "_connection", None), "server_status", None)
        ended = record.info.get(_OPEN) is False
        if ended and isinstance(status, int) and not status & _IN_TRANSACTION:
            return
        dbapi_connection.rollback()


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
        self._single_engine: AsyncEngine | None = None
        self._single: async_sessionmaker[AsyncSession] | None = None

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

    @asynccontextmanager
    async def single_statements(self) -> AsyncIterator[AsyncSession]:
        """A session whose statements each commit on their own, with no COMMIT or
        ROLLBACK round trip: for work that is a read and one conditional UPDATE (a
        stage's claim), where a transaction adds statements and nothing else. Its own
        small pool of autocommit connections (MySQL); a write transaction on SQLite."""
        if self.dialect == "sqlite":
            async with self.write() as session:
                yield session
            return
        if self._single is None:
            url = self.engine.url.render_as_string(hide_password=False)
            # A claim holds its connection for two short statements: a few serve many.
            self._single_engine = create_engine(url, pool_size=10, autocommit=True)
            self._single = async_sessionmaker(self._single_engine, expire_on_commit=False)
        session = self._single()
        try:
            yield session
        finally:
            await close_session(session)

    async def dispose(self) -> None:
        if self._single_engine is not None:
            await self._single_engine.dispose()
            self._single_engine = self._single = None
        await self.engine.dispose()


class SharedReads:
    """The reads of one short scope (a GraphQL operation over HTTP) in one session: one
    pooled connection, one ping and one transaction instead of one of each per read,
    which was most of the database's share of a query's cost.

    A read that finds the session in use waits for it: an operation never holds one
    pooled connection while it waits for another. (Taking a second connection for a
    concurrent read did: under load every connection of the pool was held by an
    operation whose second DataLoader waited for one more, so nothing moved until the
    pool's 30 s timeout failed them all.) No reader awaits anything but its statements
    while it holds the session, so the wait is as short as a query. `release()` ends
    the transaction: call it before writing, so reads after the write see it (a SQLite
    read transaction keeps the snapshot it began with; a MySQL session would hand back
    rows loaded before), and when the scope ends.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._session: AsyncSession | None = None
        self._lock = asyncio.Lock()
        self._stale = False  # released while in use: closed when its reader is done

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._lock:
            if self._session is None:
                self._session = self._db.read_session()
            try:
                yield self._session
            except BaseException:
                self._stale = True  # a failed statement can leave the transaction unusable
                raise
            finally:
                if self._stale:
                    await self._close()

    async def release(self) -> None:
        if self._lock.locked():
            self._stale = True
            return
        await self._close()

    async def _close(self) -> None:
        session, self._session, self._stale = self._session, None, False
        if session is not None:
            await close_session(session)
