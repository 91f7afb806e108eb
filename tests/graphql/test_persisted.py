"""Persisted queries without a server: the stores' bounds, the manifest, the three modes,
and the media type negotiation of the HTTP view."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.errors import BadRequest
from app.graphql.persisted import (
    MemoryStore,
    PersistedQueries,
    PersistedQueryNotFound,
    PersistedQueryNotInList,
    PersistedQueryNotSupported,
    RedisStore,
    load_manifest,
)
from app.graphql.responses import GRAPHQL_RESPONSE, JSON, negotiate
from tests.conftest import REDIS, require


def sha(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def hashed(query: str) -> dict[str, object]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(query)}}


async def test_the_memory_store_drops_the_least_recently_used_first() -> None:
    store = MemoryStore(max_entries=2)
    await store.put("a", "{ a }")
    await store.put("b", "{ b }")
    assert await store.get("a") == "{ a }"  # used: now b is the oldest
    await store.put("c", "{ c }")
    assert [await store.get(key) for key in "abc"] == ["{ a }", None, "{ c }"]


async def test_the_memory_store_holds_at_most_its_characters() -> None:
    store = MemoryStore(max_entries=100, max_chars=25)
    for index in range(5):
        await store.put(str(index), "x" * 10)
    assert len(store) == 2
    assert await store.get("4") == "x" * 10


async def test_the_redis_store_is_bounded_and_forgets_unused_documents() -> None:
    require("Redis", REDIS)
    from redis.asyncio import Redis

    redis = Redis(host=REDIS[0], port=REDIS[1])
    prefix = f"lumi-apq-test-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis, prefix=prefix, ttl_seconds=120, max_entries=3)
    try:
        for name in "abcd":
            await store.put(name, f"{{ {name} }}")
        assert await store.get("a") is None  # the least recently used went
        assert await store.get("d") == "{ d }"
        assert await redis.exists(f"{prefix}:apq:doc:a") == 0
        assert await redis.zcard(f"{prefix}:apq:index") == 3
        assert 0 < await redis.ttl(f"{prefix}:apq:doc:b") <= 120
    finally:
        await redis.delete(*[key async for key in redis.scan_iter(f"{prefix}:*")])
        await redis.aclose()


async def test_the_redis_store_fails_open_while_redis_is_unreachable() -> None:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    redis = Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    store = RedisStore(redis, prefix="lumi", ttl_seconds=60, max_entries=10)
    await store.put("a", "{ a }")
    assert await store.get("a") is None
    await redis.aclose()


async def test_apq_remembers_a_document_sent_with_its_hash() -> None:
    queries = PersistedQueries("apq")
    query = "{ __typename }"
    with pytest.raises(PersistedQueryNotFound):
        await queries.resolve(None, hashed(query))
    assert await queries.resolve(query, hashed(query)) == (query, True)
    assert await queries.resolve(None, hashed(query)) == (query, True)
    assert await queries.resolve(query, None) == (query, False)


async def test_apq_checks_the_hash_and_its_shape() -> None:
    queries = PersistedQueries("apq")
    with pytest.raises(BadRequest, match="provided sha does not match query"):
        await queries.resolve("{ a }", hashed("{ b }"))
    malformed = [
        {"persistedQuery": "abc"},
        {"persistedQuery": {"version": 2, "sha256Hash": sha("{ a }")}},
        {"persistedQuery": {"version": 1, "sha256Hash": "not-hex"}},
    ]
    for extensions in malformed:
        with pytest.raises(BadRequest):
            await queries.resolve("{ a }", extensions)


async def test_apq_does_not_remember_a_document_over_the_size_limit() -> None:
    queries = PersistedQueries("apq", max_chars=20)
    query = "{ " + "a " * 20 + "}"
    await queries.resolve(query, hashed(query))
    with pytest.raises(PersistedQueryNotFound):
        await queries.resolve(None, hashed(query))


async def test_allowlist_mode_runs_only_the_manifest() -> None:
    listed = "query Listed { __typename }"
    queries = PersistedQueries("allowlist", manifest={sha(listed): listed})
    assert await queries.resolve(None, hashed(listed)) == (listed, True)
    assert await queries.resolve(listed, None) == (listed, False)
    other = "query Other { __typename }"
    for query, extensions in [(other, None), (other, hashed(other)), (None, hashed(other))]:
        with pytest.raises(PersistedQueryNotInList):
            await queries.resolve(query, extensions)
    assert isinstance(queries.store, MemoryStore)
    assert len(queries.store) == 0  # nothing learned


async def test_off_mode_tells_apollo_to_stop_sending_hashes() -> None:
    queries = PersistedQueries("off")
    with pytest.raises(PersistedQueryNotSupported) as refused:
        await queries.resolve(None, hashed("{ a }"))
    assert refused.value.message == "PersistedQueryNotSupported"
    assert await queries.resolve("{ a }", None) == ("{ a }", False)


def test_a_manifest_is_apollos_format_or_a_map_and_every_hash_is_checked(tmp_path: Path) -> None:
    query = "query A { __typename }"
    apollo = tmp_path / "apollo.json"
    apollo.write_text(
        json.dumps(
            {
                "format": "apollo-persisted-query-manifest",
                "version": 1,
                "operations": [{"id": sha(query), "name": "A", "type": "query", "body": query}],
            }
        )
    )
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({sha(query): query}))
    assert load_manifest(apollo) == load_manifest(plain) == {sha(query): query}
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({sha("{ b }"): query}))
    with pytest.raises(ValueError, match="is not the SHA-256 of its document"):
        load_manifest(wrong)
    with pytest.raises(ValueError, match=r"missing\.json"):
        load_manifest(tmp_path / "missing.json")


def test_allowlist_mode_needs_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="LUMI_PERSISTED_QUERIES_MANIFEST"):
        Settings(_env_file=None, data_dir=tmp_path, persisted_queries="allowlist")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, JSON),
        ("", JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        ("application/graphql-response+json", GRAPHQL_RESPONSE),
        ("application/graphql-response+json,application/json;q=0.9", GRAPHQL_RESPONSE),
        ("application/json;q=0.9, application/graphql-response+json", GRAPHQL_RESPONSE),
        ("application/json, application/graphql-response+json", JSON),
        ("application/graphql-response+json;q=0, application/json", JSON),
        ("application/graphql-response+json;q=oops", JSON),
        ("text/html", JSON),
        ("text/event-stream, application/graphql-response+json", GRAPHQL_RESPONSE),
    ],
)
def test_the_media_type_is_the_one_the_client_prefers(accept: str | None, media_type: str) -> None:
    assert negotiate(accept) == media_type
