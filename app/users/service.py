"""Users are created on first sight of a verified token; the name others see is theirs.

A token's subject says who someone is to their identity provider, and it may be an
e-mail address: it is never shown to anyone. A new user is named by the token's `name`
claim, or else neutrally, and may rename themselves (`updateMe`).
"""

from __future__ import annotations

import contextlib
import hashlib
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Claims, Viewer
from app.errors import BadUserInput
from app.tables import CreditEntry, User, new_id
from app.users import repository

MAX_DISPLAY_NAME = 100
# Control characters, and lone surrogates (a JSON string may carry one; no UTF-8 column
# can store it).
_NOT_TEXT = frozenset({"Cc", "Cs"})


def to_viewer(user: repository.Identity) -> Viewer:
    return Viewer(
        id=user.id, external_id=user.external_id, display_name=user.display_name, role=user.role
    )


def default_display_name(user_id: str) -> str:
    """A name that tells nothing of the token's subject, the same for a user every time.

    From a hash of the id rather than the id itself: an id begins with a clock, so users
    who joined within hours of each other share its first digits."""
    return "Creator " + hashlib.sha256(user_id.encode()).hexdigest()[:6]


def clean_display_name(name: str) -> str:
    """`name` trimmed, each run of whitespace inside made one space; `BadUserInput` unless
    that leaves 1-100 characters of text."""
    cleaned = " ".join(name.split())
    if not cleaned:
        raise BadUserInput("displayName must not be empty", field="displayName")
    if len(cleaned) > MAX_DISPLAY_NAME:
        raise BadUserInput(
            f"displayName must be at most {MAX_DISPLAY_NAME} characters", field="displayName"
        )
    if any(unicodedata.category(c) in _NOT_TEXT for c in cleaned):
        raise BadUserInput(
            "displayName must be valid Unicode text without control characters",
            field="displayName",
        )
    return cleaned


def _first_name(claims: Claims, user_id: str) -> str:
    """The token's name when it has a usable one; a neutral name otherwise (a bad claim
    must not keep its user out)."""
    if claims.name:
        with contextlib.suppress(BadUserInput):
            return clean_display_name(claims.name)
    return default_display_name(user_id)


async def viewer_for(session: AsyncSession, claims: Claims, *, initial_credits: int = 0) -> Viewer:
    """The user behind `claims`, created if this is the first time we see them.

    A new user starts with `initial_credits`, recorded as the first ledger entry. Later
    tokens do not rename a user: the name is the user's own from then on.
    """
    user = await repository.get_by_external_id(session, claims.subject)
    if user is None:
        user_id = new_id()
        candidate = User(
            id=user_id,
            external_id=claims.subject,
            display_name=_first_name(claims, user_id),
            credits=initial_credits,
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


Sessions = Callable[[], AbstractAsyncContextManager[AsyncSession]]

# Token subjects whose user id a process remembers (about 200 bytes each).
REMEMBERED_SUBJECTS = 100_000


class Viewers:
    """Claims → the viewer they name, the user created on first sight with
    `initial_credits`. Handed to each operation's context through `Deps`.

    Also remembers the user id of the last `remembered` token subjects it resolved: a
    subject names one user for good (a user is created once for it, and neither its
    subject nor its id ever changes), so what needs only the viewer's id (the response
    cache, a like) needs no query for it. Names and roles do change: `of` reads them
    afresh every time."""

    def __init__(self, initial_credits: int = 0, remembered: int = REMEMBERED_SUBJECTS) -> None:
        self.initial_credits = initial_credits
        self._remembered = remembered
        self._ids: OrderedDict[str, str] = OrderedDict()

    async def of(self, claims: Claims, read: Sessions, write: Sessions) -> Viewer:
        """Reads in `read` (the operation's shared session) for the common case, a known
        user; creates the user in `write` otherwise (committed when this returns)."""
        async with read() as session:
            user = await repository.identity(session, claims.subject)
        if user is not None:
            viewer = to_viewer(user)
        else:
            async with write() as session:
                viewer = await viewer_for(session, claims, initial_credits=self.initial_credits)
        self._remember(claims.subject, viewer.id)
        return viewer

    def known_id(self, subject: str) -> str | None:
        """The user id of `subject`, when this process has resolved it before."""
        user_id = self._ids.get(subject)
        if user_id is not None:
            self._ids.move_to_end(subject)
        return user_id

    def _remember(self, subject: str, user_id: str) -> None:
        self._ids[subject] = user_id
        self._ids.move_to_end(subject)
        while len(self._ids) > self._remembered:
            self._ids.popitem(last=False)


async def rename(session: AsyncSession, viewer: Viewer, display_name: str) -> Viewer:
    """The viewer under their new name. Every operation reads the name afresh from the
    users table (the auth caches keep only who a token is), so it shows at once."""
    name = clean_display_name(display_name)
    await repository.set_display_name(session, viewer.id, name)
    return replace(viewer, display_name=name)
