"""The schema: each room contributes its queries, mutations and subscriptions, on the
kit of app/graphql. The one module above the rooms that knows them all."""

from __future__ import annotations

import strawberry
from strawberry.extensions import DisableIntrospection

from app.graphql.errors import LumiSchema
from app.graphql.limits import Limits
from app.graphql.relay import NodeQueries, accept_row_or_global_ids
from app.graphql.timing import OperationTimer
from app.metrics import OperationNames
from app.models.resolvers import ModelMutations, ModelQueries
from app.requests.resolvers import (
    ProviderQueries,
    RequestMutations,
    RequestQueries,
    RequestSubscriptions,
)
from app.uploads.resolvers import UploadMutations
from app.users.resolvers import UserMutations, UserQueries
from app.webhooks.resolvers import WebhookMutations, WebhookQueries


@strawberry.type
class Query(
    NodeQueries, RequestQueries, ModelQueries, ProviderQueries, UserQueries, WebhookQueries
):
    pass


@strawberry.type
class Mutation(RequestMutations, ModelMutations, UserMutations, WebhookMutations, UploadMutations):
    pass


@strawberry.type
class Subscription(RequestSubscriptions):
    pass


# Every argument that names an object takes its global id, or the row id that clients
# kept from before global ids.
accept_row_or_global_ids(Query, Mutation, Subscription)


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
