"""The studio at GET /: a small browser client of the gateway's own GraphQL API.

Sign in with a token, write a prompt, watch the request live (progress, images as they
complete, the 3D model in a viewer the moment it is stored), pick an image, browse your
requests and the public gallery. It uses the same queries, mutations and subscriptions
as any client (graphql-transport-ws over a websocket, resumed with `afterSeq`), and no
endpoint of its own. Its code is ours, in app/web/static: no framework, no build step.

In development with HS256 tokens the page fills in a token for the user `dev`, as
GraphiQL does; a page anywhere else never holds a token. Off in production unless
LUMI_STUDIO is set.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.config import Settings
from app.graphql.ide import development_token
from app.web.assets import Asset, static
from app.web.pages import Markup, content_security_policy, page, render

STUDIO_ASSETS: tuple[Asset, ...] = (
    static("studio.css"),
    static("glb-viewer.js"),
    static("studio.js"),
)

# Websockets to this origin, whichever scheme it is behind (graphql-transport-ws). Model
# files are fetched by the viewer and images shown from where their links point: this
# origin with local storage, the bucket's (another origin) with S3, so both allow any
# https: origin too. The viewer decodes a model's texture from the file's bytes
# (createImageBitmap), which needs no source allowed.
POLICY = content_security_policy(
    connect_src="'self' ws: wss: https:",
    img_src="'self' data: https:",
)


def studio_config(settings: Settings, root_path: str = "") -> dict[str, object]:
    """What studio.js needs: the endpoint (the websocket's URL is derived from it) and
    the development token, or null."""
    return {"url": f"{root_path}/graphql", "devToken": development_token(settings)}


async def studio_page(request: Request) -> Response:
    settings: Settings = request.app.state.deps.settings
    root_path = request.scope.get("root_path", "")
    return await page(
        request,
        title="Lumi Studio",
        body=Markup(render("studio.html")),
        assets=STUDIO_ASSETS,
        data=studio_config(settings, root_path),
        policy=POLICY,
    )


def studio_routes(settings: Settings) -> list[Route]:
    """GET / when the studio is on; nothing otherwise, so / answers 404."""
    if not settings.studio_enabled:
        return []
    return [Route("/", studio_page, methods=["GET", "HEAD"])]
