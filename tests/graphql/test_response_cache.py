"""The response cache in-process, through the HTTP endpoint: hits run nothing, flags are
each viewer's own, what is not public is never kept, changes drop exactly what they
touch, and the cache stays within its bounds."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from starlette.applications import Starlette

from app.auth import Viewer
from app.config import Settings
from app.deps import Deps
from app.main import create_app
from app.metrics import RESPONSE_CACHE_REQUESTS
from app.models.cache import ResponseCache
from app.models.changes import PublicChange
from app.models.repository import InteractionRow
from app.models.viewer_flags import FlagVersions, Guard, Read, ViewerFlags, viewer_tag
from app.redis_clients import connect
from tests.conftest import REDIS, require, token_for
from tests.graphql.client import execute
from tests.models.test_library import make_model, user

GALLERY = """query Gallery { publicModels(first: 20) {
  edges { node { id name likeCount favoriteCount likedByMe favoritedByMe
                 owner { displayName } previewUrl } }
  pageInfo { hasNextPage endCursor } } }"""
MODEL = """query Detail($id: ID!) { model(id: $id) {
  id name likeCount likedByMe favoritedByMe owner { displayName } fileUrl } }"""


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield app, client


async def post(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token_for(user)}"} if user else {}
    answer = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def cache_of(app: Starlette) -> ResponseCache:
    cache: ResponseCache | None = app.state.deps.response_cache
    assert cache is not None
    return cache


def counted(result: str) -> float:
    value: float = RESPONSE_CACHE_REQUESTS.labels(result)._value.get()
    return value


def statements(deps: Deps) -> list[str]:
    seen: list[str] = []
    event.listen(deps.db.engine.sync_engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def without_links(data: Any) -> Any:
    """An answer less what differs between two reads: signed links, and the gallery's
    cursor, which holds the moment of its first page."""
    if isinstance(data, dict):
        return {k: without_links(v) for k, v in data.items() if not k.endswith(("Url", "Cursor"))}
    if isinstance(data, list):
        return [without_links(item) for item in data]
    return data


@dataclass(frozen=True)
class Interaction:
    model_id: str
    type: str


async def warm(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None) -> None:
    """The first answer plans the document, the second makes and keeps the answer."""
    for _ in range(2):
        await post(client, query, variables)


async def test_a_hit_runs_no_resolver_and_reads_the_viewers_flags_once(
    gateway: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = gateway
    deps: Deps = app.state.deps
    owner, fan = await user(deps), await user(deps)
    models = [await make_model(deps, owner, public=True) for _ in range(3)]
    like = "mutation L($id: ID!) { likeModel(id: $id) { id } }"
    await post(client, like, {"id": models[0].id}, fan.external_id)
    await warm(client, GALLERY, None)
    seen = statements(deps)
    hits = counted("hit")
    anonymous = await post(client, GALLERY)
    assert seen == []  # no statement at all: nothing ran
    signed_in = await post(client, GALLERY, user=fan.external_id)
    assert counted("hit") == hits + 2
    # The fan's id is known since their like: one lookup of their likes and favorites of
    # the page, kept; the next hit reads nothing at all.
    queries = [sql for sql in seen if sql != "BEGIN"]  # SQLite's own BEGIN
    assert len(queries) == 1, seen
    assert "model_interactions" in queries[0]
    seen.clear()
    assert await post(client, GALLERY, user=fan.external_id) == signed_in
    assert seen == []
    # what the usual way answers each of them
    assert without_links(anonymous["data"]) == without_links((await execute(deps, GALLERY))["data"])
    usual = await execute(deps, GALLERY, user=fan.external_id)
    assert without_links(signed_in["data"]) == without_links(usual["data"])
    liked = [e["node"]["likedByMe"] for e in signed_in["data"]["publicModels"]["edges"]]
    assert liked.count(True) == 1


async def test_a_subject_seen_for_the_first_time_becomes_a_user_on_a_hit(
    gateway: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = gateway
    deps: Deps = app.state.deps
    model = await make_model(deps, await user(deps), public=True)
    await warm(client, MODEL, {"id": model.id})
    hits = counted("hit")
    newcomer = f"new-{uuid.uuid4().hex[:8]}"
    seen = statements(deps)
    first = await post(client, MODEL, {"id": model.id}, newcomer)
    assert counted("hit") == hits + 1
    assert (first["data"]["model"]["likedByMe"], first["data"]["model"]["favoritedByMe"]) == (
        False,
        False,
    )
    assert any("INSERT INTO users" in sql for sql in seen)  # created on first sight
    me = await post(client, "{ me { displayName } }", user=newcomer)
    assert me["data"]["me"]["displayName"] == newcomer
    seen.clear()
    await post(client, MODEL, {"id": model.id}, newcomer)
    assert seen == []  # its id and its flags are known now


async def test_each_viewer_sees_only_their_own_flags(
    gateway: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = gateway
    deps: Deps = app.state.deps
    owner, ada, bob = await user(deps), await user(deps), await user(deps)
    model = await make_model(deps, owner, public=True)
    like = "mutation L($id: ID!) { likeModel(id: $id) { id } }"
    favorite = "mutation F($id: ID!) { favoriteModel(id: $id) { id } }"
    await post(client, like, {"id": model.id}, ada.external_id)
    await post(client, favorite, {"id": model.id}, bob.external_id)
    variables = {"id": model.id}
    await warm(client, MODEL, variables)
    for _ in range(2):  # the second round entirely from the cache
        flags = {
            who: (await post(client, MODEL, variables, who))["data"]["model"]
            for who in (ada.external_id, bob.external_id, None)
        }
        assert {who: (m["likedByMe"], m["favoritedByMe"]) for who, m in flags.items()} == {
            ada.external_id: (True, False),
            bob.external_id: (False, True),
            None: (False, False),
        }
    assert len(cache_of(app)) == 1


async def test_a_viewers_own_change_shows_at_once_and_drops_only_their_flags(
    gateway: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = gateway
    deps: Deps = app.state.deps
    owner, ada, bob = await user(deps), await user(deps), await user(deps)
    model = await make_model(deps, owner, public=True)
    variables = {"id": model.id}
    await warm(client, MODEL, variables)

    async def flags(who: Viewer) -> tuple[bool, bool]:
        found = (await post(client, MODEL, variables, who.external_id))["data"]["model"]
        return found["likedByMe"], found["favoritedByMe"]

    for who in (ada, bob, owner):
        assert await flags(who) == (False, False)  # kept for each of them
    act = "mutation M($id: ID!) {{ {}(id: $id) {{ id }} }}".format
    await post(client, act("favoriteModel"), variables, ada.external_id)
    await post(client, MODEL, variables)  # the answer, dropped by the count, made again
    seen = statements(deps)
    assert await flags(bob) == (False, False)
    assert seen == []  # Bob's flags were kept
    assert await flags(ada) == (False, True)  # Ada's were read again
    assert any("model_interactions" in sql for sql in seen)
    await post(client, act("likeModel"), variables, ada.external_id)
    assert await flags(ada) == (True, True)
    # The owner likes their model while it is private: nothing public changed, but their
    # own flags did, and show when it is published again.
    await post(client, act("unpublishModel"), variables, owner.external_id)
    await post(client, act("likeModel"), variables, owner.external_id)
    await post(client, act("publishModel"), variables, owner.external_id)
    await warm(client, MODEL, variables)
    assert await flags(owner) == (True, False)
    assert await flags(bob) == (False, False)


async def test_a_flags_read_that_races_a_change_of_its_viewer_is_used_once_not_kept() -> None:
    guard = Guard()
    flags = ViewerFlags(guard)
    reads: list[Sequence[str]] = []

    def reader(liked: bool, change: set[str] | None = None) -> Read:
        async def read(model_ids: Sequence[str]) -> list[InteractionRow]:
            reads.append(model_ids)
            if change is not None:  # committed and announced while this read ran
                guard.changed(change)
            return [Interaction(model_ids[0], "LIKE")] if liked else []

        return read

    raced = await flags.of("ada", ["m1"], reader(False, {viewer_tag("ada")}))
    assert raced == {"m1": frozenset()}
    assert len(flags) == 0
    assert await flags.of("ada", ["m1"], reader(True)) == {"m1": frozenset({"LIKE"})}
    assert await flags.of("ada", ["m1"], reader(False)) == {"m1": frozenset({"LIKE"})}
    assert len(reads) == 2  # the last from memory
    # someone else's change does not spoil Ada's read; Bob's flags are his own
    await flags.of("ada", ["m2"], reader(False, {viewer_tag("bob"), "model:m2"}))
    assert len(flags) == 2
    assert await flags.of("bob", ["m1"], reader(False)) == {"m1": frozenset()}
    flags.drop(["ada"])
    assert len(flags) == 1
    flags.clear()
    assert len(flags) == 0


async def test_flags_kept_before_a_version_bumped_elsewhere_are_read_again() -> None:
    """Another process's like bumps the viewer's version in Redis before it answers: a
    process the bus has not reached yet reads their flags again all the same."""
    require("Redis", REDIS)
    client = connect(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    versions = FlagVersions(client, prefix=f"lumi-test-{uuid.uuid4().hex[:8]}")
    flags = ViewerFlags(Guard())
    stored: list[Interaction] = []

    async def read(model_ids: Sequence[str]) -> list[InteractionRow]:
        return list(stored)

    try:
        version = await versions.get("ada")
        assert version == 0
        assert await flags.of("ada", ["m1"], read, version=version) == {"m1": frozenset()}
        stored.append(Interaction("m1", "LIKE"))  # Ada's like, committed on another process
        assert await flags.of("ada", ["m1"], read, version=version) == {"m1": frozenset()}
        await versions.bump(["ada"])  # ... which bumps her version before it answers
        version = await versions.get("ada")
        assert version == 1
        liked = {"m1": frozenset({"LIKE"})}
        assert await flags.of("ada", ["m1"], read, version=version) == liked
        stored.clear()  # kept at version 1 now
        assert await flags.of("ada", ["m1"], read, version=version) == liked
        # Redis cannot say: read every time, kept never
        assert await flags.of("ada", ["m1"], read, version=None) == {"m1": frozenset()}
        assert len(flags) == 0
    finally:
        await client.delete(f"{versions._prefix}ada")
        await client.aclose()


async def test_the_kept_flags_stay_within_their_bound() -> None:
    flags = ViewerFlags(Guard(), max_pairs=20)

    async def read(model_ids: Sequence[str]) -> list[InteractionRow]:
        return []

    for viewer in range(10):
        await flags.of(f"v{viewer}", [f"m{i}" for i in range(3)], read)
    assert len(flags) <= 20
    await flags.of("v9", [f"m{i}" for i in range(3, 6)], read)  # past a tenth: started anew
    assert len(flags) <= 20


async def test_what_is_not_public_data_is_never_kept(
    gateway: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = gateway
    deps: Deps = app.state.deps
    owner, stranger = await user(deps), await user(deps)
    private = await make_model(deps, owner)
    public = await make_model(deps, owner, public=True)
    owner_only = "query O($id: ID!) { model(id: $id) { id sourceRequest { id } } }"
    bypassed = counted("bypass")
    for _ in range(3):
        mine = await post(client, MODEL, {"id": private.id}, owner.external_id)
        assert mine["data"]["model"]["name"] == "a model"
        theirs = await post(client, MODEL, {"id": private.id}, stranger.external_id)
        assert theirs["data"]["model"] is None
        assert theirs["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        await post(client, owner_only, {"id": public.id}, owner.external_id)
        await post(client, "{ me { id displayName } }", user=owner.external_id)
    assert len(cache_of(app)) == 0
    assert counted("bypass") >= bypassed + 6


async def test_a_change_drops_exactly_the_answers_that_show_it(
    gateway: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = gateway
    deps: Deps = app.state.deps
    owner, fan = await user(deps), await user(deps)
    liked, other = (
        await make_model(deps, owner, public=True),
        await make_model(deps, owner, public=True),
    )
    for variables in ({"id": liked.id}, {"id": other.id}):
        await warm(client, MODEL, variables)
    await warm(client, GALLERY, None)
    cache = cache_of(app)
    assert len(cache) == 3
    await post(
        client,
        "mutation L($id: ID!) { likeModel(id: $id) { id } }",
        {"id": liked.id},
        fan.external_id,
    )
    assert len(cache) == 1  # the liked model's detail and the gallery page that shows it
    hits = counted("hit")
    assert (await post(client, MODEL, {"id": other.id}))["data"]["model"]["likeCount"] == 0
    assert counted("hit") == hits + 1
    fresh = await post(client, MODEL, {"id": liked.id})
    assert fresh["data"]["model"]["likeCount"] == 1
    assert counted("hit") == hits + 1  # made again


async def test_the_cache_keeps_at_most_its_entries(settings: Settings) -> None:
    settings.response_cache_max_entries = 2
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            deps: Deps = app.state.deps
            owner = await user(deps)
            models = [await make_model(deps, owner, public=True) for _ in range(3)]
            for model in models:
                await warm(client, MODEL, {"id": model.id})
            assert len(cache_of(app)) == 2
            hits = counted("hit")
            await post(client, MODEL, {"id": models[2].id})
            assert counted("hit") == hits + 1
            await post(client, MODEL, {"id": models[0].id})  # the least recently used went
            assert counted("hit") == hits + 1


async def test_while_changes_cannot_arrive_the_cache_answers_nothing(
    gateway: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = gateway
    deps: Deps = app.state.deps
    model = await make_model(deps, await user(deps), public=True)
    await warm(client, MODEL, {"id": model.id})
    await post(client, MODEL, {"id": model.id}, (await user(deps)).external_id)
    assert len(cache_of(app)) == 1
    assert len(cache_of(app)._flags) == 1
    deps.bus.connected = False  # as a Redis bus whose connection dropped
    try:
        hits = counted("hit")
        await post(client, MODEL, {"id": model.id})
        await post(client, MODEL, {"id": model.id})
        assert counted("hit") == hits
        assert len(cache_of(app)) == 0
        assert len(cache_of(app)._flags) == 0
    finally:
        deps.bus.connected = True


def test_an_answer_read_while_a_change_it_shows_came_is_not_kept() -> None:
    guard = Guard(remembered=3)
    since = guard.now()
    assert guard.unchanged(since, frozenset({"model:a"}))
    guard.changed({"model:b"})
    assert guard.unchanged(since, frozenset({"model:a"}))
    guard.changed({"model:a"})
    assert not guard.unchanged(since, frozenset({"model:a", "listings"}))
    later = guard.now()
    for _ in range(4):  # more than it remembers: assume the worst
        guard.changed({"model:z"})
    assert not guard.unchanged(later, frozenset({"model:a"}))
    guard.changed(None)  # everything
    assert not guard.unchanged(guard.now() - 1, frozenset({"model:q"}))


async def test_a_public_change_reaches_the_cache_through_the_bus(deps: Deps) -> None:
    """Another process's announcement arrives on the bus and drops what it touches."""
    from app.models.changes import PublicChanges

    cache = deps.response_cache
    assert cache is not None
    dropped: list[PublicChange] = []
    deps.public_changes.listen(lambda change: _record(dropped, change))
    deps.public_changes.start()
    other_process = PublicChanges(deps.bus)
    import asyncio

    for _ in range(100):
        if deps.public_changes.healthy:
            break
        await asyncio.sleep(0.01)
    dropped.clear()
    change = PublicChange(model_ids=("m1",), orders=("POPULAR",), viewer_ids=("u1",))
    await other_process.announce(change)
    for _ in range(100):
        if dropped:
            break
        await asyncio.sleep(0.01)
    assert dropped == [change]
    assert json.dumps(dropped[0].payload("x"))  # what travels is plain JSON


async def _record(into: list[PublicChange], change: PublicChange) -> None:
    into.append(change)
