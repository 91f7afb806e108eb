"""The latency and capacity floor: a raw Redis pub/sub → websocket relay.

A Starlette app under uvicorn with the settings `lumi serve` uses (one process, the same
websocket implementation, per-message deflate as LUMI_WS_PER_MESSAGE_DEFLATE says: off
by default). A client connects to `/ws/{channel}`; one shared pub/sub connection
follows every channel under the prefix, and each message is sent as it came to the
clients of its channel. No GraphQL, no database, no authentication: what any relay
must at least spend.

    python -m tests.bench.relay --port P --redis-url URL --prefix PREFIX
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


def create_app(redis_url: str, prefix: str) -> Starlette:
    import redis.asyncio as redis

    followers: dict[str, set[WebSocket]] = {}

    async def relay() -> None:
        client = redis.Redis.from_url(redis_url)
        pubsub = client.pubsub()
        await pubsub.psubscribe(prefix + "*")
        async for message in pubsub.listen():
            if message["type"] != "pmessage":
                continue
            channel = message["channel"].decode()[len(prefix) :]
            data = message["data"].decode()
            for ws in list(followers.get(channel, ())):
                with contextlib.suppress(Exception):
                    await ws.send_text(data)

    async def follow(ws: WebSocket) -> None:
        channel = ws.path_params["channel"]
        await ws.accept()
        followers.setdefault(channel, set()).add(ws)
        try:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            followers[channel].discard(ws)
            if not followers[channel]:
                del followers[channel]

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"connections": sum(len(s) for s in followers.values())})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(relay())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return Starlette(
        routes=[Route("/health", health), WebSocketRoute("/ws/{channel}", follow)],
        lifespan=lifespan,
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    # Kept lean on purpose (no app imports): its RSS is the floor of the capacity bench.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvicorn.run(
        create_app(args.redis_url, args.prefix),
        host="127.0.0.1",
        port=args.port,
        log_level=args.log_level,
        # As the gateway: the same setting, the same default (off).
        ws_per_message_deflate=os.environ.get("LUMI_WS_PER_MESSAGE_DEFLATE", "").lower()
        in {"1", "true", "yes", "on"},
    )


if __name__ == "__main__":
    main()
