from __future__ import annotations

import strawberry

from app.auth import Viewer
from app.credits import service as credits
from app.credits.types import CreditEntryConnection, CreditEntryType
from app.graphql.context import Info
from app.graphql.pagination import check_first, decode_cursor, encode_cursor, paginate
from app.users import repository


@strawberry.type(name="User", description="A user of the gateway.")
class UserType:
    id: strawberry.ID = strawberry.field(description="Stable id of the user.")
    display_name: str = strawberry.field(description="Name shown to other users.")

    @classmethod
    def from_viewer(cls, viewer: Viewer) -> UserType:
        return cls(id=strawberry.ID(viewer.id), display_name=viewer.display_name)


@strawberry.type(name="Me", description="The viewer: who they are and their credits.")
class MeType:
    viewer: strawberry.Private[Viewer]

    @strawberry.field(description="Stable id of the user.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.viewer.id)

    @strawberry.field(description="Name shown to other users.")
    def display_name(self) -> str:
        return self.viewer.display_name

    @strawberry.field(description="The viewer's role (`user` unless an operator set another).")
    def role(self) -> str:
        return self.viewer.role

    @strawberry.field(description="Credits available now.")
    async def credits(self, info: Info) -> int:
        async with info.context.read() as session:
            user = await repository.get(session, self.viewer.id)
        return user.credits if user else 0

    @strawberry.field(description="Every change of the balance, newest first.")
    async def ledger(
        self, info: Info, first: int = 20, after: str | None = None
    ) -> CreditEntryConnection:
        limit = check_first(first)
        cursor = decode_cursor(after)
        position = (cursor.value, cursor.row_id) if cursor else None
        async with info.context.read() as session:
            rows = await credits.ledger_page(
                session, self.viewer.id, limit=limit + 1, after=position
            )
        edges, page = paginate(
            list(rows),
            limit=limit,
            after=after,
            cursor_of=lambda r: encode_cursor(r.created_at, r.id),
            node_of=lambda r: CreditEntryType(row=r),
        )
        return CreditEntryConnection(edges=edges, page_info=page)


@strawberry.input(description="Changes to the viewer's profile.")
class UpdateMeInput:
    display_name: str = strawberry.field(
        description=(
            "The name other users see (as a model's owner, in the gallery): 1-100 "
            "characters of text; surrounding spaces are trimmed."
        )
    )
