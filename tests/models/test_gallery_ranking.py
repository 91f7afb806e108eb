"""The counter sorts of the gallery walk a ranking snapshot: each model once, none skipped,
while likes, favorites and downloads change the live order under the walk."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from app.deps import Deps
from app.graphql.relay import row_id
from app.models.changes import PublicChange
from app.models.ranking import Rankings
from app.tables import GalleryRank, GalleryRanking, Model, utcnow
from tests.graphql.client import code, data, execute
from tests.models.test_library import GALLERY, make_model, user

# Which counter each sort ranks by, so a test moves a model up or down in it.
COUNTER = {
    "POPULAR": "favorite_count",
    "MOST_LIKED": "like_count",
    "MOST_DOWNLOADED": "download_count",
    "MOST_VIEWED": "view_count",
}


async def set_counter(deps: Deps, model_id: str, counter: str, value: int) -> None:
    """Sets one counter (and popularity, in step) as likes, favorites or downloads would."""
    async with deps.db.write() as session:
        row = (await session.execute(select(Model).where(col(Model.id) == model_id))).scalar_one()
        counts = {
            "like_count": row.like_count,
            "favorite_count": row.favorite_count,
            "download_count": row.download_count,
            "view_count": row.view_count,
        }
        counts[counter] = value
        popularity = (
            2 * counts["like_count"] + 3 * counts["favorite_count"] + counts["download_count"]
        )
        await session.execute(
            update(Model).where(col(Model.id) == model_id).values(popularity=popularity, **counts)
        )


async def live_counts(deps: Deps, model_ids: list[str]) -> dict[str, tuple[int, int, int]]:
    async with deps.db.read() as session:
        rows = (await session.execute(select(Model).where(col(Model.id).in_(model_ids)))).scalars()
        return {r.id: (r.like_count, r.favorite_count, r.download_count) for r in rows}


async def page_of(
    deps: Deps, sort: str, after: str | None, first: int = 3, who: str | None = None
) -> dict[str, Any]:
    variables = {"first": first, "after": after, "sort": sort}
    return (await data(deps, GALLERY, variables, user=who))["publicModels"]  # type: ignore[no-any-return]


def ids_of(page: dict[str, Any]) -> list[str]:
    return [row_id(edge["node"]["id"]) for edge in page["edges"]]


@pytest.mark.parametrize("sort", ["POPULAR", "MOST_LIKED", "MOST_DOWNLOADED", "MOST_VIEWED"])
async def test_a_walk_sees_each_model_once_while_counts_reorder_the_gallery(
    deps: Deps, sort: str
) -> None:
    owner, fan = await user(deps), await user(deps)
    counter = COUNTER[sort]
    models = [await make_model(deps, owner, public=True, name=f"m{i}") for i in range(9)]
    ids = [m.id for m in models]
    for i, model_id in enumerate(ids):
        await set_counter(deps, model_id, counter, (9 - i) * 10)  # m0 first ... m8 last

    seen: list[str] = []
    after = None
    for turn in range(10):
        page = await page_of(deps, sort, after, who=fan.external_id)
        seen += ids_of(page)
        live = await live_counts(deps, ids_of(page))
        for edge in page["edges"]:  # every card shows its counts as they are now
            node = edge["node"]
            shown = (node["likeCount"], node["favoriteCount"], node["downloadCount"])
            assert shown == live[row_id(node["id"])]
        if turn == 0:
            # the last model, not yet seen, jumps above every seen one; a seen one falls
            # below every unseen one; a like through the API for one in the middle
            await set_counter(deps, ids[8], counter, 1000)
            await set_counter(deps, ids[0], counter, 0)
            await data(
                deps,
                "mutation L($id: ID!) { likeModel(id: $id) { id } }",
                {"id": ids[4]},
                user=fan.external_id,
            )
        if turn == 1:
            await set_counter(deps, ids[7], counter, 500)
            await set_counter(deps, ids[3], counter, 1)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)), "a model was shown twice"
    assert sorted(seen) == sorted(ids), "a model was skipped"


class Clock:
    """The time the rankings see, moved by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


EVERY, KEEP = 10, 60


@pytest.fixture
def clock(deps: Deps) -> Clock:
    """The deps' rankings, on a clock of the test's: a new one is due `EVERY` seconds
    after the newest, and a replaced one is kept `KEEP` seconds."""
    clock = Clock()
    deps.rankings = Rankings(every=EVERY, keep=KEEP, clock=clock)
    return clock


async def versions(deps: Deps) -> list[int]:
    async with deps.db.read() as session:
        query = select(GalleryRanking.version).order_by(col(GalleryRanking.version))
        return list((await session.execute(query)).scalars())


def version_of(cursor: str) -> int:
    return int(json.loads(base64.urlsafe_b64decode(cursor))[2])


async def test_a_model_unpublished_mid_walk_drops_out_and_one_published_waits_for_a_new_walk(
    deps: Deps, clock: Clock
) -> None:
    owner = await user(deps)
    ids = [(await make_model(deps, owner, public=True, like_count=10 - i)).id for i in range(6)]
    first = await page_of(deps, "MOST_LIKED", None, first=2)
    assert ids_of(first) == ids[:2]
    unpublish = "mutation U($id: ID!) { unpublishModel(id: $id) { id } }"
    await data(deps, unpublish, {"id": ids[3]}, user=owner.external_id)
    await data(
        deps,
        "mutation D($id: ID!) { deleteModel(id: $id) }",
        {"id": ids[4]},
        user=owner.external_id,
    )
    newcomer = await make_model(deps, owner, public=True, like_count=100)

    rest = await page_of(deps, "MOST_LIKED", first["pageInfo"]["endCursor"], first=10)
    assert ids_of(rest) == [ids[2], ids[5]]
    assert rest["pageInfo"]["hasNextPage"] is False
    # a new walk while the ranking is fresh reads the same ranking ...
    assert ids_of(await page_of(deps, "MOST_LIKED", None, first=10)) == [
        ids[0],
        ids[1],
        ids[2],
        ids[5],
    ]
    clock.advance(EVERY)  # ... and once a new one is due, it ranks the gallery as it is
    assert ids_of(await page_of(deps, "MOST_LIKED", None, first=10)) == [
        newcomer.id,
        ids[0],
        ids[1],
        ids[2],
        ids[5],
    ]


async def test_a_new_ranking_is_built_only_once_the_newest_is_older_than_the_setting(
    deps: Deps, clock: Clock
) -> None:
    owner = await user(deps)
    await make_model(deps, owner, public=True)
    heard: list[PublicChange] = []

    async def listen(change: PublicChange) -> None:
        heard.append(change)

    deps.public_changes.listen(listen)
    for sort in ("POPULAR", "MOST_LIKED", "MOST_DOWNLOADED", "MOST_VIEWED"):  # one ranking
        assert version_of((await page_of(deps, sort, None))["pageInfo"]["endCursor"]) == 1
    clock.advance(EVERY - 0.5)
    assert version_of((await page_of(deps, "POPULAR", None))["pageInfo"]["endCursor"]) == 1
    assert await versions(deps) == [1]
    clock.advance(0.5)
    assert version_of((await page_of(deps, "POPULAR", None))["pageInfo"]["endCursor"]) == 2
    assert await versions(deps) == [1, 2]
    # each new ranking is announced, so the cached pages of the counter sorts go
    orders = ("POPULAR", "MOST_LIKED", "MOST_DOWNLOADED", "MOST_VIEWED")
    assert heard == [PublicChange(orders=orders)] * 2


async def test_concurrent_first_pages_build_one_ranking(deps: Deps, clock: Clock) -> None:
    owner = await user(deps)
    for i in range(5):
        await make_model(deps, owner, public=True, download_count=i)
    # eight visitors of one API process at once ...
    pages = await asyncio.gather(*(page_of(deps, "MOST_DOWNLOADED", None) for _ in range(8)))
    assert {version_of(p["pageInfo"]["endCursor"]) for p in pages} == {1}
    assert await versions(deps) == [1]
    # ... and of six API processes at once, once the ranking is stale
    clock.advance(EVERY)
    processes = [Rankings(every=EVERY, keep=KEEP, clock=clock) for _ in range(6)]
    built = await asyncio.gather(*(p.newest(deps.db, deps.public_changes) for p in processes))
    assert {snapshot.version for snapshot in built} == {2}
    assert await versions(deps) == [1, 2]


async def test_replaced_rankings_are_purged_and_their_cursors_expire(
    deps: Deps, clock: Clock
) -> None:
    owner = await user(deps)
    for i in range(4):
        await make_model(deps, owner, public=True, like_count=i)
    old = await page_of(deps, "POPULAR", None, first=1)  # version 1
    clock.advance(EVERY)
    recent = await page_of(deps, "POPULAR", None, first=1)  # version 2 replaces 1
    clock.advance(KEEP)
    await page_of(deps, "POPULAR", None, first=1)  # version 3: 1 was replaced KEEP ago
    assert await versions(deps) == [2, 3]
    async with deps.db.read() as session:
        ranked = (await session.execute(select(GalleryRank.version))).scalars().all()
    assert set(ranked) == {2, 3}  # the ranks of version 1 went with it

    expired = await execute(
        deps, GALLERY, {"first": 1, "after": old["pageInfo"]["endCursor"], "sort": "POPULAR"}
    )
    assert code(expired) == "BAD_USER_INPUT"
    assert expired["errors"][0]["message"] == (
        "this page's ranking has expired; start again from the first page"
    )
    assert expired["errors"][0]["extensions"]["field"] == "after"
    # a walk begun on version 2 goes on: it was replaced less than KEEP ago
    assert len((await page_of(deps, "POPULAR", recent["pageInfo"]["endCursor"]))["edges"]) == 3


async def test_a_cursor_of_another_sort_is_refused(deps: Deps) -> None:
    owner = await user(deps)
    for _ in range(3):
        await make_model(deps, owner, public=True)
    popular = (await page_of(deps, "POPULAR", None, first=1))["pageInfo"]["endCursor"]
    latest = (await page_of(deps, "LATEST", None, first=1))["pageInfo"]["endCursor"]
    for sort, cursor in (("MOST_LIKED", popular), ("POPULAR", latest), ("LATEST", popular)):
        result = await execute(deps, GALLERY, {"first": 1, "after": cursor, "sort": sort})
        assert code(result) == "BAD_USER_INPUT"
