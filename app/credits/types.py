"""GraphQL types of credits: the viewer's ledger."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from app.graphql.pagination import Edge, PageInfo
from app.tables import CreditEntry


@strawberry.enum(description="What moved the balance.")
class CreditEntryKind(Enum):
    GRANT = "GRANT"
    DEBIT = "DEBIT"
    REFUND = "REFUND"


@strawberry.type(name="CreditEntry", description="One change of the viewer's credit balance.")
class CreditEntryType:
    row: strawberry.Private[CreditEntry]

    @strawberry.field(description="Stable id of the entry.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.row.id)

    @strawberry.field(description="GRANT, DEBIT or REFUND.")
    def kind(self) -> CreditEntryKind:
        return CreditEntryKind(self.row.kind)

    @strawberry.field(description="What it paid for or gave back: IMAGES, MODEL, INITIAL...")
    def reason(self) -> str:
        return self.row.reason

    @strawberry.field(description="Credits added (positive) or taken (negative).")
    def amount(self) -> int:
        return self.row.amount

    @strawberry.field(description="How many images or models the amount is for.")
    def quantity(self) -> int:
        return self.row.quantity

    @strawberry.field(description="The balance right after this entry.")
    def balance_after(self) -> int:
        return self.row.balance_after

    @strawberry.field(description="The request it concerns, if any.")
    def request_id(self) -> strawberry.ID | None:
        return strawberry.ID(self.row.request_id) if self.row.request_id else None

    @strawberry.field(description="When it happened (UTC).")
    def created_at(self) -> datetime:
        return self.row.created_at


@strawberry.type(name="CreditEntryConnection", description="A page of ledger entries.")
class CreditEntryConnection:
    edges: list[Edge[CreditEntryType]] = strawberry.field(description="This page's entries.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
