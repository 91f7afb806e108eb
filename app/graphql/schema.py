"""The schema: each room contributes its queries, mutations and subscriptions."""

from __future__ import annotations

import time
from collections.abc import Iterator

import strawberry
from strawberry.extensions import DisableIntrospection, SchemaExtension

from app.graphql.errors import LumiSchema
from app.graphql.limits import Limits
from app.metrics import GRAPHQL_DURATION
from app.models.resolvers import ModelMutations, ModelQueries
from app.requests.resolvers import (
    ProviderQueries,
    RequestMutations,
    RequestQueries,
    RequestSubscriptions,
)
from app.users.resolvers import UserMutations, UserQueries


@strawberry.type
class Query(RequestQueries, ModelQueries, ProviderQueries, UserQueries):
    pass


@strawberry.type
class Mutation(RequestMutations, ModelMutations, UserMutations):
    pass


@strawberry.type
class Subscription(RequestSubscriptions):
    pass


class OperationTimer(SchemaExtension):
    """Times each operation for `lumi_graphql_operation_duration_seconds`."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        try:
            kind = context.operation_type.value
        except RuntimeError:  # the document did not parse
            kind = "invalid"
        name = (context.operation_name or "anonymous")[:64]
        GRAPHQL_DURATION.labels(kind, name).observe(time.perf_counter() - started)


def build_schema(limits: Limits | None = None, *, introspection: bool = True) -> strawberry.Schema:
    """The schema, with the operation limits checked before any resolver runs. Without
    introspection, errors make no "Did you mean ...?" suggestions either: those would
    reveal the schema one name at a time."""
    limits = limits or Limits()
    documents = limits.documents(hide_suggestions=not introspection)
    return LumiSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        documents=documents,
        extensions=[
            *limits.extensions(documents),
            *([] if introspection else [DisableIntrospection]),
            OperationTimer,
        ],
    )


schema = build_schema()


def export_sdl() -> str:
    return schema.as_str() + "\n"
