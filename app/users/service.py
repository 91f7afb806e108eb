"""Users are created on first sight of a verified token."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Claims, Viewer
from app.tables import CreditEntry, User
from app.users import repository


def to_viewer(user: repository.Identity) -> Viewer:
    return Viewer(
        id=user.id, external_id=user.external_id, display_name=user.display_name, role=user.role
    )


async def viewer_for(session: AsyncSession, claims: Claims, *, initial_credits: int = 0) -> Viewer:
    """The user behind `claims`, created if this is the first time we see them.

    A new user starts with `initial_credits`, recorded as the first ledger entry.
    """
    user = await repository.get_by_external_id(session, claims.subject)
    if user is None:
        candidate = User(
            external_id=claims.subject, display_name=claims.name, credits=initial_credits
        )
        grant = CreditEntry(
            user_id=candidate.id,
            kind="GRANT",
            reason="INITIAL",
            amount=initial_credits,
            balance_after=initial_credits,
            key=f"grant:initial:{candidate.id}",
        )
        if await repository.insert_if_absent(session, candidate, grant):
            return to_viewer(candidate)
        user = await repository.get_by_external_id(session, claims.subject)
        assert user is not None, "a concurrent insert of this user must be visible now"
    return to_viewer(user)
