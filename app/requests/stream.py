"""Every event, once, in order: the subscription algorithm of DESIGN §3.

Subscribe to the bus first, replay what the table holds after the client's cursor,
then stream live messages, dropping any already sent. A gap in the numbering, the bus
dropping or regaining its connection, or a quiet spell sends the stream back to the
table, so a lost publish costs only latency. Quiet spells are long while the bus is
connected (a re-read is then only a safety net, and thousands of idle subscriptions
must not poll the database) and short while it is not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.bus import EventBus
from app.db import Database
from app.tables import RequestEvent
from app.tables.base import UtcDateTime

Fetch = Callable[[AsyncSession, int], Awaitable[list[RequestEvent]]]
BATCH = 500
OUTAGE_RECHECK = 2.0  # seconds between table re-reads while the bus is disconnected


@dataclass(frozen=True, slots=True)
class Follow:
    """What to follow: a bus channel, how to read the table after a cursor, and where the
    cursor lives in an event (`seq` for one request, `user_seq` for a user's requests)."""

    channel: str
    fetch: Fetch
    cursor_field: str
    is_last: Callable[[RequestEvent], bool]


_TIMES = tuple(
    column.name
    for column in RequestEvent.__table__.columns  # type: ignore[attr-defined]
    if isinstance(column.type, UtcDateTime)
)


def event_from_payload(payload: dict[str, Any]) -> RequestEvent:
    """An event row from its published JSON (table models do not parse their input)."""
    values = dict(payload)
    for name in _TIMES:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    return RequestEvent(**values)


async def _read(db: Database, spec: Follow, after: int) -> list[RequestEvent]:
    """The table's events after the cursor. A function of its own, so the session is
    gone once it returns: a subscription's frame lives as long as the subscription."""
    async with db.read() as session:
        return await spec.fetch(session, after)


async def follow(
    db: Database, bus: EventBus, spec: Follow, *, after: int, recheck_seconds: float
) -> AsyncIterator[RequestEvent]:
    last = after
    async with bus.subscribe([spec.channel]) as sub:
        while True:
            rows = await _read(db, spec, last)
            for event in rows:
                yield event
                last = getattr(event, spec.cursor_field)
                if spec.is_last(event):
                    return
            if len(rows) == BATCH:
                continue  # more history to replay
            rows.clear()  # a quiet subscription holds no replayed rows
            while True:
                quiet = recheck_seconds if bus.connected else min(recheck_seconds, OUTAGE_RECHECK)
                payload = await sub.get(quiet)
                if not payload:
                    break  # quiet, or the bus dropped or regained its connection: re-read
                cursor = int(payload[spec.cursor_field])
                if cursor <= last:
                    continue  # already sent (replayed, or a duplicate publish)
                if cursor > last + 1:
                    break  # a gap: backfill from the table
                event = event_from_payload(payload)
                yield event
                last = cursor
                if spec.is_last(event):
                    return
