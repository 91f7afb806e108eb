"""View counts against a live `lumi serve`: `viewModel` counts, written in batches,
shown in `viewCount` past the response cache, ordering MOST_VIEWED, and written at
shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, mariadb_database, start_server, stop_server
from tests.e2e.client import (
    REQUEST_UPDATES,
    collect,
    create_request,
    data_of,
    error_code,
    graphql,
    ws_session,
)

pytestmark = pytest.mark.e2e

VIEW = "mutation V($id: ID!) { viewModel(id: $id) { id } }"
COUNT = "query C($id: ID!) { model(id: $id) { viewCount } }"
GALLERY = """query G($sort: ModelSort!) { publicModels(first: 10, sort: $sort) {
  edges { node { id viewCount } }
} }"""
FAST_VIEWS = {"LUMI_VIEW_FLUSH_SECONDS": "0.2", "LUMI_GALLERY_RANKING_SECONDS": "0"}


# The embedded default only: how one statement adds many models' views is tested on
# both databases in tests/models/test_views.py; what is left here (batches, the cache,
# the shutdown's write) is the process's, whatever its database.
@pytest.fixture(params=["sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment that puts a server's database on SQLite or MariaDB."""
    if request.param == "sqlite":
        yield {}
        return
    with mariadb_database(f"lumi_views_{os.getpid()}") as url:
        yield {"LUMI_DATABASE_URL": url}


@contextlib.contextmanager
def serving(data_dir: Path, **env: str) -> Iterator[Server]:
    server = start_server(data_dir, **env)
    try:
        yield server
    finally:
        stop_server(server)


async def public_model(server: Server, owner: str) -> str:
    created = await create_request(server, owner, imageCount=1, autoModel=True)
    async with ws_session(server, owner) as session:
        events = await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})
    model_id = str(next(e["modelId"] for e in events if e["modelId"]))
    publish = "mutation P($id: ID!) { publishModel(id: $id) { id } }"
    await data_of(server, publish, {"id": model_id}, user=owner)
    return model_id


async def views(server: Server, model_id: str, times: int, user: str | None = None) -> None:
    for _ in range(times):
        body = await graphql(server, VIEW, {"id": model_id}, user=user)
        assert "errors" not in body, body


async def view_count(server: Server, model_id: str) -> int:
    body = await graphql(server, COUNT, {"id": model_id})
    return int(body["data"]["model"]["viewCount"])


async def view_count_of_owner(server: Server, model_id: str, owner: str) -> int:
    return int((await data_of(server, COUNT, {"id": model_id}, user=owner))["model"]["viewCount"])


async def until_counts(server: Server, wanted: dict[str, int]) -> None:
    """Waits for the flusher to write the views (it writes every 0.2 s here)."""
    deadline = time.monotonic() + 20
    while True:
        seen = {m: await view_count(server, m) for m in wanted}
        if seen == wanted:
            return
        assert time.monotonic() < deadline, f"view counts {seen}, wanted {wanted}"
        await asyncio.sleep(0.1)


async def most_viewed(server: Server) -> list[tuple[str, int]]:
    body = await graphql(server, GALLERY, {"sort": "MOST_VIEWED"})
    edges: list[dict[str, Any]] = body["data"]["publicModels"]["edges"]
    return [(e["node"]["id"], e["node"]["viewCount"]) for e in edges]


async def test_views_are_counted_in_batches_and_order_the_gallery(
    database: dict[str, str], tmp_path: Path
) -> None:
    owner, visitor = f"w-{uuid.uuid4().hex[:6]}", f"x-{uuid.uuid4().hex[:6]}"
    with serving(tmp_path, name="first", **database, **FAST_VIEWS) as server:
        a, b, c = await asyncio.gather(*(public_model(server, owner) for _ in range(3)))
        assert [await view_count(server, m) for m in (a, b, c)] == [0, 0, 0]  # now cached

        await views(server, a, 5)  # anonymous visitors
        await views(server, b, 2, user=visitor)
        await views(server, a, 3, user=owner)  # the owner's own: not counted
        await until_counts(server, {a: 5, b: 2, c: 0})
        assert await most_viewed(server) == [(a, 5), (b, 2), (c, 0)]

        await views(server, c, 9)
        await until_counts(server, {c: 9})
        assert await most_viewed(server) == [(c, 9), (a, 5), (b, 2)]

        unpublish = "mutation U($id: ID!) { unpublishModel(id: $id) { id } }"
        await data_of(server, unpublish, {"id": c}, user=owner)
        hidden = await graphql(server, VIEW, {"id": c}, user=visitor)
        assert error_code(hidden) == "NOT_FOUND"  # a private model is nobody else's to view
        await views(server, c, 2, user=owner)  # its owner may; not counted

    # views not yet written when the server stops are written as it shuts down
    with serving(tmp_path, name="slow", **database, LUMI_VIEW_FLUSH_SECONDS="300") as server:
        await views(server, b, 4)
        assert await view_count(server, b) == 2  # counted, not written yet
    with serving(tmp_path, name="again", **database, **FAST_VIEWS) as server:
        assert await view_count(server, b) == 6
        assert await view_count_of_owner(server, c, owner) == 9
