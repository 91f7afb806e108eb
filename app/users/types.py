from __future__ import annotations

import strawberry

from app.auth import Viewer


@strawberry.type(name="User", description="A user of the gateway.")
class UserType:
    id: strawberry.ID = strawberry.field(description="Stable id of the user.")
    display_name: str = strawberry.field(description="Name shown to other users.")

    @classmethod
    def from_viewer(cls, viewer: Viewer) -> UserType:
        return cls(id=strawberry.ID(viewer.id), display_name=viewer.display_name)
