"""Relay-style connections: opaque cursors over (sort value, id), or over a position in a
ranking snapshot."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Generic, TypeVar

import strawberry

from app.errors import BadUserInput

MAX_PAGE = 100
DEFAULT_PAGE = 20

# The arguments of every connection.
First = Annotated[
    int | None,
    strawberry.argument(
        description=f"How many items the page holds: 1-{MAX_PAGE}; {DEFAULT_PAGE} when "
        "omitted or null."
    ),
]
After = Annotated[
    str | None,
    strawberry.argument(
        description="Where the page starts: the `endCursor` of the page before it; omitted "
        "or null, the first page."
    ),
]

NodeT = TypeVar("NodeT")
RowT = TypeVar("RowT")


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


def encode_cursor(value: datetime | int, row_id: str, as_of: datetime | None = None) -> str:
    """An opaque cursor over (sort value, id), plus the snapshot time of a walk if any."""
    parts: list[object] = [value.isoformat() if isinstance(value, datetime) else value, row_id]
    if as_of is not None:
        parts.append(as_of.isoformat())
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


@dataclass(frozen=True, slots=True)
class Cursor:
    value: datetime | int
    row_id: str
    as_of: datetime | None


def decode_cursor(cursor: str | None, *, timed: bool = True) -> Cursor | None:
    """Reads a cursor; `timed` says whether its sort value is a datetime or an integer."""
    if cursor is None:
        return None
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        value = _aware(parts[0]) if timed else int(parts[0])
        row_id = str(parts[1])
        as_of = _aware(parts[2]) if len(parts) > 2 else None
    except (ValueError, TypeError, IndexError, KeyError, binascii.Error) as exc:
        raise BadUserInput("after is not a valid cursor", field="after") from exc
    return Cursor(value, row_id, as_of)


@dataclass(frozen=True, slots=True)
class RankCursor:
    """A place in a walk through a ranked list: the sort, the snapshot's version, and
    the position of the last item seen."""

    sort: str
    version: int
    position: int


_RANKED = "ranked"  # the first part of a rank cursor, which no other cursor has


def encode_rank_cursor(sort: str, version: int, position: int) -> str:
    parts = [_RANKED, sort, version, position]
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


def decode_rank_cursor(cursor: str | None, sort: str) -> RankCursor | None:
    """Reads a rank cursor of `sort`; any other cursor is BAD_USER_INPUT."""
    if cursor is None:
        return None
    try:
        kind, cursor_sort, version, position = json.loads(base64.urlsafe_b64decode(cursor))
        if kind != _RANKED or not all(isinstance(v, int) for v in (version, position)):
            raise ValueError("not a rank cursor")
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadUserInput("after is not a valid cursor", field="after") from exc
    if cursor_sort != sort:
        raise BadUserInput(f"after is a cursor of another sort than {sort}", field="after")
    return RankCursor(sort, version, position)


def _aware(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise ValueError("cursor time without offset")
    return moment


def check_first(first: int | None) -> int:
    """The page size `first` asks for; `DEFAULT_PAGE` when it asks for none."""
    if first is None:
        return DEFAULT_PAGE
    if not 1 <= first <= MAX_PAGE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE}", field="first")
    return first


def paginate(
    rows: Sequence[RowT],
    *,
    limit: int,
    after: str | None,
    cursor_of: Callable[[RowT], str],
    node_of: Callable[[RowT], NodeT],
) -> tuple[list[Edge[NodeT]], PageInfo]:
    """Edges and page info from `limit + 1` fetched rows (the extra one says "more")."""
    edges = [Edge(cursor=cursor_of(row), node=node_of(row)) for row in rows[:limit]]
    info = PageInfo(
        has_next_page=len(rows) > limit,
        has_previous_page=after is not None,
        start_cursor=edges[0].cursor if edges else None,
        end_cursor=edges[-1].cursor if edges else None,
    )
    return edges, info
