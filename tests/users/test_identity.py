"""Token subjects and client-chosen keys are identifiers: they compare byte for byte on
every database. MariaDB's default collation would make `CaseUser` and `caseuser`, or
`Rene` and `René`, one user; only the MariaDB run of these tests can show it."""

from __future__ import annotations

import pytest

from app.deps import Deps
from tests.graphql.client import data

ME = "{ me { id } }"
CREATE = "mutation C($input: CreateRequestInput!) { createRequest(input: $input) { id } }"


@pytest.mark.parametrize(
    ("subject", "lookalike"), [("CaseUser", "caseuser"), ("Rene", "René")], ids=["case", "accent"]
)
async def test_subjects_that_differ_only_in_case_or_accents_are_two_users(
    deps: Deps, subject: str, lookalike: str
) -> None:
    first = (await data(deps, ME, user=subject))["me"]["id"]
    second = (await data(deps, ME, user=lookalike))["me"]["id"]
    assert first != second
    assert (await data(deps, ME, user=subject))["me"]["id"] == first
    assert (await data(deps, ME, user=lookalike))["me"]["id"] == second


async def test_idempotency_keys_that_differ_only_in_case_are_two_requests(deps: Deps) -> None:
    async def create(key: str) -> str:
        new = {"prompt": "a tin robot", "imageCount": 1, "idempotencyKey": key}
        result = await data(deps, CREATE, {"input": new}, user="keyholder")
        return str(result["createRequest"]["id"])

    upper, lower = await create("Key-A"), await create("key-a")
    assert upper != lower
    assert await create("Key-A") == upper  # each key still answers with its own request
    assert await create("key-a") == lower
