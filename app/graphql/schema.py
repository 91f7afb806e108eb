"""The schema: each room contributes its queries, mutations and subscriptions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import strawberry
from strawberry.extensions import DisableIntrospection, SchemaExtension

from app.graphql.errors import LumiSchema
from app.graphql.limits import Limits
from app.metrics import GRAPHQL_DURATION, OperationNames
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

    def __init__(self, names: OperationNames) -> None:
        super().__init__()
        self.names = names

    @classmethod
    def factory(cls, names: OperationNames) -> Callable[[], OperationTimer]:
        return lambda: cls(names)

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        try:
            kind = context.operation_type.value
        except RuntimeError:  # the document did not parse
            kind = "invalid"
        name = self.names.label(context.operation_name)
        GRAPHQL_DURATION.labels(kind, name).observe(time.perf_counter() - started)


def build_schema(
    limits: Limits | None = None,
    *,
    introspection: bool = True,
    operation_names: OperationNames | None = None,
) -> strawberry.Schema:
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
            OperationTimer.factory(operation_names or OperationNames()),
        ],
    )


schema = build_schema()


def export_sdl() -> str:
    return schema.as_str() + "\n"
