"""GraphQL types of webhooks."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from app.graphql.enums import described, described_enum
from app.graphql.pagination import Edge, PageInfo
from app.graphql.relay import global_id, global_id_or_none
from app.tables import WebhookDelivery, WebhookEndpoint
from app.webhooks.service import WebhookEvent

WebhookEventType = described_enum(
    WebhookEvent,
    name="WebhookEvent",
    description="Which of a request's events a webhook receives.",
    values={
        "REQUEST_UPDATED": "Every event of every request, as `myRequestUpdates` sends "
        "them (payload type `request.updated`, or `request.finished` for the last one).",
        "REQUEST_FINISHED": "Only a request's final event: COMPLETED, FAILED or "
        "CANCELLED (payload type `request.finished`).",
    },
)


@described(
    description="Where a webhook delivery stands.",
    values={
        "PENDING": "Not delivered yet: its next attempt is at `nextAttemptAt`.",
        "DELIVERED": "The receiver answered 2xx.",
        "FAILED": "Every attempt of the retry schedule failed; `redeliverWebhookDelivery` "
        "tries again.",
    },
)
class WebhookDeliveryStatus(Enum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


@strawberry.type(description="A URL that receives the viewer's request events, signed.")
class Webhook:
    row: strawberry.Private[WebhookEndpoint]
    shown_secret: strawberry.Private[str | None] = None

    @strawberry.field(description="Global id of the webhook.")
    def id(self) -> strawberry.ID:
        return global_id("Webhook", self.row.id)

    @strawberry.field(description="Where deliveries are POSTed.")
    def url(self) -> str:
        return self.row.url

    @strawberry.field(description="Which events it receives.")
    def events(self) -> list[WebhookEventType]:  # type: ignore[valid-type]
        return [WebhookEvent(e) for e in self.row.events.split(",")]

    @strawberry.field(
        description="The signing secret (`whsec_...`): shown only by `createWebhook` and "
        "`rotateWebhookSecret`, null elsewhere."
    )
    def secret(self) -> str | None:
        return self.shown_secret

    @strawberry.field(description="When it was registered (UTC).")
    def created_at(self) -> datetime:
        return self.row.created_at


@strawberry.type(description="A page of webhooks.")
class WebhookConnection:
    edges: list[Edge[Webhook]] = strawberry.field(description="This page's items.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")


@strawberry.type(description="One event owed to one webhook URL, and how sending it went.")
class WebhookDeliveryType:
    row: strawberry.Private[WebhookDelivery]

    @strawberry.field(
        description="The delivery's id: the `webhook-id` header, the same on every attempt."
    )
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.row.id)

    @strawberry.field(
        description="Global id of its webhook; null for a request's own `webhookUrl`."
    )
    def webhook_id(self) -> strawberry.ID | None:
        return global_id_or_none("Webhook", self.row.endpoint_id)

    @strawberry.field(description="Global id of the request the event is about.")
    def request_id(self) -> strawberry.ID:
        return global_id("GenerationRequest", self.row.request_id)

    @strawberry.field(description="The event's `seq` within its request.")
    def seq(self) -> int:
        return self.row.seq

    @strawberry.field(description="The event's `userSeq`.")
    def user_seq(self) -> int:
        return self.row.user_seq

    @strawberry.field(description="The payload's `type`: request.updated or request.finished.")
    def event_type(self) -> str:
        return self.row.event_type

    @strawberry.field(description="Where it is sent.")
    def url(self) -> str:
        return self.row.url

    @strawberry.field(description="The exact JSON body sent.")
    def payload(self) -> str:
        return self.row.body

    @strawberry.field(description="PENDING, DELIVERED or FAILED.")
    def status(self) -> WebhookDeliveryStatus:
        return WebhookDeliveryStatus(self.row.status)

    @strawberry.field(description="Attempts made so far.")
    def attempts(self) -> int:
        return self.row.attempts

    @strawberry.field(description="When a PENDING delivery is tried next (UTC).")
    def next_attempt_at(self) -> datetime | None:
        return self.row.next_attempt_at if self.row.status == "PENDING" else None

    @strawberry.field(description="The HTTP status of the last attempt, if it got one.")
    def last_status_code(self) -> int | None:
        return self.row.last_status_code

    @strawberry.field(description="Why the last attempt failed, if it did.")
    def last_error(self) -> str | None:
        return self.row.last_error

    @strawberry.field(description="When it entered the outbox (UTC).")
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field(description="When the receiver accepted it (UTC).")
    def delivered_at(self) -> datetime | None:
        return self.row.delivered_at


@strawberry.type(description="A page of webhook deliveries, newest first.")
class WebhookDeliveryConnection:
    edges: list[Edge[WebhookDeliveryType]] = strawberry.field(description="This page's items.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")


@strawberry.input(description="A webhook to register.")
class CreateWebhookInput:
    url: str = strawberry.field(
        description="An https URL (http outside production) that resolves to public "
        "addresses only; BAD_USER_INPUT otherwise."
    )
    events: list[WebhookEventType] = strawberry.field(  # type: ignore[valid-type]
        default_factory=lambda: [WebhookEvent.REQUEST_UPDATED],
        description="Which events it receives; every event when omitted.",
    )
    secret: str | None = strawberry.field(
        default=None,
        description="Your own signing secret (`whsec_` + base64 of 24-64 bytes); one is "
        "made when omitted.",
    )
