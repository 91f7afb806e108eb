"""The gallery floor: a plain Starlette JSON endpoint that returns the same page as

    publicModels(first: 20) { edges { node { id name likeCount favoriteCount likedByMe
      favoritedByMe owner { displayName } previewUrl } } pageInfo { hasNextPage endCursor } }

from the same MariaDB database: the bearer token verified (the same HS256 check), the
viewer looked up by subject, then one SELECT joining the owner and the viewer's likes
and favorites, and each preview URL signed as the app signs it. No GraphQL, no ORM
objects. It runs under uvicorn in one process, configured by the same LUMI_* variables:

    python -m tests.bench.gallery_floor --port P [--log-level info]
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.auth import TokenVerifier, bearer_token
from app.config import Settings
from app.db import create_engine
from app.deps import build_storage
from app.graphql.pagination import encode_cursor
from app.tables import utcnow

VIEWER = text("SELECT id FROM users WHERE external_id = :subject")
PAGE = text(
    """
    SELECT m.id, m.name, m.like_count, m.favorite_count, m.preview_key, m.published_at,
           u.display_name,
           EXISTS (SELECT 1 FROM model_interactions i WHERE i.user_id = :viewer
                   AND i.model_id = m.id AND i.type = 'LIKE') AS liked,
           EXISTS (SELECT 1 FROM model_interactions i WHERE i.user_id = :viewer
                   AND i.model_id = m.id AND i.type = 'FAVORITE') AS favorited
    FROM models m JOIN users u ON u.id = m.owner_id
    WHERE m.visibility = 'PUBLIC' AND m.published_at <= :as_of
    ORDER BY m.published_at DESC, m.id DESC
    LIMIT :limit
    """
)


def create_app(settings: Settings) -> Starlette:
    engine = create_engine(settings.resolved_database_url)  # the app's pool settings
    tokens = TokenVerifier.from_settings(settings)
    storage = build_storage(settings)
    ttl = settings.file_url_ttl_seconds

    async def gallery(request: Request) -> JSONResponse:
        await request.body()
        token = bearer_token(request.headers.get("authorization"))
        subject = tokens.verify(token).subject if token else None
        as_of = utcnow()
        base = str(request.base_url).rstrip("/")
        async with engine.connect() as connection:
            viewer = None
            if subject is not None:
                viewer = (await connection.execute(VIEWER, {"subject": subject})).scalar()
            rows = (
                await connection.execute(
                    PAGE, {"viewer": viewer or "", "as_of": as_of.replace(tzinfo=None), "limit": 21}
                )
            ).all()
        page = rows[:20]
        edges = [
            {
                "node": {
                    "id": row.id,
                    "name": row.name,
                    "likeCount": row.like_count,
                    "favoriteCount": row.favorite_count,
                    "likedByMe": bool(row.liked),
                    "favoritedByMe": bool(row.favorited),
                    "owner": {"displayName": row.display_name},
                    "previewUrl": base + storage.url(row.preview_key, expires_in=ttl)
                    if row.preview_key
                    else None,
                }
            }
            for row in page
        ]
        last = page[-1] if page else None
        info = {
            "hasNextPage": len(rows) > 20,
            "endCursor": encode_cursor(last.published_at.replace(tzinfo=UTC), last.id, as_of)
            if last
            else None,
        }
        return JSONResponse({"data": {"publicModels": {"edges": edges, "pageInfo": info}}})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.dispose()

    return Starlette(
        routes=[Route("/gallery", gallery, methods=["POST"]), Route("/health", health)],
        lifespan=lifespan,
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    uvicorn.run(create_app(Settings()), host="127.0.0.1", port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
