"""GraphiQL at GET /graphql, served whole by the gateway: no file comes from a CDN, so it
works on a machine without internet.

It opens with example tabs that make a whole generation by pressing play in each:
create a request, follow it live (a subscription over graphql-transport-ws, whose
`connection_init` carries the Headers tab), look at its images and model, browse the
gallery. In development with HS256 tokens the Headers tab holds a token for the user
`dev`, as `lumi serve` prints one; a page anywhere else never holds a token.
"""

from __future__ import annotations

import html
import json

from starlette.requests import Request
from starlette.responses import Response

from app.auth import TokenVerifier
from app.config import Settings
from app.web.assets import Asset, npm, static
from app.web.pages import Markup, content_security_policy, page

# In load order: React first, GraphiQL's UMD build reads the React and ReactDOM globals.
GRAPHIQL_ASSETS: tuple[Asset, ...] = (
    npm("graphiql/graphiql.min.css"),
    npm("@graphiql/plugin-explorer/dist/style.css"),
    static("graphiql.css"),
    npm("react/umd/react.production.min.js"),
    npm("react-dom/umd/react-dom.production.min.js"),
    npm("graphiql/graphiql.min.js"),
    npm("@graphiql/plugin-explorer/dist/index.umd.js"),
    static("graphiql.js"),
)

# In a tab's variables: replaced by the id the last createRequest returned (graphiql.js).
CREATED_ID = "<the id the Create tab returned>"

_WELCOME = """\
# Each tab is a step of a generation. Press ▶ (or
# Ctrl-Enter) here, then in Follow to watch it live,
# then in Details for its images and model.
#
# Your token goes in the Headers tab below, as
# {"Authorization": "Bearer <token>"}
# (in development it is there already).
"""

# Each tab: its operation (GraphiQL names the tab after it) and its variables.
EXAMPLES: tuple[tuple[str, dict[str, str] | None], ...] = (
    (
        _WELCOME
        + """
mutation Create {
  createRequest(
    input: {prompt: "a brass robot toy", imageCount: 2, autoModel: true}
  ) {
    id
    status
    seq
  }
}
""",
        None,
    ),
    (
        """\
# Every event of the request: those after `afterSeq`
# first, then each one live, until it ends.
subscription Follow($id: ID!) {
  requestUpdates(id: $id, afterSeq: 0) {
    seq
    status
    phase
    step
    progress
    message
    imageId
    modelId
  }
}
""",
        {"id": CREATED_ID},
    ),
    (
        """\
query Details($id: ID!) {
  request(id: $id) {
    status
    progress
    images { id index status url }
    model { id format fileSize fileUrl previewUrl }
  }
}
""",
        {"id": CREATED_ID},
    ),
    (
        """\
# The public gallery: open to anyone.
query Gallery {
  publicModels(first: 20, sort: POPULAR) {
    edges {
      node {
        id name likeCount favoriteCount previewUrl
        owner { displayName }
      }
    }
    pageInfo { endCursor hasNextPage }
  }
}
""",
        None,
    ),
    (
        """\
query Me {
  me { id displayName credits }
}
""",
        None,
    ),
)

_MISSING = """\
<main>
  <h1>GraphiQL's browser files are not installed</h1>
  <p>The gateway serves GraphiQL from its own files, installed with npm into
  <code>app/web/node_modules</code>; these are missing: {missing}.</p>
  <p>In the checkout, run <code>make run</code> with <code>npm</code> on the PATH, or
  <code>npm ci --prefix app/web --ignore-scripts</code>. On a machine without internet,
  see "GraphiQL without internet" in the README. GraphQL itself works meanwhile:
  POST to this URL, or use the websocket.</p>
</main>"""


def development_token(settings: Settings) -> str | None:
    """The token the page puts in its Headers tab: only in development, and only where
    the gateway signs tokens itself (as `lumi serve` prints one)."""
    if settings.env != "development" or settings.auth_mode != "hs256":
        return None
    verifier = TokenVerifier.from_settings(settings)
    return verifier.mint("dev", ttl_seconds=settings.dev_token_ttl_seconds)


def graphiql_config(settings: Settings, root_path: str = "") -> dict[str, object]:
    """What graphiql.js needs: the endpoint, the headers of every tab, the examples."""
    token = development_token(settings)
    headers = json.dumps({"Authorization": f"Bearer {token}"}, indent=2) if token else ""
    return {
        "url": f"{root_path}/graphql",
        "headers": headers,
        "createdId": CREATED_ID,
        "tabs": [
            {
                "query": query,
                "variables": json.dumps(variables, indent=2) if variables else None,
                "headers": headers or None,
            }
            for query, variables in EXAMPLES
        ],
    }


async def graphiql_page(request: Request, settings: Settings) -> Response:
    """The page, or a 503 saying how to install its files when they are missing."""
    if missing := [asset.name for asset in GRAPHIQL_ASSETS if not asset.exists()]:
        names = ", ".join(f"<code>{html.escape(name)}</code>" for name in missing)
        return await page(
            request,
            title="GraphiQL is not installed",
            body=Markup(_MISSING.format(missing=names)),
            status_code=503,
        )
    return await page(
        request,
        title="Lumi Gateway · GraphiQL",
        body=Markup('<div id="graphiql">Loading GraphiQL…</div>'),
        assets=GRAPHIQL_ASSETS,
        data=graphiql_config(settings, request.scope.get("root_path", "")),
        # graphql-transport-ws: websockets to this origin, whichever scheme it is behind.
        policy=content_security_policy(connect_src="'self' ws: wss:"),
    )
