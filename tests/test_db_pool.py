"""The MySQL pool: a connection the server dropped while it sat idle is replaced before
anyone uses it; one that was just handed back is used again without a ping."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, text

from app import db as app_db
from app.db import Database, create_engine
from app.tables import User
from tests.conftest import mariadb_admin


async def connection_id(database: Database) -> int:
    async with database.read() as session:
        return int((await session.execute(text("SELECT CONNECTION_ID()"))).scalar_one())


async def test_a_connection_killed_while_idle_is_replaced_before_use(
    mariadb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_db, "PING_AFTER_IDLE_SECONDS", 0.2)
    database = Database(create_engine(mariadb_url))
    try:
        first = await connection_id(database)
        with mariadb_admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"KILL {first}")  # as a server restart or wait_timeout would
        await asyncio.sleep(0.3)

        second = await connection_id(database)  # no error reaches the caller

        assert second != first
    finally:
        await database.dispose()


async def test_a_connection_back_a_moment_ago_is_not_pinged(
    mariadb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_db, "PING_AFTER_IDLE_SECONDS", 60.0)
    database = Database(create_engine(mariadb_url))
    pings = 0
    try:
        dialect = database.engine.sync_engine.dialect
        do_ping = dialect.do_ping

        def counted(dbapi_connection: object) -> bool:
            nonlocal pings
            pings += 1
            return do_ping(dbapi_connection)

        monkeypatch.setattr(dialect, "do_ping", counted)
        ids = {await connection_id(database) for _ in range(5)}

        assert len(ids) == 1  # the same pooled connection each time
        assert pings == 0
    finally:
        await database.dispose()


async def session_rollbacks(database: Database) -> int:
    """ROLLBACKs this pooled connection has sent (session counters: no other test's)."""
    async with database.engine.connect() as connection:
        result = await connection.execute(text("SHOW SESSION STATUS LIKE 'Com_rollback'"))
        return int(result.one()[1])


async def test_a_committed_transaction_is_not_rolled_back_on_its_return(
    mariadb_url: str,
) -> None:
    database = Database(create_engine(mariadb_url, pool_size=1))
    try:
        before = await session_rollbacks(database)
        for _ in range(3):
            async with database.write() as session:
                await session.execute(text("SELECT id FROM users LIMIT 1 FOR UPDATE"))

        # one each for the two status reads (a SHOW opens no transaction: none); none
        # for the three commits, which already ended their transactions
        assert await session_rollbacks(database) - before <= 1
    finally:
        await database.dispose()


async def test_a_transaction_left_open_is_still_rolled_back_on_its_return(
    mariadb_url: str,
) -> None:
    """A connection handed back with a transaction open must not hand its locks to the
    next user of the pool, even one SQLAlchemy's bookkeeping does not see (a write sent
    on the driver's connection after a commit)."""
    database = Database(create_engine(mariadb_url, pool_size=1))
    try:
        user = User(external_id="held", display_name="Held")
        async with database.write() as session:
            session.add(user)

        def write_behind_sqlalchemys_back(connection: Connection) -> None:
            cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("UPDATE users SET credits = credits + 1 WHERE id = %s", (user.id,))
            cursor.close()

        async with database.engine.connect() as connection:
            await connection.run_sync(write_behind_sqlalchemys_back)
        # back in the pool, with no commit: the pool must end the transaction

        name = mariadb_url.rsplit("/", 1)[1].split("?")[0]
        with mariadb_admin(name) as admin, admin.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
            cursor.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user.id,))
            assert cursor.fetchall()  # not "Lock wait timeout exceeded"
    finally:
        await database.dispose()
