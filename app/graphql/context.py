"""One context per HTTP operation (or per websocket connection): viewer, deps, loaders,
and the operation's database access."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, overload

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.types import Info as _Info

from app.auth import Claims, Viewer, bearer_token
from app.db import SharedReads
from app.errors import Unauthenticated
from app.graphql.loaders import Loaders
from app.unit import Unit

if TYPE_CHECKING:
    from app.deps import Deps

_UNSET: Any = object()


class Context:
    def __init__(
        self,
        deps: Deps,
        request: Request | WebSocket,
        response: Response | WebSocket | None,
    ) -> None:
        self.deps = deps
        self.request = request
        self.response = response
        self.connection_params: dict[str, Any] | None = None
        self._viewer: Viewer | None = _UNSET
        self._claims: Claims | None = _UNSET
        self._base: str | None = None
        # A websocket context lives as long as its connection: no caching across events,
        # and no session held between them.
        http = not isinstance(request, WebSocket)
        self._shared = SharedReads(deps.db) if http else None
        if http:  # a websocket's are made when first used (see __getattr__)
            self.loaders = Loaders(self.read, self.viewer, cache=True)
        # An HTTP event stream's cursors (app/graphql/streams.py): the one its client
        # resent as Last-Event-ID, and the one of the event being sent, for its SSE `id:`.
        self.last_event_id: int | None = None
        self.event_cursor: int | None = None

    def __getattr__(self, name: str) -> Any:
        # Most websockets never use a loader (a subscription's events rarely ask for
        # more than the event): made on first use, ten thousand idle ones hold none.
        if name == "loaders" and isinstance(self.__dict__.get("request"), WebSocket):
            self.loaders = Loaders(self.read, self.viewer, cache=False)
            return self.loaders
        raise AttributeError(name)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session to read in. Over HTTP the reads of one operation share one session
        (see `SharedReads`); on a websocket each read has its own."""
        if self._shared is None:
            async with self.deps.db.read() as session:
                yield session
        else:
            async with self._shared.session() as session:
                yield session

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[Unit]:
        """A unit of work (one write transaction; events and messages after commit).
        Reads after it see what it wrote."""
        await self.end_reads()
        async with self.deps.unit() as unit:
            yield unit

    async def begin_stream(self, last_event_id: int | None) -> None:
        """An HTTP operation that streams (app/graphql/streams.py) lives as long as its
        stream, like a websocket's: it holds no session while it waits, each read has its
        own, and nothing is cached across its events."""
        await self.end_reads()
        self._shared = None
        self.loaders = Loaders(self.read, self.viewer, cache=False)
        self.last_event_id = last_event_id

    @overload
    def resume_after(self, after: int) -> int: ...
    @overload
    def resume_after(self, after: None) -> int | None: ...
    def resume_after(self, after: int | None) -> int | None:
        """Where a subscription resumes: after its `afterSeq` argument, or after the
        Last-Event-ID its HTTP event stream's client resent, whichever is later."""
        if self.last_event_id is None or (after is not None and after >= self.last_event_id):
            return after
        return self.last_event_id

    async def end_reads(self) -> None:
        """Ends the shared read transaction: before a write, and when the operation ends."""
        if self._shared is not None:
            await self._shared.release()

    async def finish(self) -> None:
        """The end of an HTTP operation: the read session goes back, and the loaders go.
        They call back into this context, a cycle that held the operation's request,
        loaders and rows until a garbage collection found them; without it they are
        freed as the operation returns."""
        await self.end_reads()
        self.__dict__.pop("loaders", None)

    async def viewer(self) -> Viewer | None:
        """The verified user, or None for an anonymous caller. A bad token is an error."""
        if self._viewer is _UNSET:
            claims = await self._claims_of_token()
            viewer = None
            if claims is not None:
                viewer = await self.deps.viewers.of(claims, self.read, self._write)
            self._viewer = viewer
        return self._viewer

    async def require_viewer(self) -> Viewer:
        viewer = await self.viewer()
        if viewer is None:
            raise Unauthenticated()
        return viewer

    async def viewer_id(self) -> str | None:
        """The verified user's id, or None for an anonymous caller: all that permissions,
        rate limits, likes and the response cache need of the viewer. Without a query
        when this process has seen the token's subject before (see `Viewers`)."""
        if self._viewer is not _UNSET:
            return self._viewer.id if self._viewer is not None else None
        claims = await self._claims_of_token()
        if claims is None:
            self._viewer = None
            return None
        known = self.deps.viewers.known_id(claims.subject)
        if known is not None:
            return known
        viewer = await self.viewer()
        return viewer.id if viewer is not None else None

    async def require_viewer_id(self) -> str:
        viewer_id = await self.viewer_id()
        if viewer_id is None:
            raise Unauthenticated()
        return viewer_id

    def _token(self) -> str | None:
        if isinstance(self.request, WebSocket):
            return token_from_params(self.connection_params or {})
        return bearer_token(self.request.headers.get("authorization"))

    async def _claims_of_token(self) -> Claims | None:
        """The token's verified claims (checked once per operation), or None without one."""
        if self._claims is _UNSET:
            token = self._token()
            self._claims = None if token is None else await self.deps.tokens.authenticate(token)
        return self._claims

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction of its own, after the shared reads end."""
        await self.end_reads()
        async with self.deps.db.write() as session:
            yield session

    async def authenticate_connection(self) -> None:
        """Called on `connection_init`: resolves the viewer once for the whole connection.
        The payload (the token) is not kept: nothing reads it again."""
        self._viewer = self._claims = _UNSET
        try:
            await self.viewer()
            self._claims = None  # read only to find the viewer
        finally:
            self.connection_params = None

    def absolute_url(self, url: str) -> str:
        """Storage URLs may be relative to the gateway; clients get absolute ones."""
        if url.startswith(("http://", "https://")):
            return url
        return self._base_url() + url

    def _base_url(self) -> str:
        """Worked out once per context: a gallery page signs dozens of URLs."""
        if self._base is None:
            base = self.deps.settings.public_url or str(self.request.base_url)
            if isinstance(self.request, WebSocket) and not self.deps.settings.public_url:
                base = base.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
            self._base = base.rstrip("/")
        return self._base


def token_from_params(params: dict[str, Any]) -> str | None:
    """The token of a `connection_init` payload.

    Accepted shapes: `{"Authorization": "Bearer …"}`, `{"headers": {"Authorization": …}}`
    (Apollo-style clients) or `{"token": "…"}`.
    """
    for name in ("Authorization", "authorization"):
        if isinstance(params.get(name), str):
            return bearer_token(params[name])
    headers = params.get("headers")
    if isinstance(headers, dict):
        return token_from_params({k: v for k, v in headers.items() if k.lower() == "authorization"})
    token = params.get("token")
    return (token.strip() or None) if isinstance(token, str) else None


Info = _Info[Context, None]
