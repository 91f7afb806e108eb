"""The response cache: answers of public queries, kept per API process, dropped live.

- **What.** Queries whose every field is public (the gallery, a public model, their
  owners' names, counts and file links) or a per-viewer flag (`likedByMe`,
  `favoritedByMe`): see `cache_plan.py`, decided once per document and operation name.
- **Shared and viewer parts.** An answer is made once, as an anonymous visitor sees it,
  encoded once, and kept as bytes cut where the flags go. A signed-in viewer's answer
  fills them with their own likes and favorites of its models, read in one indexed
  lookup the first time and kept under their user id until they like or favorite
  anything (app/models/viewer_flags.py; a version in Redis makes sure nobody sees a flag
  older than their own like, in any process): nobody sees another's.
- **Invalidation.** Each answer is tagged with the models and owners it shows and the
  gallery orders it lists; a `PublicChange` (app/models/changes.py), announced after
  commit here and on every process through the bus, drops exactly the answers it
  touches. An answer whose read raced a change is not kept (`Guard`).
- **No stale reads.** While the bus cannot bring other processes' changes the cache
  is bypassed and emptied; the TTL is a safety net, kept under a tenth of the file
  links' lifetime so a cached link is always valid.
- **Cost of a hit.** No parse, validation or execution: a dict lookup of the document's
  hash, the token's check (its subject's user id is remembered, see `Viewers`), the
  rate limit, the viewer's flags (their version from Redis when processes share a bus,
  a query only the first time), one `bytes.join`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

from graphql import ExecutionResult, execute
from starlette.requests import Request
from starlette.responses import Response

from app.errors import LumiError, RateLimited
from app.graphql.context import Context
from app.graphql.errors import LumiSchema
from app.graphql.execution import LumiExecutor
from app.graphql.gate import invalid_unicode
from app.graphql.persisted import sha256_of
from app.graphql.relay import row_id
from app.graphql.responses import COUNTED, RequestRefused, cache_headers
from app.metrics import RESPONSE_CACHE_BYTES, RESPONSE_CACHE_DROPS, RESPONSE_CACHE_REQUESTS
from app.models import repository
from app.models.cache_plan import MODEL_MARK, OWNER_MARK, VISIBILITY_MARK, Plan, analyze
from app.models.changes import PublicChange, PublicChanges
from app.models.repository import InteractionRow
from app.models.viewer_flags import Guard, Kinds, ViewerFlags, viewer_tag

if TYPE_CHECKING:
    from strawberry.schema.base import BaseSchema

    from app.deps import Deps

log = logging.getLogger(__name__)

_NOT_CACHEABLE: Any = object()
_MAX_PLANS = 1000
_TRUE, _FALSE = b"true", b"false"
_NONE: Kinds = frozenset()
_STREAMING = ("text/event-stream", "multipart/mixed")


@dataclass(frozen=True, slots=True)
class Entry:
    """An answer: its bytes cut at each flag (`segments` is one longer than `slots`),
    the (model id, LIKE | FAVORITE) of each flag, the anonymous answer whole."""

    segments: tuple[bytes, ...]
    slots: tuple[tuple[str, str], ...]
    model_ids: tuple[str, ...]
    anonymous: bytes
    tags: frozenset[str]
    expires: float
    size: int

    def body(self, mine: Mapping[str, Kinds] | None) -> bytes:
        """The answer with the viewer's flags: `mine`, their kinds of each model."""
        if not mine:
            return self.anonymous
        parts = [self.segments[0]]
        for (model, kind), segment in zip(self.slots, self.segments[1:], strict=True):
            parts.append(_TRUE if kind in mine.get(model, _NONE) else _FALSE)
            parts.append(segment)
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Asked:
    """What a request asks, as far as the cache needs to know."""

    document: str  # the SHA-256 of the document
    operation_name: str | None
    variables: dict[str, Any]
    named: bool  # by its hash alone: a GET a CDN may share


class ResponseCache:
    def __init__(self, deps: Deps, *, max_entries: int, max_bytes: int, ttl_seconds: float) -> None:
        self.deps = deps
        # The same, but counting nothing: for an operation the cache counted already.
        self.uncounted = dataclasses.replace(deps, throttle=None)
        self.max_entries, self.max_bytes, self.ttl = max_entries, max_bytes, ttl_seconds
        self._changes: PublicChanges = deps.public_changes
        self._changes.listen(self._on_change)
        self._plans: OrderedDict[tuple[str, str | None], Any] = OrderedDict()
        self._entries: OrderedDict[tuple[Any, ...], Entry] = OrderedDict()
        self._tagged: dict[str, set[tuple[Any, ...]]] = {}
        self._bytes = 0
        self._guard = Guard()
        self._flags = ViewerFlags(self._guard)
        self._filling: dict[tuple[Any, ...], Any] = {}
        self._token = secrets.token_hex(8)  # no client can write a placeholder
        self._placeholder = re.compile(rb'"\\u0000' + self._token.encode() + rb':(\d+)\\u0000"')
        self._was_healthy = True

    def __len__(self) -> int:
        return len(self._entries)

    # -- learning which documents are cacheable ------------------------------------------

    def learn(self, schema: BaseSchema, query: object, operation_name: object) -> None:
        """Called after a query ran the usual way: plans its document, once."""
        if not isinstance(query, str) or not (
            operation_name is None or isinstance(operation_name, str)
        ):
            return
        key = (sha256_of(query), operation_name)
        if key in self._plans:
            return
        assert isinstance(schema, LumiSchema)
        document = schema.documents.parse(query)  # cached from its run
        plan = analyze(schema._schema, document, operation_name)
        self._plans[key] = plan or _NOT_CACHEABLE
        if len(self._plans) > _MAX_PLANS:
            self._plans.popitem(last=False)

    # -- answering -------------------------------------------------------------------------

    async def answer(
        self, schema: BaseSchema, request: Request, media_type: str
    ) -> Response | None:
        """The answer from the cache, or None: the operation runs the usual way."""
        if not self._healthy():
            RESPONSE_CACHE_REQUESTS.labels("bypass").inc()
            return None
        asked = await _asked(request, self.deps)
        plan = self._plans.get((asked.document, asked.operation_name)) if asked else None
        if asked is None or plan is None or plan is _NOT_CACHEABLE:
            RESPONSE_CACHE_REQUESTS.labels("bypass").inc()
            return None
        context = Context(self.deps, request, None)
        try:
            return await self._answer(schema, plan, asked, context, media_type)
        finally:
            await context.finish()

    async def _answer(
        self, schema: BaseSchema, plan: Plan, asked: Asked, context: Context, media_type: str
    ) -> Response | None:
        request = context.request
        assert isinstance(request, Request)
        try:
            viewer_id = await context.viewer_id()
        except LumiError:
            RESPONSE_CACHE_REQUESTS.labels("bypass").inc()
            return None  # a refused token: answered the usual way
        if (refusal := await self._rate_limit(context, viewer_id, media_type)) is not None:
            return refusal
        request.scope[COUNTED] = True
        base = self.deps.settings.public_url or str(request.base_url)
        variables = json.dumps(asked.variables, sort_keys=True, separators=(",", ":"))
        key = (asked.document, asked.operation_name, variables, base)
        entry = self._get(key)
        RESPONSE_CACHE_REQUESTS.labels("miss" if entry is None else "hit").inc()
        if entry is None:
            entry = await self._fill(schema, plan, key, request, asked.variables)
        if entry is None:
            return None
        mine = None
        if viewer_id is not None and entry.slots:

            async def read(model_ids: Sequence[str]) -> list[InteractionRow]:
                async with context.read() as session:
                    return await repository.interactions_of(session, viewer_id, model_ids)

            versions = self._changes.versions
            version = 0 if versions is None else await versions.get(viewer_id)
            mine = await self._flags.of(viewer_id, entry.model_ids, read, version=version)
        response = Response(entry.body(mine), media_type=media_type)
        if request.method == "GET":
            public = asked.named and viewer_id is None and "authorization" not in request.headers
            cache_headers(response.headers, public, self.deps.settings)
        return response

    async def _rate_limit(
        self, context: Context, viewer_id: str | None, media_type: str
    ) -> Response | None:
        """What the gate does first for every operation: count it, or refuse it."""
        throttle = self.deps.throttle
        if throttle is None:
            return None
        client = context.request.client
        try:
            await throttle.check(address=client.host if client else None, user_id=viewer_id)
        except RateLimited as exc:
            retry_after = str(math.ceil(exc.extensions["retryAfter"]))
            refused = RequestRefused(
                exc.message,
                code=exc.code,
                headers={"Retry-After": retry_after},
                extensions=exc.extensions,
            )
            return refused.response(media_type)
        return None

    # -- making an answer ------------------------------------------------------------------

    async def _fill(
        self,
        schema: BaseSchema,
        plan: Plan,
        key: tuple[Any, ...],
        request: Request,
        variables: dict[str, Any],
    ) -> Entry | None:
        """The anonymous answer, made once however many ask for it at once."""
        waiting = self._filling.get(key)
        if waiting is not None:
            return await waiting  # type: ignore[no-any-return]
        future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self._filling[key] = future
        entry = None
        try:
            entry = await self._make(schema, plan, key, request, variables)
        except Exception:
            log.exception("the response cache could not make an answer; running it as usual")
        finally:
            del self._filling[key]
            future.set_result(entry)
        return entry

    async def _make(
        self,
        schema: BaseSchema,
        plan: Plan,
        key: tuple[Any, ...],
        request: Request,
        variables: dict[str, Any],
    ) -> Entry | None:
        if invalid_unicode(variables, ""):
            return None
        since = self._guard.now()
        headers = [h for h in request.scope["headers"] if h[0] != b"authorization"]
        anonymous = Request({**request.scope, "headers": headers})
        context = Context(self.deps, anonymous, None)
        assert isinstance(schema, LumiSchema)
        try:
            result = execute(
                schema._schema,
                plan.document,
                context_value=context,
                variable_values=variables,
                operation_name=plan.operation_name,
                executor_class=LumiExecutor,
            )
            if isawaitable(result):
                result = await result
        finally:
            await context.finish()
        assert isinstance(result, ExecutionResult)
        if result.errors or result.data is None:
            return None  # NOT_FOUND (a private model), bad input: answered the usual way
        entry = self._entry(plan, result.data, variables)
        if entry is not None and self._guard.unchanged(since, entry.tags):
            self._put(key, entry)
        return entry

    def _entry(
        self, plan: Plan, data: dict[str, Any], variables: Mapping[str, Any]
    ) -> Entry | None:
        harvest = _Harvest(plan.flags, self._token)
        if not harvest.visit(data):
            return None  # shows a model that is not public: never kept
        body = json.dumps({"data": data}, separators=(",", ":")).encode()
        parts = self._placeholder.split(body)
        segments, indices = tuple(parts[0::2]), [int(i) for i in parts[1::2]]
        if sorted(indices) != list(range(len(harvest.slots))):
            return None  # a placeholder went missing: never expected
        slots = tuple(harvest.slots[i] for i in indices)
        return Entry(
            segments=segments,
            slots=slots,
            model_ids=tuple(dict.fromkeys(model for model, _ in slots)),
            anonymous=_FALSE.join(segments),
            tags=frozenset(harvest.tags | plan.listing_tags(variables)),
            expires=time.monotonic() + self.ttl,
            size=len(body) + 200 + 100 * len(slots),
        )

    # -- the store -------------------------------------------------------------------------

    def _get(self, key: tuple[Any, ...]) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires < time.monotonic():
            self._drop(key, "expired")
            return None
        self._entries.move_to_end(key)
        return entry

    def _put(self, key: tuple[Any, ...], entry: Entry) -> None:
        if self.max_entries <= 0 or entry.size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key, "replaced")
        self._entries[key] = entry
        self._bytes += entry.size
        for tag in entry.tags:
            self._tagged.setdefault(tag, set()).add(key)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)), "evicted")
        RESPONSE_CACHE_BYTES.set(self._bytes)

    def _drop(self, key: tuple[Any, ...], reason: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        for tag in entry.tags:
            keys = self._tagged.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tagged[tag]
        RESPONSE_CACHE_DROPS.labels(reason).inc()
        RESPONSE_CACHE_BYTES.set(self._bytes)

    def clear(self, reason: str = "resync") -> None:
        for key in list(self._entries):
            self._drop(key, reason)

    async def _on_change(self, change: PublicChange) -> None:
        if change.everything:
            self._guard.changed(None)
            self.clear()
            self._flags.clear()
            return
        tags = change_tags(change)
        self._guard.changed(tags)
        self._flags.drop(change.viewer_ids)
        for tag in tags:
            for key in list(self._tagged.get(tag, ())):
                self._drop(key, "changed")

    def _healthy(self) -> bool:
        """Whether changes made anywhere reach this cache now; if not, it holds nothing
        (what it held may have missed one) and answers nothing until they do."""
        self._changes.start()
        healthy = self._changes.healthy
        if not healthy and (self._was_healthy or self._entries or len(self._flags)):
            self._guard.changed(None)
            self.clear("bus down")
            self._flags.clear()
        self._was_healthy = healthy
        return healthy


def change_tags(change: PublicChange) -> set[str]:
    tags = {f"model:{model}" for model in change.model_ids}
    tags |= {f"user:{owner}" for owner in change.owner_ids}
    tags |= {f"listing:{order}" for order in change.orders}
    tags |= {viewer_tag(viewer) for viewer in change.viewer_ids}
    if change.listings:
        tags.add("listings")
    return tags


class _Harvest:
    """Walks an anonymous answer: takes the marks out, learns the models and owners it
    shows, and puts a placeholder where each per-viewer flag goes."""

    def __init__(self, flags: tuple[tuple[tuple[str, str], ...], ...], token: str) -> None:
        self.flags, self.token = flags, token
        self.tags: set[str] = set()
        self.slots: list[tuple[str, str]] = []
        self.public = True

    def visit(self, value: object) -> bool:
        if isinstance(value, dict):
            if any(isinstance(k, str) and k.startswith("__lumi_") for k in value):
                self._marked(value)
            for item in value.values():
                self.visit(item)
        elif isinstance(value, list):
            for item in value:
                self.visit(item)
        return self.public

    def _marked(self, value: dict[str, Any]) -> None:
        model: str | None = None
        keys: list[tuple[str, str]] = []
        for name in [k for k in value if k.startswith("__lumi_")]:
            mark = value.pop(name)
            if name == VISIBILITY_MARK:
                self.public = self.public and mark == "PUBLIC"
            elif name == OWNER_MARK:
                self.tags.add(f"user:{row_id(mark)}")
            elif name.startswith(MODEL_MARK):
                model = row_id(mark)
                keys.extend(self.flags[int(name[len(MODEL_MARK) :])])
        if model is None:
            return
        self.tags.add(f"model:{model}")
        for key, kind in keys:
            if isinstance(value.get(key), bool):
                value[key] = f"\x00{self.token}:{len(self.slots)}\x00"
                self.slots.append((model, kind))


async def _asked(request: Request, deps: Deps) -> Asked | None:
    """The request's document hash, operation name and variables, or None when the cache
    has nothing to do with it (a batch, a stream, a malformed request: the usual way
    answers those)."""
    accept = request.headers.get("accept", "")
    if any(kind in accept for kind in _STREAMING):
        return None
    if request.method == "GET":
        params = request.query_params
        try:
            variables = json.loads(params["variables"]) if "variables" in params else None
            extensions = json.loads(params["extensions"]) if "extensions" in params else None
        except (ValueError, RecursionError):  # the usual way answers it, with a 400
            return None
        body: Any = {
            "query": params.get("query"),
            "operationName": params.get("operationName"),
            "variables": variables,
            "extensions": extensions,
        }
    elif request.method == "POST":
        if not request.headers.get("content-type", "").startswith("application/json"):
            return None
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):  # the usual way answers it, with a 400
            return None
        if not isinstance(body, dict):
            return None
    else:
        return None
    return _parameters(body, deps)


def _parameters(body: dict[str, Any], deps: Deps) -> Asked | None:
    query, name = body.get("query"), body.get("operationName")
    # Only an absent or null map is empty: `0`, `""` or `false` is a bad request, answered
    # by the usual way.
    variables, extensions = body.get("variables"), body.get("extensions")
    variables = {} if variables is None else variables
    extensions = {} if extensions is None else extensions
    if not isinstance(variables, dict) or not isinstance(extensions, dict):
        return None
    if not (name is None or isinstance(name, str)):
        return None
    persisted = extensions.get("persistedQuery")
    if persisted is None:
        return Asked(sha256_of(query), name, variables, False) if isinstance(query, str) else None
    queries = deps.persisted_queries
    if queries is None or queries.mode == "off" or not isinstance(persisted, dict):
        return None
    sha = persisted.get("sha256Hash")
    if persisted.get("version") != 1 or not isinstance(sha, str):
        return None
    if query is None:
        return Asked(sha.lower(), name, variables, True)
    if isinstance(query, str) and sha256_of(query) == sha.lower():
        return Asked(sha.lower(), name, variables, True)
    return None
