"""The reads of one HTTP operation share one session: one connection, one transaction.

They must still see what the operation itself wrote, never wait on each other, and
give their connection back when the operation ends, however it ends.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col

from app.config import Settings
from app.db import Database
from app.deps import Deps
from app.graphql.context import Context
from app.graphql.errors import LumiSchema
from app.main import create_app
from app.migrate import upgrade_async
from app.tables import User
from app.users import repository as users
from tests.conftest import token_for
from tests.graphql.client import execute, http_request
from tests.models.test_library import make_model, user


def checkouts(deps: Deps) -> list[object]:
    taken: list[object] = []
    event.listen(deps.db.engine.sync_engine.pool, "checkout", lambda *args: taken.append(args))
    return taken


async def test_a_gallery_query_reads_through_one_connection(deps: Deps) -> None:
    owner, viewer = await user(deps), await user(deps)
    for _ in range(3):
        await make_model(deps, owner, public=True)
    taken = checkouts(deps)
    result = await execute(
        deps,
        "{ publicModels(first: 3) { edges { node { id likedByMe owner { displayName } } } } }",
        user=viewer.external_id,
    )
    assert not result["errors"], result["errors"]
    assert len(result["data"]["publicModels"]["edges"]) == 3
    assert len(taken) == 1
    assert deps.db.engine.sync_engine.pool.checkedout() == 0  # given back at the end


async def test_a_read_after_a_write_in_one_operation_sees_the_write(deps: Deps) -> None:
    viewer = await user(deps)
    context = Context(deps, http_request(viewer.external_id), None)
    async with context.read() as session:
        before = await users.get(session, viewer.id)
    assert before is not None
    async with context.unit() as unit:
        await unit.session.execute(
            update(User).where(col(User.id) == viewer.id).values(credits=User.credits + 5)
        )
    async with context.read() as session:
        after = await users.get(session, viewer.id)
    assert after is not None
    assert after.credits == before.credits + 5
    await context.end_reads()


async def test_concurrent_reads_of_one_operation_share_its_one_connection(deps: Deps) -> None:
    """With one pooled connection left, an operation whose two DataLoaders read at once
    still finishes: the second waits for the operation's session instead of waiting for
    another connection while the first holds one. (Under load, every operation holding
    one connection and waiting for a second starved the whole pool for 30 s.)"""
    viewer = await user(deps)
    url = deps.settings.resolved_database_url
    tiny = Database(create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=2))
    context = Context(replace(deps, db=tiny), http_request(viewer.external_id), None)
    inside = asyncio.Event()
    sessions = []

    async def first() -> None:
        async with context.read() as session:
            sessions.append(session)
            assert await users.get(session, viewer.id) is not None  # holds the connection
            inside.set()
            await asyncio.sleep(0.2)

    async def second() -> None:
        await inside.wait()
        async with context.read() as session:  # finds it busy: waits for it
            sessions.append(session)
            assert await users.get(session, viewer.id) is not None

    try:
        await asyncio.wait_for(asyncio.gather(first(), second()), timeout=10)
        assert sessions[0] is sessions[1]
        await context.end_reads()
        assert tiny.engine.sync_engine.pool.checkedout() == 0
    finally:
        await tiny.dispose()


async def test_an_operation_that_fails_gives_its_connection_back(deps: Deps) -> None:
    viewer = await user(deps)
    result = await execute(
        deps,
        'query { me { displayName } model(id: "0123456789abcdef0123456789abcdef") { id } }',
        user=viewer.external_id,
    )
    assert result["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert deps.db.engine.sync_engine.pool.checkedout() == 0


async def test_the_endpoint_gives_each_operations_connection_back(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade_async(settings.resolved_database_url)
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {token_for('alice', settings)}"}
    queries = [
        "{ me { displayName } }",
        "{ publicModels { edges { node { id likedByMe owner { displayName } } } } }",
        '{ model(id: "0123456789abcdef0123456789abcdef") { id } }',  # fails: NOT_FOUND
    ]
    async with app.router.lifespan_context(app):
        pool = app.state.deps.db.engine.sync_engine.pool
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for query in queries:
                answer = await client.post("/graphql", json={"query": query}, headers=headers)
                assert answer.status_code == 200, answer.text
                assert pool.checkedout() == 0, query


async def test_at_most_the_admitted_number_of_operations_run_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of operations at once each held a pooled connection while they shared
    the CPU, until the pool's 30 s wait failed them all (the soak under 1,000
    subscriptions): the rest now wait their turn before they take anything."""
    settings.max_concurrent_operations = 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade_async(settings.resolved_database_url)
    running, most = 0, 0
    execute_for_real = LumiSchema.execute

    async def counted(self: LumiSchema, *args: Any, **kwargs: Any) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.05)
            return await execute_for_real(self, *args, **kwargs)
        finally:
            running -= 1

    monkeypatch.setattr(LumiSchema, "execute", counted)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = await asyncio.gather(
                *(client.post("/graphql", json={"query": "{ __typename }"}) for _ in range(8))
            )
    assert [a.status_code for a in answers] == [200] * 8
    assert most == 2
