"""Changes to the public library, announced to whatever keeps views derived from it.

Whatever changes what an anonymous visitor could read (a model published, unpublished,
renamed or deleted; a like, favorite or download count; an owner's display name; a new
ranking of the gallery), or a viewer's own likes and favorites, announces it here once
its transaction has committed (a unit of work does it for what its services record in
`Unit.public_changes`), and the listeners (the response cache) drop what the change
makes stale: in this process at once, and in every other process that shares the bus
through the `public-changes` channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.bus import EventBus

if TYPE_CHECKING:
    from app.models.viewer_flags import FlagVersions

log = logging.getLogger(__name__)

CHANNEL = "public-changes"


@dataclass(frozen=True, slots=True)
class PublicChange:
    """What changed: the models whose public fields did (their ids); whether the
    membership or order of public listings did (`listings`: a publish, an unpublish, a
    delete, a new ranking snapshot); which gallery orders a counter may have moved a
    model in (`orders`, `ModelSort` names); the users whose public profile changed
    (`owner_ids`); the users whose own likes or favorites changed (`viewer_ids`, for
    any model, public or not); or, `everything`, anything at all (changes may have been
    missed)."""

    model_ids: tuple[str, ...] = ()
    listings: bool = False
    orders: tuple[str, ...] = ()
    owner_ids: tuple[str, ...] = ()
    viewer_ids: tuple[str, ...] = ()
    everything: bool = False

    def payload(self, origin: str) -> dict[str, Any]:
        return {
            "origin": origin,
            "models": list(self.model_ids),
            "listings": self.listings,
            "orders": list(self.orders),
            "owners": list(self.owner_ids),
            "viewers": list(self.viewer_ids),
        }

    @classmethod
    def of(cls, payload: dict[str, Any]) -> PublicChange:
        return cls(
            model_ids=tuple(payload.get("models") or ()),
            listings=bool(payload.get("listings")),
            orders=tuple(payload.get("orders") or ()),
            owner_ids=tuple(payload.get("owners") or ()),
            viewer_ids=tuple(payload.get("viewers") or ()),
        )


EVERYTHING = PublicChange(everything=True)

Listener = Callable[[PublicChange], Awaitable[None]]


class PublicChanges:
    """This process's listeners: `announce` tells each of them, then every other process
    on the bus, whose follower (`start`) tells theirs. With `versions` (processes that
    share a Redis bus), a change of viewers' flags bumps their versions first, so a
    process the bus has not reached yet knows them stale all the same."""

    def __init__(self, bus: EventBus | None = None, versions: FlagVersions | None = None) -> None:
        self._bus = bus
        self.versions = versions
        self._listeners: list[Listener] = []
        self._origin = uuid.uuid4().hex  # this process's own announcements come back too
        self._follower: asyncio.Task[None] | None = None
        self._following = False

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def announce(self, change: PublicChange) -> None:
        if change.viewer_ids and self.versions is not None:
            await self.versions.bump(change.viewer_ids)
        await self._tell(change)
        if self._bus is not None:
            await self._bus.publish(CHANNEL, change.payload(self._origin))

    @property
    def healthy(self) -> bool:
        """Whether every process's announcements reach this one's listeners now: the
        follower is subscribed and the bus connected. Without a bus only this process
        changes anything, and it tells its listeners itself."""
        if self._bus is None:
            return True
        return self._following and self._bus.connected

    def start(self) -> None:
        """Follows the other processes' announcements (from the loop that serves)."""
        if self._bus is not None and (self._follower is None or self._follower.done()):
            self._follower = asyncio.create_task(self._follow(), name="public-changes")

    async def _follow(self) -> None:
        assert self._bus is not None
        try:
            async with self._bus.subscribe([CHANNEL]) as subscription:
                # Whatever was kept before the subscription may have missed changes.
                await self._tell(EVERYTHING)
                self._following = True
                while True:
                    payload = await subscription.get(None)
                    if not payload:  # RESYNC: the bus dropped or regained its connection
                        await self._tell(EVERYTHING)
                    elif payload.get("origin") != self._origin:
                        await self._tell(PublicChange.of(payload))
        finally:
            self._following = False

    async def _tell(self, change: PublicChange) -> None:
        for listener in self._listeners:
            try:
                await listener(change)
            except Exception:  # a listener's failure must not fail the committed change
                log.exception("a listener of public changes failed")

    async def aclose(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
