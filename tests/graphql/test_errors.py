"""Errors reach clients with a code; anything unexpected is masked and logged."""

from __future__ import annotations

import logging

import pytest
import strawberry

from app.errors import BadUserInput
from app.graphql.errors import LumiSchema


@strawberry.type
class Query:
    @strawberry.field
    def broken(self) -> str:
        raise RuntimeError("SELECT secret FROM users -- leaked?")

    @strawberry.field
    def refused(self) -> str:
        raise BadUserInput("prompt must not be empty", field="prompt")

    @strawberry.field
    def fine(self, count: int) -> int:
        return count


schema = LumiSchema(query=Query)


async def test_an_unexpected_error_is_masked_with_an_incident_id_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="app.graphql"):
        result = await schema.execute("{ broken }")
    assert result.errors is not None
    formatted = result.errors[0].formatted
    assert formatted["message"] == "internal error"
    assert formatted["extensions"]["code"] == "INTERNAL"
    assert "secret" not in str(formatted)
    incident = formatted["extensions"]["incidentId"]
    assert any(incident in record.getMessage() for record in caplog.records)
    assert any(record.exc_info for record in caplog.records)


async def test_a_domain_error_keeps_its_message_code_and_details() -> None:
    result = await schema.execute("{ refused }")
    assert result.errors is not None
    formatted = result.errors[0].formatted
    assert formatted["message"] == "prompt must not be empty"
    assert formatted["extensions"] == {"code": "BAD_USER_INPUT", "field": "prompt"}


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        ("{ fine(count: 1", None, "GRAPHQL_PARSE_FAILED"),
        ("{ nosuchfield }", None, "GRAPHQL_VALIDATION_FAILED"),
        ("query Q($c: Int!) { fine(count: $c) }", {"c": "many"}, "BAD_USER_INPUT"),
    ],
)
async def test_malformed_operations_are_coded(
    query: str, variables: dict[str, object] | None, code: str
) -> None:
    result = await schema.execute(query, variable_values=variables)
    assert result.errors is not None
    assert result.errors[0].formatted["extensions"]["code"] == code
