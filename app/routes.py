"""Plain HTTP routes beside GraphQL: health, signed file downloads and uploads."""

from __future__ import annotations

import asyncio
import mimetypes

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import health
from app.metrics import API_REGISTRY, JOBS, QUEUE_DEPTH
from app.requests.repository import jobs_by_status
from app.uploads.routes import upload_form
from providers.storage import InvalidKey, LocalStorage


async def liveness(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readiness(request: Request) -> Response:
    """Whether this pod can serve: 503 while its database is down (see app/health.py)."""
    ready, report = await health.ready(request.app.state.deps)
    return JSONResponse(report, status_code=200 if ready else 503)


async def health_detailed(request: Request) -> Response:
    """Each dependency's status and latency; HTTP 503 while any one in use is down."""
    healthy, report = await health.detailed(request.app.state.deps, request.app.state.broker)
    return JSONResponse(report, status_code=200 if healthy else 503)


async def metrics(request: Request) -> Response:
    """Prometheus text format; job and queue gauges are read fresh at each scrape."""
    deps, queue = request.app.state.deps, request.app.state.queue
    async with deps.db.read() as session:
        counts = await jobs_by_status(session)
    JOBS.clear()
    for (kind, status), count in counts.items():
        JOBS.labels(kind, status).set(count)
    for name, depth in (await asyncio.to_thread(queue.depths)).items():
        QUEUE_DEPTH.labels(name).set(depth)
    return Response(generate_latest(API_REGISTRY), media_type=CONTENT_TYPE_LATEST)


class NoSniff:
    """Adds `X-Content-Type-Options: nosniff` to every answer of the route it wraps.

    Stored files are generated content served inline: a browser must take their type
    as given, never sniff one into HTML. Wrapping the route, not each response, also
    covers the 400 and 416 answers FileResponse builds itself for bad Range headers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_nosniff)


async def files(request: Request) -> Response:
    """Serves a stored file to whoever holds an unexpired signed URL for it."""
    storage = request.app.state.deps.storage
    if not isinstance(storage, LocalStorage):
        return PlainTextResponse("not found", status_code=404)
    key = request.path_params["key"]
    expires = request.query_params.get("expires", "")
    signature = request.query_params.get("signature", "")
    try:
        path = storage.path_for(key)
    except InvalidKey:
        return PlainTextResponse("not found", status_code=404)
    if not storage.verify(key, expires, signature):
        return PlainTextResponse("this link is invalid or has expired", status_code=403)
    if not path.is_file():
        return PlainTextResponse("not found", status_code=404)
    media_type = storage.content_type(key)
    if media_type == "application/octet-stream":
        media_type = mimetypes.guess_type(key)[0] or media_type
    filename = request.query_params.get("filename")
    return FileResponse(
        path,
        media_type=media_type,
        filename=filename,
        content_disposition_type="attachment" if filename else "inline",
        headers={"Cache-Control": "private, max-age=300"},
    )


routes = [
    Route("/health", liveness, methods=["GET"]),
    Route("/health/ready", readiness, methods=["GET"]),
    Route("/health/detailed", health_detailed, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/files/{key:path}", files, methods=["GET", "HEAD"], middleware=[Middleware(NoSniff)]),
    Route("/uploads", upload_form, methods=["POST"]),  # local presigned uploads
]
