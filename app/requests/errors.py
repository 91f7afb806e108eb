"""Expected failures of the requests room."""

from __future__ import annotations

from app.errors import Conflict, NotFound


class RequestNotFound(NotFound):
    default_message = "request not found"


class ImageNotFound(NotFound):
    default_message = "image not found in this request"


class ImageNotSelectable(Conflict):
    default_message = "this image cannot be selected"


class RequestNotCancellable(Conflict):
    default_message = "the request has already finished"


class IdempotencyKeyReused(Conflict):
    default_message = "this idempotencyKey was used for a different request"


class RequestNotAwaitingSelection(Conflict):
    default_message = "the request is not waiting for an image selection"


class RequestNotRetryable(Conflict):
    default_message = "only a FAILED request can be retried"
