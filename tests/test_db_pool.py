"""The MySQL pool: a connection the server dropped while it sat idle is replaced before
anyone uses it; one that was just handed back is used again without a ping."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from app import db as app_db
from app.db import Database, create_engine
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
