"""Webhook queries and mutations: a user's own endpoints and deliveries only (anyone
else's answer NOT_FOUND, as a missing one does)."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.graphql.context import Info
from app.graphql.pagination import (
    DEFAULT_PAGE,
    After,
    First,
    check_first,
    decode_cursor,
    encode_cursor,
    paginate,
)
from app.graphql.permissions import IsAuthenticated
from app.graphql.relay import global_id
from app.webhooks import repository, service
from app.webhooks.ssrf import guard_for
from app.webhooks.types import (
    CreateWebhookInput,
    Webhook,
    WebhookConnection,
    WebhookDeliveryConnection,
    WebhookDeliveryType,
)

WebhookId = Annotated[
    strawberry.ID, strawberry.argument(description="Global id of one of your webhooks.")
]
DeliveryId = Annotated[
    strawberry.ID, strawberry.argument(description="A delivery's id (`msg_...`).")
]


def _before(after: str | None) -> str | None:
    cursor = decode_cursor(after, timed=False)
    return cursor.row_id if cursor else None


@strawberry.type
class WebhookQueries:
    @strawberry.field(
        description="Your webhooks, newest first.", permission_classes=[IsAuthenticated]
    )
    async def webhooks(
        self, info: Info, first: First = DEFAULT_PAGE, after: After = None
    ) -> WebhookConnection:
        viewer = await info.context.require_viewer()
        limit = check_first(first)
        async with info.context.read() as session:
            rows = await repository.endpoints_of(
                session, viewer.id, before_id=_before(after), limit=limit + 1
            )
        edges, page = paginate(
            rows,
            limit=limit,
            after=after,
            cursor_of=lambda row: encode_cursor(0, row.id),
            node_of=lambda row: Webhook(row=row),
        )
        return WebhookConnection(edges=edges, page_info=page)

    @strawberry.field(
        description="Your webhook deliveries, newest first: of one webhook, of one "
        "request, or all. NOT_FOUND for a webhook that is not yours.",
        permission_classes=[IsAuthenticated],
    )
    async def webhook_deliveries(
        self,
        info: Info,
        webhook_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Only this webhook's.")
        ] = None,
        request_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Only this request's.")
        ] = None,
        first: First = DEFAULT_PAGE,
        after: After = None,
    ) -> WebhookDeliveryConnection:
        viewer = await info.context.require_viewer()
        limit = check_first(first)
        async with info.context.read() as session:
            mine = webhook_id is None or await repository.endpoint_owned(
                session, webhook_id, viewer.id
            )
            if not mine:
                raise service.WebhookNotFound()
            rows = await repository.deliveries_of(
                session,
                viewer.id,
                endpoint_id=webhook_id,
                request_id=request_id,
                before_id=_before(after),
                limit=limit + 1,
            )
        edges, page = paginate(
            rows,
            limit=limit,
            after=after,
            cursor_of=lambda row: encode_cursor(0, row.id),
            node_of=lambda row: WebhookDeliveryType(row=row),
        )
        return WebhookDeliveryConnection(edges=edges, page_info=page)

    @strawberry.field(
        description="The secret (`whsec_...`) that signs calls to the `webhookUrl` of your "
        "requests; made on first use.",
        permission_classes=[IsAuthenticated],
    )
    async def default_webhook_secret(self, info: Info) -> str:
        viewer = await info.context.require_viewer()
        async with info.context.unit() as unit:
            account = await service.ensure_account(unit.session, viewer.id)
        return account.secret


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(
        description="Registers a URL that receives your request events, signed (Standard "
        "Webhooks). Answers the webhook with its secret, shown only here and on rotation. "
        "A URL that is not http(s), or whose host resolves to a loopback, private, "
        "link-local or otherwise non-public address, is BAD_USER_INPUT and nothing is kept.",
        permission_classes=[IsAuthenticated],
    )
    async def create_webhook(
        self,
        info: Info,
        input: Annotated[CreateWebhookInput, strawberry.argument(description="The webhook.")],
    ) -> Webhook:
        viewer = await info.context.require_viewer()
        await guard_for(info.context.deps.settings).vet(input.url)
        async with info.context.unit() as unit:
            row = await service.create_endpoint(
                unit.session, viewer.id, input.url, input.events, input.secret
            )
        return Webhook(row=row, shown_secret=row.secret)

    @strawberry.mutation(
        description="Deletes one of your webhooks and its pending deliveries; answers its id.",
        permission_classes=[IsAuthenticated],
    )
    async def delete_webhook(self, info: Info, id: WebhookId) -> strawberry.ID:
        viewer = await info.context.require_viewer()
        async with info.context.unit() as unit:
            row = await repository.endpoint_owned(unit.session, id, viewer.id)
            if row is None:
                raise service.WebhookNotFound()
            await repository.delete_endpoint(unit.session, row)
        return global_id("Webhook", row.id)

    @strawberry.mutation(
        description="Gives the webhook a new secret, shown once in the answer. The old one "
        "still signs, beside it, for LUMI_WEBHOOK_SECRET_GRACE_SECONDS.",
        permission_classes=[IsAuthenticated],
    )
    async def rotate_webhook_secret(self, info: Info, id: WebhookId) -> Webhook:
        viewer = await info.context.require_viewer()
        grace = info.context.deps.settings.webhook_secret_grace_seconds
        async with info.context.unit() as unit:
            row = await repository.endpoint_owned(unit.session, id, viewer.id)
            if row is None:
                raise service.WebhookNotFound()
            secret = service.rotate(row, grace)
        return Webhook(row=row, shown_secret=secret)

    @strawberry.mutation(
        description="A new default secret for your requests' `webhookUrl`; the old one "
        "still signs beside it for LUMI_WEBHOOK_SECRET_GRACE_SECONDS.",
        permission_classes=[IsAuthenticated],
    )
    async def rotate_default_webhook_secret(self, info: Info) -> str:
        viewer = await info.context.require_viewer()
        grace = info.context.deps.settings.webhook_secret_grace_seconds
        async with info.context.unit() as unit:
            account = await service.ensure_account(unit.session, viewer.id)
            account = await repository.account(unit.session, viewer.id, for_update=True) or account
            return service.rotate(account, grace)

    @strawberry.mutation(
        description="Sends one of your deliveries again now (same id and body), with a "
        "fresh retry schedule. Later events of its request to the same URL wait for it.",
        permission_classes=[IsAuthenticated],
    )
    async def redeliver_webhook_delivery(self, info: Info, id: DeliveryId) -> WebhookDeliveryType:
        viewer = await info.context.require_viewer()
        async with info.context.unit() as unit:
            row = await service.redeliver(unit.session, viewer.id, id)
        return WebhookDeliveryType(row=row)
