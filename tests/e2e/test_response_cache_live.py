"""No stale read across API instances: two `lumi serve` on MariaDB and the Redis bus.

For every field the cached operations show, each way the API changes it: read it on B
(so B keeps the answer), change it on A, read on B until the change shows. Prints how
long that took (the invalidation latency): the figure is reported, not asserted."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth import Claims, Viewer
from app.bus import InProcessBus
from app.deps import Deps, build_deps
from app.users.service import viewer_for
from tests.conftest import (
    REDIS,
    RecordingQueue,
    Server,
    make_settings,
    mariadb_database,
    require,
    start_server,
    stop_server,
    token_for,
)
from tests.models.test_library import make_model

pytestmark = pytest.mark.e2e

FIELDS = """id name description likeCount favoriteCount downloadCount likedByMe
  favoritedByMe owner { displayName } previewUrl"""
GALLERY = f"""query Gallery {{ publicModels(first: 50) {{
  edges {{ node {{ {FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"""
DETAIL = f"query Detail($id: ID!) {{ model(id: $id) {{ {FIELDS} }} }}"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, Path, str]]:
    require("Redis", REDIS)
    data_dir = tmp_path_factory.mktemp("cache-pair")
    with mariadb_database(f"lumi_cache_{os.getpid()}") as url:
        env = {
            "LUMI_DATABASE_URL": url,
            "LUMI_BUS": "redis",
            "LUMI_REDIS_NAMESPACE": f"lumi-test-{uuid.uuid4().hex[:8]}",
            "LUMI_AUTO_MIGRATE": "false",
            "LUMI_RATE_LIMIT_USER_PER_MINUTE": "0",
            "LUMI_RATE_LIMIT_IP_PER_MINUTE": "0",
        }
        with contextlib.ExitStack() as started:
            first = start_server(data_dir, name="api-a", **env)
            started.callback(stop_server, first)
            second = start_server(data_dir, name="api-b", **env)
            started.callback(stop_server, second)
            yield first, second, data_dir, url


@pytest.fixture
async def deps(pair: tuple[Server, Server, Path, str]) -> AsyncIterator[Deps]:
    """The test's own access to the servers' database and files, to make models."""
    _, _, data_dir, url = pair
    built = build_deps(
        make_settings(data_dir, database_url=url), bus=InProcessBus(), queue=RecordingQueue()
    )
    yield built
    await built.aclose()


async def someone(deps: Deps, name: str) -> Viewer:
    async with deps.db.write() as session:
        return await viewer_for(session, Claims(subject=name, name=name))


async def call(
    client: httpx.AsyncClient,
    server: Server,
    query: str,
    variables: dict[str, Any],
    who: str | None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token_for(who)}"} if who else {}
    answer = await client.post(
        server.graphql, json={"query": query, "variables": variables}, headers=headers
    )
    result: dict[str, Any] = answer.json()
    return result


async def hits(client: httpx.AsyncClient, server: Server) -> float:
    text = (await client.get(f"{server.url}/metrics")).text
    for line in text.splitlines():
        if line.startswith('lumi_response_cache_requests_total{result="hit"}'):
            return float(line.split()[-1])
    return 0.0


def node_of(result: dict[str, Any], model_id: str) -> dict[str, Any] | None:
    """The model in a gallery or detail answer, or None when it is not there."""
    data = result.get("data") or {}
    if "model" in data:
        return data["model"]  # type: ignore[no-any-return]
    from app.graphql.relay import row_id

    for edge in data["publicModels"]["edges"]:
        if row_id(edge["node"]["id"]) == model_id:
            return edge["node"]  # type: ignore[no-any-return]
    return None


# (the model as the reader sees it, or None; whether the reader made the change; whether
# it is the detail) -> whether the read shows the change
Check = Callable[[dict[str, Any] | None, bool, bool], bool]


def counts(like: int, favorite: int, *, liked: bool = False, faved: bool = False) -> Check:
    """The counts for everyone; the flags for the one who changed them, false for others."""
    return lambda n, me, _: (
        n is not None
        and (n["likeCount"], n["favoriteCount"]) == (like, favorite)
        and (n["likedByMe"], n["favoritedByMe"]) == ((liked, faved) if me else (False, False))
    )


def shown(n: dict[str, Any] | None, me: bool, detail: bool) -> bool:
    return n is not None


def gone_but_for_its_owner(n: dict[str, Any] | None, me: bool, detail: bool) -> bool:
    return (n is not None) == (me and detail)


def gone(n: dict[str, Any] | None, me: bool, detail: bool) -> bool:
    return n is None


async def test_every_change_on_one_instance_shows_in_the_next_reads_on_another(
    pair: tuple[Server, Server, Path, str], deps: Deps
) -> None:
    api_a, api_b, _, _ = pair
    tag = uuid.uuid4().hex[:6]
    owner, fan = await someone(deps, f"owner-{tag}"), await someone(deps, f"fan-{tag}")
    model = await make_model(deps, owner)  # private at first
    ident = {"id": model.id}
    latencies: list[float] = []
    totals = {"stale": 0}

    async with httpx.AsyncClient(timeout=10) as client:

        async def change(
            label: str, mutation: str, variables: dict[str, Any], who: str, check: Check
        ) -> None:
            reads = [(q, v, r) for q, v in ((GALLERY, {}), (DETAIL, ident)) for r in (who, None)]
            for query, values, reader in reads:  # B keeps each answer: planned, then made
                for _ in range(3):
                    await call(client, api_b, query, values, reader)
            changed = await call(client, api_a, mutation, variables, who)
            assert not changed.get("errors"), changed
            done = time.perf_counter()
            for query, values, reader in reads:
                deadline, stale = time.monotonic() + 10, 0
                while True:
                    sent = time.perf_counter()
                    seen = node_of(await call(client, api_b, query, values, reader), model.id)
                    if check(seen, reader is not None, query is DETAIL):
                        break
                    stale += 1
                    assert time.monotonic() < deadline, f"{label}: B still shows {seen}"
                # How long after A answered a read on B was first sent that showed it:
                # with no stale read before it, the invalidation had arrived by then.
                latencies.append(sent - done)
                print(
                    f"{label:>18} {query.split()[1]:>11} {'actor' if reader else 'anonymous':>9}: "
                    f"fresh read sent {latencies[-1] * 1000:5.1f} ms after, {stale} stale before"
                )
                totals["stale"] += stale

        by_owner, by_fan = owner.external_id, fan.external_id
        act = "mutation M($id: ID!) {{ {}(id: $id) {{ id }} }}".format
        update = """mutation U($id: ID!, $i: UpdateModelInput!) {
            updateModel(id: $id, input: $i) { id } }"""
        download = "mutation D($id: ID!) { downloadModel(id: $id) { url } }"
        rename = "mutation R($i: UpdateMeInput!) { updateMe(input: $i) { displayName } }"
        new_name = f"Ada {tag}"
        steps: list[tuple[str, str, dict[str, Any], str, Check]] = [
            ("publish", act("publishModel"), ident, by_owner, shown),
            (
                "rename",
                update,
                {**ident, "i": {"name": "Renamed"}},
                by_owner,
                lambda n, me, d: n is not None and n["name"] == "Renamed",
            ),
            (
                "describe",
                update,
                {**ident, "i": {"description": "glazed"}},
                by_owner,
                lambda n, me, d: n is not None and n["description"] == "glazed",
            ),
            ("like", act("likeModel"), ident, by_fan, counts(1, 0, liked=True)),
            ("favorite", act("favoriteModel"), ident, by_fan, counts(1, 1, liked=True, faved=True)),
            ("unlike", act("unlikeModel"), ident, by_fan, counts(0, 1, faved=True)),
            ("unfavorite", act("unfavoriteModel"), ident, by_fan, counts(0, 0)),
            (
                "download",
                download,
                ident,
                by_fan,
                lambda n, me, d: n is not None and n["downloadCount"] == 1,
            ),
            (
                "owner displayName",
                rename,
                {"i": {"displayName": new_name}},
                by_owner,
                lambda n, me, d: n is not None and n["owner"]["displayName"] == new_name,
            ),
            ("unpublish", act("unpublishModel"), ident, by_owner, gone_but_for_its_owner),
            ("publish again", act("publishModel"), ident, by_owner, shown),
            ("delete", "mutation X($id: ID!) { deleteModel(id: $id) }", ident, by_owner, gone),
        ]
        for step in steps:
            await change(*step)
        assert await hits(client, api_b) > 0  # B did answer from its cache

    print(
        f"\ninvalidation latency, change answered on A -> fresh read on B: median "
        f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
        f"over {len(latencies)} reads, {totals['stale']} stale reads in all"
    )


async def test_a_viewers_own_like_on_one_instance_shows_in_their_first_read_on_another(
    pair: tuple[Server, Server, Path, str], deps: Deps
) -> None:
    """B keeps the fan's flags; each like or unlike on A bumps the fan's flags version
    before A answers, so the fan's next read on B shows it the first time, even before
    the bus has brought the change to B."""
    api_a, api_b, _, _ = pair
    tag = uuid.uuid4().hex[:6]
    owner, fan = await someone(deps, f"owner-{tag}"), await someone(deps, f"fan-{tag}")
    other = await someone(deps, f"other-{tag}")
    model = await make_model(deps, owner)
    ident = {"id": model.id}
    reads = ((GALLERY, {}), (DETAIL, ident))
    toggle = "mutation T($id: ID!) {{ {}(id: $id) {{ likedByMe }} }}".format
    async with httpx.AsyncClient(timeout=10) as client:
        # published through the API, so the galleries kept before show it
        await call(client, api_a, toggle("publishModel"), ident, owner.external_id)
        for query, values in reads:  # planned, then kept with each one's flags
            for who in (fan.external_id, other.external_id, fan.external_id):
                await call(client, api_b, query, values, who)
        for turn in range(10):
            on = turn % 2 == 0
            done = await call(
                client, api_a, toggle("likeModel" if on else "unlikeModel"), ident, fan.external_id
            )
            assert done["data"] == {("likeModel" if on else "unlikeModel"): {"likedByMe": on}}
            for query, values in reads:
                seen = node_of(await call(client, api_b, query, values, fan.external_id), model.id)
                assert seen is not None
                # the fan's own flag at once, whether B heard of the like yet or not
                assert seen["likedByMe"] is on, f"turn {turn}: B shows {seen}"
                deadline = time.monotonic() + 10
                while True:  # the count: as soon as B heard of it (the first test times it)
                    theirs = node_of(
                        await call(client, api_b, query, values, other.external_id), model.id
                    )
                    assert theirs is not None
                    assert theirs["likedByMe"] is False
                    if theirs["likeCount"] == (1 if on else 0):
                        break
                    assert time.monotonic() < deadline, f"turn {turn}: B shows {theirs}"
        assert await hits(client, api_b) > 0
