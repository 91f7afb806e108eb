"""The files the gateway's pages load, served by the gateway itself at /assets.

Third-party browser code is installed, never committed: `npm ci` puts the exact versions
of app/web/package-lock.json (each tarball checked against its integrity hash) into
app/web/node_modules (`make run` and `make test` do it). Our own scripts and styles are
in app/web/static. Only the files a page lists here are served: node_modules holds
thousands of others (sources, source maps, READMEs) that no browser needs.

A URL carries a digest of its file (`/assets/<digest>/<name>`), so browsers may keep
each file for a year: a reinstall that changes a file changes its URL.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

WEB = Path(__file__).resolve().parent
NODE_MODULES = WEB / "node_modules"
STATIC = WEB / "static"

PREFIX = "/assets"
IMMUTABLE = "public, max-age=31536000, immutable"
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class Asset:
    """One file a page loads: served at /assets/<digest>/<name>, read from `path`."""

    name: str
    path: Path

    def __post_init__(self) -> None:
        if self.path.suffix not in _MEDIA_TYPES:
            raise ValueError(f"{self.name}: only scripts and stylesheets are served")

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES[self.path.suffix]

    @property
    def is_script(self) -> bool:
        return self.path.suffix == ".js"

    def exists(self) -> bool:
        return self.path.is_file()

    async def digest(self) -> str:
        """The first 16 hex digits of the file's SHA-256, read once per version of it."""
        stat = await asyncio.to_thread(self.path.stat)
        return await asyncio.to_thread(_digest, self.path, stat.st_mtime_ns, stat.st_size)

    async def url(self, root_path: str = "") -> str:
        return f"{root_path}{PREFIX}/{await self.digest()}/{self.name}"


def npm(name: str) -> Asset:
    """A file of an installed npm package, named by its path in node_modules
    (`graphiql/graphiql.min.js`)."""
    return Asset(name, NODE_MODULES / name)


def static(name: str) -> Asset:
    """One of our own files in app/web/static, served as `lumi/<name>`."""
    return Asset(f"lumi/{name}", STATIC / name)


@functools.lru_cache(maxsize=64)
def _digest(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class Assets:
    """The allowlist of /assets: the files of the pages that are switched on, and no
    other. A name is looked up, never joined to a directory, so no URL reaches a file
    outside the list."""

    def __init__(self, assets: Iterable[Asset]) -> None:
        self._by_name = {asset.name: asset for asset in assets}

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def route(self) -> Route:
        return Route(f"{PREFIX}/{{digest}}/{{name:path}}", self.endpoint, methods=["GET", "HEAD"])

    async def endpoint(self, request: Request) -> Response:
        asset = self._by_name.get(request.path_params["name"])
        if asset is None or not asset.exists():
            return PlainTextResponse(
                "not found", status_code=404, headers={"X-Content-Type-Options": "nosniff"}
            )
        # An old digest (a page loaded before a reinstall) still gets the file, but
        # only the URL of this very content may be kept for good.
        current = request.path_params["digest"] == await asset.digest()
        return FileResponse(
            asset.path,
            media_type=asset.media_type,
            headers={
                "Cache-Control": IMMUTABLE if current else "no-cache",
                "X-Content-Type-Options": "nosniff",
            },
        )
