"""When the gallery's counter sorts are ranked again.

POPULAR, MOST_LIKED, MOST_DOWNLOADED and MOST_VIEWED change order whenever a count
changes, so a walk through their pages by live counts would show a model twice and
skip another. Instead each walk reads one ranking snapshot (`app/models/snapshots.py`):
its first page takes the newest, building a new one when the newest is older than
`every`, and its cursors name that version. Versions stay for `keep` after a newer one
replaced them, so a walk has at least that long; older ones are purged when a new one
is built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.db import Database
from app.models import snapshots
from app.models.changes import PublicChange, PublicChanges
from app.tables import GalleryRanking, utcnow


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    created_at: datetime

    @classmethod
    def of(cls, row: GalleryRanking) -> Snapshot:
        return cls(row.version, row.created_at)


class Rankings:
    """This process's knowledge of the newest snapshot, so a first page costs no query
    to find it while it is fresh, and one build at a time from this process."""

    def __init__(
        self, *, every: float, keep: float, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.every = timedelta(seconds=every)
        self.keep = timedelta(seconds=keep)
        self.clock = clock
        self._newest: Snapshot | None = None
        self._building = asyncio.Lock()

    async def newest(self, db: Database, changes: PublicChanges) -> Snapshot:
        """The snapshot a new walk reads: the newest, or a new one if that is stale.
        A new one is announced to `changes` (the counter sorts' pages are new)."""
        known = self._newest
        if known is not None and self._fresh(known, self.clock()):
            return known
        async with self._building:  # the other readers here wait for this one's build
            now = self.clock()
            if self._newest is not None and self._fresh(self._newest, now):
                return self._newest
            snapshot, built = await self._refresh(db, now)
            self._newest = snapshot
        if built:  # new orders for the counter sorts' pages; LATEST's stay as they were
            await changes.announce(PublicChange(orders=tuple(snapshots.RANKED)))
        return snapshot

    def _fresh(self, snapshot: Snapshot, now: datetime) -> bool:
        return now - snapshot.created_at < self.every

    async def _refresh(self, db: Database, now: datetime) -> tuple[Snapshot, bool]:
        """The newest snapshot if another process built a fresh one, else a new one."""
        async with db.write() as session:
            newest = await snapshots.newest(session)
            if newest is not None and self._fresh(Snapshot.of(newest), now):
                return Snapshot.of(newest), False
            version = (newest.version if newest is not None else 0) + 1
            if not await snapshots.claim(session, version, now):
                winner = await snapshots.newest(session)
                assert winner is not None, "a version was claimed, so one exists"
                return Snapshot.of(winner), False
            await snapshots.rank(session, version)
            await snapshots.purge(session, superseded_before=now - self.keep)
        return Snapshot(version, now), True
