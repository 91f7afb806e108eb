"""Request ids, JSON log lines without secrets, and the metrics of the HTTP edge.

A request id comes with each HTTP request (or is made), rides on every stage message
the request causes, and appears on every log line written on its behalf.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Iterable
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import HTTP_DURATION

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Bearer tokens, JWTs, and key=value secrets: never written, whatever logged them.
_SECRETS = [
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (
        re.compile(
            r"(?i)\b(signature|secret|password|token|api[_-]?key|x-amz-signature)=[^&\s\"']+"
        ),
        r"\1=[redacted]",
    ),
]


_SECRETS.append((re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-[redacted]"))
# The configured secrets themselves (vendor keys, the JWT secret), whatever the shape.
_KNOWN: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Literal values never to be logged; short ones would blank ordinary words."""
    _KNOWN.update(value for value in values if value and len(value) >= 8)


def redact(text: str) -> str:
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def new_request_id(incoming: str | None = None) -> str:
    return incoming if incoming and _VALID_ID.match(incoming) else uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if rid := request_id.get():
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Alembic narrates every plugin it loads at INFO: noise before the start-up banner.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))


class RequestContext:
    """ASGI middleware: a request id per HTTP request or websocket, and HTTP timings."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            return self._http(scope, receive, send)
        if scope["type"] == "websocket":
            # A websocket runs in a task of its own (uvicorn's), whose context is its
            # alone: the id is set there for the connection's life, and no frame of
            # this middleware stays open as long as the connection does.
            rid = new_request_id(_header(scope, b"x-request-id"))
            request_id.set(rid)
            return self.app(scope, receive, _SendWithId(send, rid))
        return self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = new_request_id(_header(scope, b"x-request-id"))
        token = request_id.set(rid)
        started = time.perf_counter()
        send_with_id = _SendWithId(send, rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            HTTP_DURATION.labels(_method(scope), _route(scope), str(send_with_id.status)).observe(
                time.perf_counter() - started
            )
            request_id.reset(token)


class _SendWithId:
    """`send`, with the request id added to the response's (or the handshake's) headers
    and the status kept. An object rather than a closure: a websocket holds it for as
    long as it is open."""

    __slots__ = ("rid", "send", "status")

    def __init__(self, send: Send, rid: str) -> None:
        self.send, self.rid, self.status = send, rid, 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        if message["type"] in {"http.response.start", "websocket.accept"}:
            message["headers"] = [*message.get("headers", []), (b"x-request-id", self.rid.encode())]
        await self.send(message)


def _header(scope: Scope, name: bytes) -> str:
    """A request header's value, or "". (Not a dict of them all in the caller's frame: a
    websocket's frame lives as long as it does.)"""
    found = b""
    for key, value in scope.get("headers") or ():
        if key == name:
            found = value  # the last one, as a dict of them would hold
    return bytes(found).decode("latin-1")


# HTTP lets a client send any token as its method (`FOO /graphql` reaches us): only
# these become label values, the way only route templates do.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method(scope: Scope) -> str:
    method = str(scope["method"])
    return method if method in _METHODS else "other"


def _route(scope: Scope) -> str:
    """The route template (`/files/{key:path}`), so labels stay few."""
    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", []):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"


class BodyLimit:
    """ASGI middleware: a request body larger than `max_bytes` answers 413, whether it
    announces its length or streams it, before anything parses it. A multipart/form-data
    body (an uploaded image: app/uploads) may be as large as `multipart_max_bytes`."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, multipart_max_bytes: int | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.multipart_max_bytes = max(multipart_max_bytes or max_bytes, max_bytes)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)  # no frame of ours for a websocket's life
        return self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        limit = self.max_bytes
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data"):
            limit = self.multipart_max_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(send, limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "errors": [
                {
                    "message": f"request body over {limit} bytes",
                    "extensions": {"code": "PAYLOAD_TOO_LARGE"},
                }
            ]
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
