"""Persisted queries: Apollo's automatic persisted queries (APQ) and trusted documents.

A request may name its document by the SHA-256 of its text,
`extensions.persistedQuery: {version: 1, sha256Hash}`, and leave `query` out:

- `apq` (default): a hash the gateway knows runs its document. An unknown one answers
  PERSISTED_QUERY_NOT_FOUND with the message `PersistedQueryNotFound`, on which Apollo's
  persisted-query link sends the document again with its hash; the hash is checked and
  the document remembered, so the next request (a GET a cache can keep) is small.
- `allowlist` (trusted documents): only the documents of the manifest run, named by
  their hash or sent in full; anything else is PERSISTED_QUERY_NOT_IN_LIST.
- `off`: PERSISTED_QUERY_NOT_SUPPORTED, on which the link stops sending hashes.

The documents of the manifest are known in every mode. Learned ones live in Redis when
the API processes share it (each with a TTL; at most `max_entries`, the least recently
used dropped first), else in this process (a bounded LRU).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from app.errors import BadRequest, LumiError

log = logging.getLogger(__name__)

Mode = Literal["apq", "allowlist", "off"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PersistedQueryNotFound(LumiError):
    """Apollo's clients look for this code or this exact message, then retry in full."""

    code = "PERSISTED_QUERY_NOT_FOUND"
    default_message = "PersistedQueryNotFound"


class PersistedQueryNotSupported(LumiError):
    code = "PERSISTED_QUERY_NOT_SUPPORTED"
    default_message = "PersistedQueryNotSupported"


class PersistedQueryNotInList(LumiError):
    code = "PERSISTED_QUERY_NOT_IN_LIST"
    default_message = "this gateway runs only its registered documents, and this is not one of them"


def sha256_of(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


class Store(Protocol):
    async def get(self, sha256: str) -> str | None: ...

    async def put(self, sha256: str, query: str) -> None: ...


class MemoryStore:
    """The least recently used documents of this process, within both bounds."""

    def __init__(self, max_entries: int, max_chars: int = 16_000_000) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._documents: OrderedDict[str, str] = OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._documents)

    async def get(self, sha256: str) -> str | None:
        query = self._documents.get(sha256)
        if query is not None:
            self._documents.move_to_end(sha256)
        return query

    async def put(self, sha256: str, query: str) -> None:
        if sha256 in self._documents:
            self._documents.move_to_end(sha256)
            return
        self._documents[sha256] = query
        self._chars += len(query)
        while len(self._documents) > self.max_entries or self._chars > self.max_chars:
            _, dropped = self._documents.popitem(last=False)
            self._chars -= len(dropped)


# KEYS: the document, the index (a sorted set of hashes by last use). ARGV: ttl, hash.
_GET = """
local query = redis.call('GET', KEYS[1])
if query then
  local now = redis.call('TIME')[1]
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], 'XX', now, ARGV[2])
end
return query
"""

# KEYS: the document, the index. ARGV: query, ttl, hash, max entries, document key prefix.
# The index forgets hashes unused for a TTL (their documents expired), and past the
# bound drops the least recently used hashes with their documents.
_PUT = """
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  for _, sha in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
    redis.call('DEL', ARGV[5] .. sha)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
end
redis.call('EXPIRE', KEYS[2], ttl)
"""


class RedisStore:
    """Shared by every API process. While Redis is unreachable nothing is remembered and
    every hash is unknown: clients send their documents in full, and nothing fails."""

    def __init__(self, redis: Any, *, prefix: str, ttl_seconds: int, max_entries: int) -> None:
        self._get = redis.register_script(_GET)
        self._put = redis.register_script(_PUT)
        self._documents = f"{prefix}:apq:doc:"
        self._index = f"{prefix}:apq:index"
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._warned_at = -math.inf

    async def get(self, sha256: str) -> str | None:
        try:
            found = await self._get(
                keys=[self._documents + sha256, self._index], args=[self._ttl, sha256]
            )
        except Exception as exc:
            self._warn(exc)
            return None
        return found.decode() if isinstance(found, bytes) else found

    async def put(self, sha256: str, query: str) -> None:
        keys = [self._documents + sha256, self._index]
        args = [query, self._ttl, sha256, self._max_entries, self._documents]
        try:
            await self._put(keys=keys, args=args)
        except Exception as exc:
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        if time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()
            log.warning("persisted queries are not shared while Redis is unreachable: %s", exc)


def load_manifest(path: Path) -> dict[str, str]:
    """SHA-256 -> document, from Apollo's persisted query manifest (what
    `@apollo/generate-persisted-query-manifest` writes: `{"format":
    "apollo-persisted-query-manifest", "operations": [{"id", "body", ...}]}`) or from a
    JSON object `{"<sha256>": "<document>"}`. Each id must be the hash of its document."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"persisted queries manifest {path}: {exc}") from exc
    if isinstance(content, dict) and isinstance(content.get("operations"), list):
        pairs = [
            (item.get("id"), item.get("body"))
            for item in content["operations"]
            if isinstance(item, dict)
        ]
    elif isinstance(content, dict):
        pairs = list(content.items())
    else:
        raise ValueError(f"persisted queries manifest {path}: not a manifest")
    documents: dict[str, str] = {}
    for sha, query in pairs:
        if not isinstance(sha, str) or not isinstance(query, str) or sha256_of(query) != sha:
            raise ValueError(
                f"persisted queries manifest {path}: {sha!r} is not the SHA-256 of its document"
            )
        documents[sha] = query
    return documents


class PersistedQueries:
    """Turns a request's `query` and `extensions` into the document to run."""

    def __init__(
        self,
        mode: Mode = "apq",
        store: Store | None = None,
        *,
        manifest: Mapping[str, str] | None = None,
        max_chars: int = 100_000,
    ) -> None:
        self.mode = mode
        self.store = store or MemoryStore(10_000)
        self.manifest = dict(manifest or {})
        self.max_chars = max_chars

    @classmethod
    def from_settings(cls, settings: Any, redis: Any = None) -> PersistedQueries:
        path = settings.persisted_queries_manifest
        entries = settings.persisted_queries_max_entries
        store: Store = (
            RedisStore(
                redis,
                prefix=settings.redis_namespace,
                ttl_seconds=settings.persisted_queries_ttl_seconds,
                max_entries=entries,
            )
            if redis is not None
            else MemoryStore(entries)
        )
        return cls(
            settings.persisted_queries,
            store,
            manifest=load_manifest(path) if path else None,
            max_chars=settings.graphql_max_document_chars,
        )

    async def resolve(
        self, query: object, extensions: Mapping[str, Any] | None
    ) -> tuple[Any, bool]:
        """(the document to run, whether the request named it by hash). A `query` that is
        not a string is left for the request's checks to refuse."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            self.check_trusted(query)
            return query, False
        if self.mode == "off":
            raise PersistedQueryNotSupported()
        sha = _requested_hash(persisted)
        if query is None:
            return await self._lookup(sha), True
        if not isinstance(query, str):
            return query, True
        if sha256_of(query) != sha:
            raise BadRequest("provided sha does not match query")
        if self.mode == "allowlist":
            self._check_listed(sha)
        elif sha not in self.manifest and len(query) <= self.max_chars:
            await self.store.put(sha, query)  # a longer one is refused unparsed anyway
        return query, True

    def check_trusted(self, query: object) -> None:
        """In allowlist mode, PERSISTED_QUERY_NOT_IN_LIST for a document the manifest does
        not hold. The gate asks it of every operation, on every transport."""
        if self.mode == "allowlist" and isinstance(query, str):
            self._check_listed(sha256_of(query))

    async def _lookup(self, sha: str) -> str:
        query = self.manifest.get(sha)
        if query is None and self.mode == "allowlist":
            raise PersistedQueryNotInList()
        if query is None:
            query = await self.store.get(sha)
        if query is None:
            raise PersistedQueryNotFound()
        return query

    def _check_listed(self, sha: str) -> None:
        if sha not in self.manifest:
            raise PersistedQueryNotInList()


def _requested_hash(persisted: object) -> str:
    if not isinstance(persisted, dict):
        raise BadRequest("`extensions.persistedQuery` must be an object")
    if persisted.get("version") != 1:
        raise BadRequest("only version 1 of persisted queries is supported")
    sha = persisted.get("sha256Hash")
    if not isinstance(sha, str) or not _SHA256.match(sha.lower()):
        raise BadRequest("`extensions.persistedQuery.sha256Hash` must be 64 hexadecimal digits")
    return sha.lower()
