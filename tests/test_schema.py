"""schema.graphql is the code's schema, and every field documents and guards itself."""

from __future__ import annotations

from pathlib import Path

from graphql import GraphQLObjectType

from app.graphql.permissions import IsAnyone, IsAuthenticated
from app.graphql.schema import Mutation, Subscription, export_sdl, schema

ROOT = Path(__file__).resolve().parent.parent


def test_schema_graphql_equals_the_schema_exported_from_the_code() -> None:
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == export_sdl(), "schema.graphql is stale: run `make schema`"


def test_every_mutation_and_subscription_declares_its_permission() -> None:
    for root in (Mutation, Subscription):
        for field in root.__strawberry_definition__.fields:  # type: ignore[attr-defined]
            kinds = {type(p) for p in field.permission_classes} | set(field.permission_classes)
            assert kinds & {IsAuthenticated, IsAnyone}, f"{field.name} declares no permission"


def test_every_public_field_has_a_description() -> None:
    graphql_schema = schema._schema
    missing = []
    for name, type_ in graphql_schema.type_map.items():
        if name.startswith("__") or not isinstance(type_, GraphQLObjectType):
            continue
        for field_name, field in type_.fields.items():
            if not field.description:
                missing.append(f"{name}.{field_name}")
    assert missing == []
