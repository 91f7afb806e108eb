"""Depth, alias, token and cost bombs are refused before any resolver runs."""

from __future__ import annotations

import time
from typing import Any

import pytest
import strawberry
from graphql import get_introspection_query, parse, validate
from sqlalchemy import event

from app.deps import Deps
from app.graphql.context import Context
from app.graphql.limits import Limits, cost_rule
from app.graphql.pagination import DEFAULT_PAGE, MAX_PAGE
from app.schema import build_schema
from tests.graphql.client import http_request
from tests.workers.test_pipeline import a_viewer

LIMITS = Limits(max_depth=4, max_aliases=10, max_tokens=800, max_cost=5000)
schema = build_schema(LIMITS)

DEPTH_BOMB = "{ requests(first: 1) { edges { node { model { sourceImage { id } } } } } }"
ALIAS_BOMB = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(11)) + " }"
TOKEN_BOMB = "{ me { " + " ".join("id" for _ in range(900)) + " } }"
PAGE = "requests(first: 100) { edges { node { id status step progress prompt " + (
    "images { id prompt status url width height } jobs { id kind status attempt } } } }"
)
COST_BOMB = "{ " + " ".join(f"p{i}: {PAGE}" for i in range(4)) + " }"


async def run(
    deps: Deps,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    schema: strawberry.Schema = schema,
) -> tuple[list[dict[str, Any]], int, float]:
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(deps.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        context = Context(deps, http_request("alice"), None)
        started = time.perf_counter()
        result = await schema.execute(query, variables, context_value=context)
        elapsed = time.perf_counter() - started
        await context.end_reads()
    finally:
        event.remove(deps.db.engine.sync_engine, "before_cursor_execute", count)
    return [e.formatted for e in result.errors or []], statements, elapsed


@pytest.mark.parametrize(
    ("query", "words", "code"),
    [
        (DEPTH_BOMB, "depth", "GRAPHQL_VALIDATION_FAILED"),
        (ALIAS_BOMB, "aliases", "GRAPHQL_VALIDATION_FAILED"),
        (TOKEN_BOMB, "token", "LIMIT_EXCEEDED"),
        (COST_BOMB, "costs", "GRAPHQL_VALIDATION_FAILED"),
    ],
)
async def test_a_bomb_is_refused_before_any_resolver_runs(
    deps: Deps, query: str, words: str, code: str
) -> None:
    await a_viewer(deps)  # alice exists: a resolver would have no reason not to run
    errors, statements, elapsed = await run(deps, query)
    assert errors
    assert words in errors[0]["message"].lower()
    assert errors[0]["extensions"]["code"] == code
    assert statements == 0  # the database was never asked
    assert elapsed < 1


async def test_an_ordinary_page_passes_every_limit(deps: Deps) -> None:
    await a_viewer(deps)
    query = "{ me { credits } requests(first: 20) { edges { node { id status step } } } }"
    errors, statements, _ = await run(deps, query)
    assert errors == []
    assert statements > 0


INTROSPECTION = get_introspection_query()
_TYPE_FRAGMENTS = "fragment" + INTROSPECTION.split("fragment", 1)[1]


async def test_the_full_introspection_query_that_tools_send_passes(deps: Deps) -> None:
    errors, _, _ = await run(deps, INTROSPECTION, schema=build_schema())
    assert errors == []


async def test_introspection_counts_toward_the_cost_limit(deps: Deps) -> None:
    """Thirty aliases over the deep introspection fragments cost 1.3 MB and up to 2 s of
    the event loop per anonymous request when introspection was counted as free."""
    aliases = " ".join(f"a{i}: __schema {{ types {{ ...FullType }} }}" for i in range(30))
    errors, _, elapsed = await run(
        deps, f"{{ {aliases} }} {_TYPE_FRAGMENTS}", schema=build_schema()
    )
    assert len(errors) == 1
    assert "costs" in errors[0]["message"]
    assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert elapsed < 1


async def test_without_introspection_errors_suggest_no_names(deps: Deps) -> None:
    """ "Did you mean ...?" would hand out the schema one name at a time."""
    hidden = build_schema(introspection=False)
    typo = "{ me { credit } publicModels(first: 1, sort: LATES) { edges { cursor } } }"
    open_errors, _, _ = await run(deps, typo, schema=build_schema())
    assert any("Did you mean" in error["message"] for error in open_errors)
    errors, _, _ = await run(deps, typo, schema=hidden)
    assert errors
    assert all("Did you mean" not in error["message"] for error in errors)
    variable = "query($s: ModelSort!) { publicModels(first: 1, sort: $s) { edges { cursor } } }"
    errors, _, _ = await run(deps, variable, {"s": "LATES"}, schema=hidden)
    assert errors
    assert all("Did you mean" not in error["message"] for error in errors)


def cost_of(query: str) -> int:
    """What the cost rule charges `query`: the smallest limit it passes."""
    document = parse(query)
    low, high = 0, 1_000_000
    while low < high:
        middle = (low + high) // 2
        if validate(schema._schema, document, [cost_rule(middle)]):
            low = middle + 1
        else:
            high = middle
    return low


def test_a_page_without_first_costs_its_default_and_nodes_as_many_as_its_ids() -> None:
    page = "edges { node { id status step } }"
    assert cost_of(f"{{ requests {{ {page} }} }}") == cost_of(
        f"{{ requests(first: {DEFAULT_PAGE}) {{ {page} }} }}"
    )
    assert cost_of(f"{{ requests(first: null) {{ {page} }} }}") == cost_of(
        f"{{ requests {{ {page} }} }}"
    )
    one = cost_of('{ nodes(ids: ["a"]) { id ... on GenerationRequest { status step } } }')
    five = cost_of(
        '{ nodes(ids: ["a", "b", "c", "d", "e"]) { id ... on GenerationRequest { status step } } }'
    )
    assert five - 1 == 5 * (one - 1)
    from_variable = "query Q($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    assert cost_of(from_variable) == 1 + MAX_PAGE
