"""Relay-style connections: opaque cursors over (created_at, id)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Generic, TypeVar

import strawberry

from app.errors import BadUserInput

MAX_PAGE = 100

NodeT = TypeVar("NodeT")


@strawberry.type(description="Where a page sits in the whole list.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More items follow this page.")
    has_previous_page: bool = strawberry.field(description="Items precede this page.")
    start_cursor: str | None = strawberry.field(description="Cursor of the first item.")
    end_cursor: str | None = strawberry.field(description="Cursor to pass as `after`.")


@strawberry.type(description="An item and the cursor that points at it.")
class Edge(Generic[NodeT]):
    cursor: str = strawberry.field(description="Opaque position of this item.")
    node: NodeT = strawberry.field(description="The item.")


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    try:
        created, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        moment = datetime.fromisoformat(created)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadUserInput("after is not a valid cursor", field="after") from exc
    if not row_id or moment.utcoffset() is None:
        raise BadUserInput("after is not a valid cursor", field="after")
    return moment, row_id


def check_first(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE}", field="first")
    return first
