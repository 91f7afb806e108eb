"""What clients rely on beyond each field: a lookup that finds nothing leaves the rest of
the answer alone, enums are enums, pages have a default size and a total."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings
from app.deps import Deps
from app.models import service as models
from tests.conftest import make_settings
from tests.graphql.client import code, data, execute
from tests.models.test_library import make_model, user
from tests.workers.test_pipeline import a_viewer, deliver, submit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Instant local providers, so a request runs to its model at once."""
    return make_settings(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'lumi.db'}",
        local_latency_seconds=0,
        local_model_latency_seconds=0,
        model_poll_interval_seconds=0.01,
    )


async def test_a_lookup_that_finds_nothing_is_null_and_the_other_fields_still_answer(
    deps: Deps,
) -> None:
    await a_viewer(deps, "alice")
    theirs = await submit(deps, await a_viewer(deps, "bob"))
    query = """query Q($r: ID!, $m: ID!) {
      me { displayName }
      request(id: $r) { id prompt }
      model(id: $m) { id name }
      availableProviders { name }
    }"""
    missing = "0" * 32
    result = await execute(deps, query, {"r": theirs, "m": missing}, user="alice")
    assert result["data"]["me"] == {"displayName": "alice"}
    assert result["data"]["availableProviders"]
    assert (result["data"]["request"], result["data"]["model"]) == (None, None)
    assert sorted((e["path"][0], e["extensions"]["code"]) for e in result["errors"]) == [
        ("model", "NOT_FOUND"),
        ("request", "NOT_FOUND"),
    ]


async def test_strings_that_are_really_enums_answer_as_enums(deps: Deps) -> None:
    viewer = await a_viewer(deps, "alice")
    await submit(deps, viewer, image_count=1, auto_model=True)
    await deliver(deps)
    query = """{
      myModels { edges { node { format status visibility } } }
      requests(status: COMPLETED) { edges { node { status modelFormat priority } } }
      me { role ledger { edges { node { kind reason } } } }
    }"""
    answer = await data(deps, query, user="alice")
    assert answer["myModels"]["edges"] == [
        {"node": {"format": "GLB", "status": "READY", "visibility": "PRIVATE"}}
    ]
    assert answer["requests"]["edges"] == [
        {"node": {"status": "COMPLETED", "modelFormat": "GLB", "priority": "DEFAULT"}}
    ]
    assert answer["me"]["role"] == "user"  # operators name roles: a string (see the README)
    entries = {(e["node"]["kind"], e["node"]["reason"]) for e in answer["me"]["ledger"]["edges"]}
    assert entries == {("GRANT", "INITIAL"), ("DEBIT", "IMAGES"), ("DEBIT", "MODEL")}


async def test_first_may_be_left_out_or_null_and_pages_then_hold_twenty(deps: Deps) -> None:
    owner = await user(deps, "collector")
    for _ in range(23):
        await make_model(deps, owner)
    for arguments in ("", "(first: null)", "(first: 20)"):
        page = await data(
            deps,
            f"{{ myModels{arguments} {{ totalCount edges {{ node {{ id }} }} "
            "pageInfo { hasNextPage } } }",
            user="collector",
        )
        connection = page["myModels"]
        assert (len(connection["edges"]), connection["totalCount"]) == (20, 23), arguments
        assert connection["pageInfo"]["hasNextPage"] is True
    for first in (0, 101):
        refused = await execute(
            deps, f"{{ myModels(first: {first}) {{ totalCount }} }}", user="collector"
        )
        assert code(refused) == "BAD_USER_INPUT"


async def test_total_count_counts_every_page_where_counting_is_cheap(deps: Deps) -> None:
    viewer = await a_viewer(deps, "alice")
    for _ in range(3):
        await submit(deps, viewer, image_count=1)
    fan = await user(deps, "fan")
    shown = await make_model(deps, viewer, public=True)
    hidden = await make_model(deps, viewer, public=True)
    for model in (shown, hidden):
        async with deps.unit() as unit:
            await models.set_interaction(unit, fan.id, model.id, "LIKE", on=True)
    async with deps.unit() as unit:  # liked, then taken private: no longer the fan's to see
        await models.set_visibility(unit, viewer, hidden.id, models.PRIVATE)
    counts = await data(
        deps,
        """{ requests(first: 1) { totalCount }
             pending: requests(first: 1, status: IMAGE_PENDING) { totalCount }
             done: requests(first: 1, status: COMPLETED) { totalCount }
             me { ledger(first: 1) { totalCount } } }""",
        user="alice",
    )
    assert counts["requests"]["totalCount"] == 3
    assert (counts["pending"]["totalCount"], counts["done"]["totalCount"]) == (3, 0)
    assert counts["me"]["ledger"]["totalCount"] == 4  # the grant, and three debits
    liked = await data(deps, "{ likedModels(first: 1) { totalCount } }", user="fan")
    assert liked["likedModels"]["totalCount"] == 1
    gallery = await data(deps, "{ publicModels(first: 1) { totalCount edges { cursor } } }")
    assert gallery["publicModels"]["totalCount"] is None  # not counted: see its description
