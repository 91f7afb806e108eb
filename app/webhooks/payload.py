"""The body of a delivery: Standard Webhooks' `{"type", "timestamp", "data"}`, where
`data` is the event exactly as `requestUpdates` and `myRequestUpdates` send it (the
subscription's own type, RequestEvent.of, with the same camelCase names and global ids).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from enum import Enum

from strawberry.utils.str_converters import to_camel_case

from app.requests.stages import Status
from app.requests.types import RequestEvent
from app.tables import RequestEvent as EventRow

FINAL = {Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value}
UPDATED = "request.updated"
FINISHED = "request.finished"
_SKIPPED = {"row_request_id", "request"}  # private, and a resolver of the live request


def event_type(row: EventRow) -> str:
    return FINISHED if row.status in FINAL else UPDATED


def _plain(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def event_data(row: EventRow) -> dict[str, object]:
    event = RequestEvent.of(row)
    return {
        to_camel_case(f.name): _plain(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if f.name not in _SKIPPED
    }


def body(row: EventRow) -> str:
    document = {
        "type": event_type(row),
        "timestamp": row.created_at.isoformat(),
        "data": event_data(row),
    }
    return json.dumps(document, separators=(",", ":"))
