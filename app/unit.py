"""A unit of work: one write transaction plus what must happen only after it commits.

Services append events to publish, stage messages to send and the storage keys of
files whose rows they deleted; once the commit has succeeded, the unit publishes,
sends and deletes them. A failure inside the block rolls everything back and touches
nothing (a rolled-back delete keeps its files).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from app.bus import EventBus, request_channel, user_channel
from app.db import Database
from app.metrics import EVENTS_PUBLISHED
from app.models.changes import PublicChange, PublicChanges
from app.queue import JobQueue, StageMessage
from app.requests import repository as requests
from app.tables import RequestEvent
from app.users import repository as users
from providers.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class Unit:
    session: AsyncSession
    events: list[RequestEvent] = field(default_factory=list)
    messages: list[StageMessage] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)  # storage keys to delete
    # What the transaction changes of the public library (and of a viewer's own likes
    # and favorites), announced after commit.
    public_changes: list[PublicChange] = field(default_factory=list)
    _stored: int = 0  # events[:_stored] are in the table

    async def store_events(self) -> None:
        """Writes the events appended since the last call: each user's take the next
        numbers of that user's sequence (one statement per user, which locks the user's
        row until commit), then one INSERT for them all.

        Runs just before the commit (`unit_of_work`), so a user's row is locked for the
        last statements of a transaction only: a user's stages do their work side by
        side and take turns only to number their events. Call it earlier only to have
        the rows in the table before the end (to delete them with their request)."""
        pending = self.events[self._stored :]
        if not pending:
            return
        by_user: dict[str, list[RequestEvent]] = {}
        for event in pending:
            by_user.setdefault(event.user_id, []).append(event)
        for user_id in sorted(by_user):  # one order, should a unit span several users
            events = by_user[user_id]
            last = await users.take_event_seqs(self.session, user_id, len(events))
            for number, event in enumerate(events, start=last - len(events) + 1):
                event.user_seq = number
        await requests.insert_events(self.session, pending)
        self._stored = len(self.events)


def event_payload(event: RequestEvent) -> dict[str, object]:
    payload = event.model_dump(mode="json")
    return payload


async def publish_events(bus: EventBus, events: list[RequestEvent]) -> None:
    for event in events:
        payload = event_payload(event)
        await bus.publish(request_channel(event.request_id), payload)
        await bus.publish(user_channel(event.user_id), payload)
        EVENTS_PUBLISHED.inc()


@asynccontextmanager
async def unit_of_work(
    db: Database,
    bus: EventBus,
    queue: JobQueue,
    storage: Storage,
    changes: PublicChanges | None = None,
) -> AsyncIterator[Unit]:
    async with db.write() as session:
        unit = Unit(session)
        yield unit
        await unit.store_events()
    if changes is not None:  # first: cached answers go stale from this moment
        for change in unit.public_changes:
            await changes.announce(change)
    await publish_events(bus, unit.events)
    if unit.messages:
        # Off the event loop: the Redis broker's enqueue is a blocking call.
        await asyncio.to_thread(send_messages, queue, unit.messages)
    await delete_files(storage, unit.discarded)


async def delete_files(storage: Storage, keys: list[str]) -> None:
    """Deletes each file; one that cannot be deleted (storage down) is an orphan, left to
    `lumi maintenance orphans`: its rows are gone, and the delete that happened must not
    be reported as failed."""
    for key in keys:
        try:
            await storage.delete(key)
        except Exception:
            log.warning("could not delete %s; it is an orphan now", key, exc_info=True)


def send_messages(queue: JobQueue, messages: list[StageMessage]) -> None:
    """Sends each message; one that cannot be sent is left to the sweeper, which finds
    its job waiting with no message and sends it again. The commit already happened, so
    failing here would only tell the caller a lie."""
    for message in messages:
        try:
            queue.send(message)
        except Exception:
            log.warning("could not send %s; the sweeper will send it", message.stage, exc_info=True)
