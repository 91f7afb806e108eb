"""View counts in-process: `viewModel` counts in memory, a flush writes many views of
many models in one statement, shutdown writes what is left, and only others' views of
public models count."""

from __future__ import annotations

from typing import Any

from app.deps import Deps
from app.graphql.relay import global_id
from app.models.views import ViewCounter
from tests.graphql.client import code, data, execute
from tests.models.test_library import count_statements, make_model, user

VIEW = "mutation V($id: ID!) { viewModel(id: $id) { id viewCount } }"
COUNT = "query C($id: ID!) { model(id: $id) { viewCount } }"


def quiet_counter(deps: Deps) -> ViewCounter:
    """The deps' counter, but flushed only when a test says so (no timer in between)."""
    deps.views = ViewCounter(deps.db, deps.public_changes, every=3600)
    return deps.views


async def view_count(deps: Deps, model_id: str, who: str | None = None) -> int:
    found = await data(deps, COUNT, {"id": global_id("Model", model_id)}, user=who)
    return int(found["model"]["viewCount"])


def model_updates(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("UPDATE MODELS")]


async def test_many_views_of_many_models_are_written_in_one_statement(deps: Deps) -> None:
    views = quiet_counter(deps)
    owner, visitor = await user(deps), await user(deps)
    models = [await make_model(deps, owner, public=True) for _ in range(3)]
    wanted = {models[0].id: 12, models[1].id: 7, models[2].id: 1}
    statements = count_statements(deps)
    for model_id, times in wanted.items():
        for turn in range(times):  # signed in and anonymous alike
            who = visitor.external_id if turn % 2 else None
            await data(deps, VIEW, {"id": global_id("Model", model_id)}, user=who)
    assert model_updates(statements) == [], "a view wrote to the database"
    assert views.pending == 20
    assert [await view_count(deps, m) for m in wanted] == [0, 0, 0]  # not written yet

    assert await views.flush() == 3
    assert len(model_updates(statements)) == 1, model_updates(statements)
    assert {m: await view_count(deps, m) for m in wanted} == wanted
    assert views.pending == 0


async def test_shutdown_writes_the_views_not_yet_written(deps: Deps) -> None:
    views = quiet_counter(deps)
    owner = await user(deps)
    model = await make_model(deps, owner, public=True)
    for _ in range(4):
        await data(deps, VIEW, {"id": global_id("Model", model.id)})
    await views.aclose()
    assert await view_count(deps, model.id) == 4


async def test_only_others_views_of_public_models_count(deps: Deps) -> None:
    views = quiet_counter(deps)
    owner, visitor = await user(deps), await user(deps)
    public = await make_model(deps, owner, public=True)
    private = await make_model(deps, owner)
    hidden = await execute(deps, VIEW, {"id": global_id("Model", private.id)}, user=None)
    assert code(hidden) == "NOT_FOUND"
    stranger = await execute(
        deps, VIEW, {"id": global_id("Model", private.id)}, user=visitor.external_id
    )
    assert code(stranger) == "NOT_FOUND"
    own: dict[str, Any] = await data(
        deps, VIEW, {"id": global_id("Model", private.id)}, user=owner.external_id
    )
    assert own["viewModel"]["viewCount"] == 0
    await data(deps, VIEW, {"id": global_id("Model", public.id)}, user=owner.external_id)
    assert views.pending == 0, "the owner's views of their own models counted"
    await data(deps, VIEW, {"id": global_id("Model", public.id)}, user=visitor.external_id)
    await views.flush()
    assert await view_count(deps, public.id) == 1
    assert await view_count(deps, private.id, owner.external_id) == 0


async def test_a_failed_write_keeps_the_views_for_the_next(deps: Deps) -> None:
    views = quiet_counter(deps)
    owner = await user(deps)
    model = await make_model(deps, owner, public=True)
    for _ in range(3):
        await data(deps, VIEW, {"id": global_id("Model", model.id)})
    database = views.db
    views.db = _Broken()  # type: ignore[assignment]
    assert await views.flush() == 0
    assert views.pending == 3
    views.db = database
    assert await views.flush() == 1
    assert await view_count(deps, model.id) == 3


class _Broken:
    """A database whose writes fail, as one that went away."""

    def write(self) -> Any:
        raise ConnectionError("the database went away")
