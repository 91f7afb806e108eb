"""GraphQL types of credits: the viewer's ledger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import Enum

import strawberry

from app.credits import service as credits
from app.graphql.context import Info
from app.graphql.enums import described
from app.graphql.pagination import Edge, PageInfo
from app.graphql.relay import Node, global_id, global_id_or_none
from app.tables import CreditEntry


@described(
    description="Which way an entry moved the balance.",
    values={
        "GRANT": "Credits given: at sign-up, by an operator.",
        "DEBIT": "Credits paid for work about to be done.",
        "REFUND": "Credits given back for work paid for and not delivered.",
    },
)
class CreditEntryKind(Enum):
    GRANT = "GRANT"
    DEBIT = "DEBIT"
    REFUND = "REFUND"


@described(
    description="What an entry paid for or gave credits for.",
    values={
        "INITIAL": "The grant every new user starts with.",
        "IMAGES": "A request's candidate images.",
        "MODEL": "A request's 3D model.",
        "ADJUSTMENT": "An operator's change of the balance (`lumi user credits`).",
    },
)
class CreditReason(Enum):
    INITIAL = "INITIAL"
    IMAGES = "IMAGES"
    MODEL = "MODEL"
    ADJUSTMENT = "ADJUSTMENT"


@strawberry.type(name="CreditEntry", description="One change of the viewer's credit balance.")
class CreditEntryType(Node):
    row: strawberry.Private[CreditEntry]

    @classmethod
    async def resolve_nodes(cls, info: Info, ids: Sequence[str]) -> list[CreditEntryType | None]:
        """The viewer's own entries only."""
        viewer = await info.context.viewer()
        if viewer is None:
            return [None] * len(ids)
        async with info.context.read() as session:
            rows = {row.id: row for row in await credits.entries_of(session, viewer.id, ids)}
        return [cls(row=rows[i]) if i in rows else None for i in ids]

    id: strawberry.ID = strawberry.field(
        resolver=lambda root: global_id("CreditEntry", root.row.id),
        description="Global id of the entry.",
    )

    @strawberry.field(description="GRANT, DEBIT or REFUND.")
    def kind(self) -> CreditEntryKind:
        return CreditEntryKind(self.row.kind)

    @strawberry.field(description="What it paid for or gave back.")
    def reason(self) -> CreditReason:
        return CreditReason(self.row.reason)

    @strawberry.field(description="Credits added (positive) or taken (negative).")
    def amount(self) -> int:
        return self.row.amount

    @strawberry.field(description="How many images or models the amount is for.")
    def quantity(self) -> int:
        return self.row.quantity

    @strawberry.field(description="The balance right after this entry.")
    def balance_after(self) -> int:
        return self.row.balance_after

    @strawberry.field(
        description="Global id of the request it concerns, if any (it may have been deleted "
        "since: the ledger keeps its entries)."
    )
    def request_id(self) -> strawberry.ID | None:
        return global_id_or_none("GenerationRequest", self.row.request_id)

    @strawberry.field(description="When it happened (UTC).")
    def created_at(self) -> datetime:
        return self.row.created_at


@strawberry.type(name="CreditEntryConnection", description="A page of ledger entries.")
class CreditEntryConnection:
    edges: list[Edge[CreditEntryType]] = strawberry.field(description="This page's entries.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
    owner_id: strawberry.Private[str]

    @strawberry.field(description="How many entries the whole ledger holds, all pages.")
    async def total_count(self, info: Info) -> int:
        async with info.context.read() as session:
            return await credits.ledger_count(session, self.owner_id)
