"""The floors of the gallery benchmark: plain Starlette JSON endpoints answering what the
gateway answers to the same operations, from the same MariaDB database, with the least
work that is still correct: the bearer token verified (the same HS256 check), the viewer
looked up by subject, one SQL statement (or one short transaction) per answer, each URL
signed as the app signs it. No GraphQL, no ORM objects. The request body is parsed as
JSON (the gateway must parse it too) for its `variables`.

- POST /gallery: `publicModels(first: 20, sort: $sort) { edges { node { id name
  likeCount favoriteCount likedByMe favoritedByMe owner { displayName } previewUrl } }
  pageInfo { hasNextPage endCursor } }` (LATEST or POPULAR; anonymous or signed in).
- POST /model: `model(id: $id) { id name description likeCount favoriteCount
  downloadCount likedByMe favoritedByMe owner { displayName } previewUrl fileUrl
  files { name contentType size url } }`.
- POST /like: `likeModel(id: $id)`, or `unlikeModel(id: $id)` when the operation is
  named `Unlike`, `{ id likeCount likedByMe }`: the model row locked, the interaction
  inserted or deleted and the counters updated in one transaction, as the service does.

It runs under uvicorn in one process, configured by the same LUMI_* variables:

    python -m tests.bench.gallery_floor --port P [--log-level info]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.auth import TokenVerifier, bearer_token
from app.config import Settings
from app.db import create_engine
from app.deps import build_storage
from app.graphql.pagination import encode_cursor
from app.graphql.relay import global_id, parse_global_id
from app.tables import utcnow

VIEWER = text("SELECT id FROM users WHERE external_id = :subject")
_CARD = """
    SELECT m.id, m.name, m.description, m.like_count, m.favorite_count, m.download_count,
           m.popularity, m.preview_key, m.file_key, m.format, m.content_type, m.file_size,
           m.files, m.published_at, u.display_name,
           EXISTS (SELECT 1 FROM model_interactions i WHERE i.user_id = :viewer
                   AND i.model_id = m.id AND i.type = 'LIKE') AS liked,
           EXISTS (SELECT 1 FROM model_interactions i WHERE i.user_id = :viewer
                   AND i.model_id = m.id AND i.type = 'FAVORITE') AS favorited
    FROM models m JOIN users u ON u.id = m.owner_id
"""
SORT_COLUMNS = {"LATEST": "published_at", "POPULAR": "popularity"}
PAGES = {
    sort: text(
        _CARD
        + f"""
    WHERE m.visibility = 'PUBLIC' AND m.published_at <= :as_of
    ORDER BY m.{column} DESC, m.id DESC
    LIMIT :limit
    """
    )
    for sort, column in SORT_COLUMNS.items()
}
MODEL = text(_CARD + " WHERE m.id = :id AND (m.visibility = 'PUBLIC' OR m.owner_id = :viewer)")
LOCK = text(
    "SELECT like_count, owner_id, visibility FROM models WHERE id = :id "
    "AND (visibility = 'PUBLIC' OR owner_id = :viewer) FOR UPDATE"
)
LIKE = text(
    "INSERT IGNORE INTO model_interactions (user_id, model_id, type, created_at) "
    "VALUES (:viewer, :id, 'LIKE', :now)"
)
UNLIKE = text(
    "DELETE FROM model_interactions WHERE user_id = :viewer AND model_id = :id AND type = 'LIKE'"
)
COUNT = text(
    "UPDATE models SET like_count = like_count + :step, popularity = popularity + 2 * :step, "
    "updated_at = :now WHERE id = :id"
)


def _row_id(value: str) -> str:
    parsed = parse_global_id(value)
    return parsed[1] if parsed else value


def create_app(settings: Settings) -> Starlette:
    engine = create_engine(settings.resolved_database_url)  # the app's pool settings
    tokens = TokenVerifier.from_settings(settings)
    storage = build_storage(settings)
    ttl = settings.file_url_ttl_seconds

    async def operation(request: Request) -> tuple[dict[str, Any], str | None]:
        """The body (its `variables` and `operationName`) and the verified subject (None
        when anonymous)."""
        body = json.loads(await request.body())
        token = bearer_token(request.headers.get("authorization"))
        subject = tokens.verify(token).subject if token else None
        return body, subject

    async def viewer_of(connection: AsyncConnection, subject: str | None) -> str:
        if subject is None:
            return ""
        return str((await connection.execute(VIEWER, {"subject": subject})).scalar() or "")

    def signed(request: Request, key: str, filename: str | None = None) -> str:
        base = str(request.base_url).rstrip("/")
        return base + storage.url(key, expires_in=ttl, filename=filename)

    def card(request: Request, row: Any) -> dict[str, Any]:
        return {
            "id": global_id("Model", row.id),
            "name": row.name,
            "likeCount": row.like_count,
            "favoriteCount": row.favorite_count,
            "likedByMe": bool(row.liked),
            "favoritedByMe": bool(row.favorited),
            "owner": {"displayName": row.display_name},
            "previewUrl": signed(request, row.preview_key) if row.preview_key else None,
        }

    async def gallery(request: Request) -> JSONResponse:
        body, subject = await operation(request)
        sort = (body.get("variables") or {}).get("sort") or "LATEST"
        as_of = utcnow()
        async with engine.connect() as connection:
            viewer = await viewer_of(connection, subject)
            params = {"viewer": viewer, "as_of": as_of.replace(tzinfo=None), "limit": 21}
            rows = (await connection.execute(PAGES[sort], params)).all()
        page = rows[:20]
        last = page[-1] if page else None
        cursor = None
        if last is not None:
            value = getattr(last, SORT_COLUMNS[sort])
            value = value.replace(tzinfo=UTC) if sort == "LATEST" else value
            cursor = encode_cursor(value, last.id, as_of)
        info = {"hasNextPage": len(rows) > 20, "endCursor": cursor}
        edges = [{"node": card(request, row)} for row in page]
        return JSONResponse({"data": {"publicModels": {"edges": edges, "pageInfo": info}}})

    async def model(request: Request) -> JSONResponse:
        body, subject = await operation(request)
        async with engine.connect() as connection:
            viewer = await viewer_of(connection, subject)
            params = {"viewer": viewer, "id": _row_id(body["variables"]["id"])}
            row = (await connection.execute(MODEL, params)).one()
        files = (json.loads(row.files) if isinstance(row.files, str) else row.files) or [
            {
                "name": f"model.{row.format}",
                "key": row.file_key,
                "content_type": row.content_type,
                "size": row.file_size,
            }
        ]
        node = {
            **card(request, row),
            "description": row.description,
            "downloadCount": row.download_count,
            "fileUrl": signed(request, row.file_key, f"{row.id}.{row.format}"),
            "files": [
                {
                    "name": file["name"],
                    "contentType": file["content_type"],
                    "size": file["size"],
                    "url": signed(request, file["key"], file["name"]),
                }
                for file in files
            ],
        }
        return JSONResponse({"data": {"model": node}})

    async def like(request: Request) -> JSONResponse:
        body, subject = await operation(request)
        model_id, on = _row_id(body["variables"]["id"]), body.get("operationName") != "Unlike"
        now = utcnow().replace(tzinfo=None)
        async with engine.begin() as connection:
            viewer = await viewer_of(connection, subject)
            params = {"viewer": viewer, "id": model_id, "now": now}
            count = (await connection.execute(LOCK, params)).one().like_count
            changed = (await connection.execute(LIKE if on else UNLIKE, params)).rowcount == 1
            if changed:
                step = 1 if on else -1
                await connection.execute(COUNT, {**params, "step": step})
                count += step
        node = {"id": global_id("Model", model_id), "likeCount": count, "likedByMe": on}
        return JSONResponse({"data": {"likeModel" if on else "unlikeModel": node}})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.dispose()

    return Starlette(
        routes=[
            Route("/gallery", gallery, methods=["POST"]),
            Route("/model", model, methods=["POST"]),
            Route("/like", like, methods=["POST"]),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    # The same uvicorn options as `lumi serve` takes (loop and HTTP parser: "auto").
    uvicorn.run(create_app(Settings()), host="127.0.0.1", port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
