"""The viewer's own profile: who they are, and the name everyone else sees."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.graphql.context import Info
from app.graphql.permissions import IsAuthenticated
from app.models.changes import PublicChange
from app.users import service
from app.users.types import MeType, UpdateMeInput


@strawberry.type
class UserQueries:
    @strawberry.field(description="The viewer.", permission_classes=[IsAuthenticated])
    async def me(self, info: Info) -> MeType:
        return MeType(viewer=await info.context.require_viewer())


@strawberry.type
class UserMutations:
    @strawberry.mutation(
        description=(
            "Set the viewer's display name, the name other users see. A new user is named "
            "by their token's `name` claim, or else neutrally; never by its subject."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def update_me(
        self,
        info: Info,
        input: Annotated[UpdateMeInput, strawberry.argument(description="The changes.")],
    ) -> MeType:
        viewer = await info.context.require_viewer()
        async with info.context.unit() as unit:
            renamed = await service.rename(unit.session, viewer, input.display_name)
            # Shown as the owner of their public models: cached answers must follow.
            unit.public_changes.append(PublicChange(owner_ids=(viewer.id,)))
        return MeType(viewer=renamed)
