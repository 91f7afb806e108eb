"""GraphQL types of users: the viewer (`Me`) and the public side of anyone (`PublicProfile`)."""

from __future__ import annotations

from collections.abc import Sequence

import strawberry

from app.auth import Viewer
from app.credits import service as credits
from app.credits.types import CreditEntryConnection, CreditEntryType
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
from app.graphql.relay import Node, global_id
from app.users import repository
from app.users.loaders import UserLoaders


@strawberry.type(description="What anyone may know of a user: the name they show.")
class PublicProfile(Node):
    id: strawberry.ID = strawberry.field(description="Global id of the profile.")
    display_name: str = strawberry.field(description="Name shown to other users.")

    @classmethod
    def of(cls, user_id: str, display_name: str) -> PublicProfile:
        return cls(id=global_id("PublicProfile", user_id), display_name=display_name)

    @classmethod
    async def resolve_nodes(cls, info: Info, ids: Sequence[str]) -> list[PublicProfile | None]:
        """Anyone's: a display name is public (the gallery shows it as a model's owner)."""
        users = await UserLoaders.of(info).user_by_id.load_many(ids)
        return [cls.of(user.id, user.display_name) if user else None for user in users]


@strawberry.type(name="Me", description="The viewer: who they are and their credits.")
class MeType(Node):
    viewer: strawberry.Private[Viewer]

    @classmethod
    async def resolve_nodes(cls, info: Info, ids: Sequence[str]) -> list[MeType | None]:
        """The viewer's own only: another user's `Me` is as good as absent."""
        viewer = await info.context.viewer()
        return [cls(viewer=viewer) if viewer and i == viewer.id else None for i in ids]

    id: strawberry.ID = strawberry.field(
        resolver=lambda root: global_id("Me", root.viewer.id),
        description="Global id of the viewer's own view of themselves (`profile` is how "
        "others see them).",
    )

    @strawberry.field(description="Name shown to other users.")
    def display_name(self) -> str:
        return self.viewer.display_name

    @strawberry.field(
        description="The viewer as other users see them: compare `Model.owner.id` with "
        "its `id` to tell the viewer's own models."
    )
    def profile(self) -> PublicProfile:
        return PublicProfile.of(self.viewer.id, self.viewer.display_name)

    @strawberry.field(
        description="The viewer's role: `user` unless an operator set another (`priority` "
        "and `admin` may create HIGH priority requests by default). A string, not an enum: "
        "operators name roles (`lumi user role`, `LUMI_HIGH_PRIORITY_ROLES`)."
    )
    def role(self) -> str:
        return self.viewer.role

    @strawberry.field(description="Credits available now.")
    async def credits(self, info: Info) -> int:
        async with info.context.read() as session:
            user = await repository.get(session, self.viewer.id)
        return user.credits if user else 0

    @strawberry.field(description="Every change of the balance, newest first.")
    async def ledger(
        self, info: Info, first: First = DEFAULT_PAGE, after: After = None
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
        return CreditEntryConnection(edges=edges, page_info=page, owner_id=self.viewer.id)


@strawberry.input(description="Changes to the viewer's profile.")
class UpdateMeInput:
    display_name: str = strawberry.field(
        description=(
            "The name other users see (as a model's owner, in the gallery): 1-100 "
            "characters of text; surrounding spaces are trimmed."
        )
    )
