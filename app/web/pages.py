"""How the gateway's own pages are rendered and sent.

A page is a template of app/web/templates (`string.Template`: each `$name` is replaced by
its value, HTML-escaped unless it is `Markup`), the assets it loads as <link> and
<script> tags, and the data its script needs as JSON in a `<script
type="application/json" id="page-data">` element, which no browser runs. It is sent under
a strict Content-Security-Policy: scripts and styles only from this origin, never
inline, so markup that finds its way into a page runs nothing; connections only to this
origin.
"""

from __future__ import annotations

import functools
import html
import json
import string
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import HTMLResponse

from app.web.assets import WEB, Asset

TEMPLATES = WEB / "templates"

# Every page's policy; a page adds what it needs (GraphiQL: websockets).
POLICY = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self' data:",
    "connect-src": "'self'",
    "base-uri": "'none'",
    "form-action": "'none'",
    "frame-ancestors": "'none'",
}


class Markup(str):
    """Text that is HTML already: put into a template as it is."""

    __slots__ = ()


def content_security_policy(**directives: str) -> str:
    """POLICY, with `directives` replacing its own (`connect_src="'self' wss:"`)."""
    policy = {**POLICY, **{name.replace("_", "-"): value for name, value in directives.items()}}
    return "; ".join(f"{name} {value}" for name, value in policy.items())


def render(template: str, **values: str) -> str:
    """templates/<template> with its `$name`s replaced; a missing value is a KeyError."""
    escaped = {k: v if isinstance(v, Markup) else html.escape(v) for k, v in values.items()}
    return _template(template).substitute(escaped)


@functools.cache
def _template(name: str) -> string.Template:
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


def json_data(value: object, element_id: str = "page-data") -> Markup:
    """`value` as JSON inside a script element that holds data, not code. `<`, `>` and `&`
    are escaped, so no string in it can close the element."""
    text = json.dumps(value, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(f'<script type="application/json" id="{html.escape(element_id)}">{text}</script>')


async def asset_tags(assets: Sequence[Asset], root_path: str = "") -> Markup:
    """A stylesheet link or a deferred script per asset; deferred scripts run in order,
    once the document is parsed."""
    tags = []
    for asset in assets:
        url = html.escape(await asset.url(root_path))
        if asset.is_script:
            tags.append(f'<script defer src="{url}"></script>')
        else:
            tags.append(f'<link rel="stylesheet" href="{url}">')
    return Markup("\n    ".join(tags))


async def page(
    request: Request,
    *,
    title: str,
    body: Markup,
    assets: Sequence[Asset] = (),
    data: object = None,
    status_code: int = 200,
    policy: str | None = None,
) -> HTMLResponse:
    """templates/page.html around `body`, with `assets` and `data`, under `policy`
    (default: POLICY). Never cached: a page may hold a development token, and names its
    assets by their current digests."""
    text = render(
        "page.html",
        title=title,
        head=await asset_tags(assets, request.scope.get("root_path", "")),
        body=body,
        data=json_data(data) if data is not None else Markup(""),
    )
    return HTMLResponse(
        text,
        status_code=status_code,
        headers={
            "Content-Security-Policy": policy or content_security_policy(),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
        },
    )
