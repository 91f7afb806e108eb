"""Users are created on first sight of a verified token."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Claims, Viewer
from app.tables import User
from app.users import repository


def to_viewer(user: User) -> Viewer:
    return Viewer(
        id=user.id, external_id=user.external_id, display_name=user.display_name, role=user.role
    )


async def viewer_for(session: AsyncSession, claims: Claims) -> Viewer:
    """The user behind `claims`, created if this is the first time we see them."""
    user = await repository.get_by_external_id(session, claims.subject)
    if user is None:
        candidate = User(external_id=claims.subject, display_name=claims.name)
        if await repository.insert_if_absent(session, candidate):
            return to_viewer(candidate)
        user = await repository.get_by_external_id(session, claims.subject)
        assert user is not None, "a concurrent insert of this user must be visible now"
    return to_viewer(user)
