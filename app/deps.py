"""Everything a resolver or an actor needs, built from settings in one place."""

from __future__ import annotations

import hashlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from app.auth import Authenticator, build_authenticator
from app.bus import EventBus, InProcessBus, RedisBus
from app.config import Settings
from app.db import Database, create_engine
from app.graphql.limits import SubscriptionSlots
from app.graphql.persisted import PersistedQueries
from app.models.changes import PublicChanges
from app.models.conversions import Conversions
from app.models.views import ViewCounter

if TYPE_CHECKING:
    from app.models.cache import ResponseCache
    from app.models.viewer_flags import FlagVersions
from app.models.ranking import Rankings
from app.queue import JobQueue
from app.ratelimit import MemoryRateLimiter, Rate, RateLimiter, RedisRateLimiter, Throttle
from app.requests.queue_watch import QueueWatch
from app.requests.stream import Rechecks
from app.unit import Unit, unit_of_work
from app.users.service import Viewers
from providers.base import ImageGenerator, ModelGenerator, PromptOptimizer
from providers.limits import (
    MemoryLimiter,
    MemoryRequestRate,
    RedisLimiter,
    RedisRequestRate,
    RequestRate,
    SlotLimiter,
)
from providers.local import LocalImageGenerator, LocalModelGenerator, LocalPromptOptimizer
from providers.registry import Chain
from providers.siliconflow import SiliconFlowImageGenerator
from providers.storage import LocalStorage, Storage


@dataclass
class Providers:
    """Each modality's failover chain, the limits on vendor jobs in flight, and the
    vendors' request-rate quotas (requests per second per API action)."""

    llm: Chain[PromptOptimizer]
    image: Chain[ImageGenerator]
    model: Chain[ModelGenerator]
    limiter: SlotLimiter
    limits: dict[str, int]
    rates: RequestRate = field(default_factory=MemoryRequestRate)
    rate_limits: dict[str, float] = field(default_factory=dict)


@dataclass
class Deps:
    settings: Settings
    db: Database
    bus: EventBus
    queue: JobQueue
    storage: Storage
    providers: Providers
    tokens: Authenticator
    http: httpx.AsyncClient
    rechecks: Rechecks  # the safety net of this process's subscriptions
    viewers: Viewers  # a token's claims → its user
    rankings: Rankings  # this process's view of the gallery's ranking snapshots
    # One client for every Redis-backed part (vendor slots, rate limits, auth cache);
    # None when nothing uses Redis.
    redis: Any = None
    throttle: Throttle | None = None
    subscription_slots: SubscriptionSlots | None = None
    persisted_queries: PersistedQueries | None = None
    # Who hears of changes to the public library (app/models/changes.py).
    public_changes: PublicChanges = field(default_factory=PublicChanges)
    # Answers of public queries, dropped as those changes come (app/models/cache.py).
    response_cache: ResponseCache | None = None
    # The one ticker of this process's `requestQueue` subscriptions.
    queue_watch: QueueWatch | None = None
    # Views of public models, written in batches (app/models/views.py); the API's only.
    views: ViewCounter | None = None
    # Downloads in STL, PLY and USDZ being converted in this process (app/models/conversions.py).
    conversions: Conversions = field(default_factory=Conversions)

    def unit(self) -> AbstractAsyncContextManager[Unit]:
        """A write transaction whose events, messages and file deletions happen after it
        commits."""
        return unit_of_work(self.db, self.bus, self.queue, self.storage, self.public_changes)

    async def aclose(self) -> None:
        if self.views is not None:  # the views counted since the last write
            await self.views.aclose()
        await self.public_changes.aclose()
        await self.rechecks.aclose()
        if self.queue_watch is not None:
            await self.queue_watch.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.http.aclose()
        await self.storage.close()
        await self.db.dispose()


def build_storage(settings: Settings) -> Storage:
    """Storage for one event loop (an S3 client belongs to the loop that opened it)."""
    if settings.storage_backend == "s3":
        # Imported here: aioboto3 takes a third of a second to import, and a process on
        # local storage (every embedded start, every `lumi` command) never needs it.
        from providers.s3 import S3Storage

        secret_key = settings.s3_secret_access_key
        return S3Storage(
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.s3_public_endpoint_url,
            prefix=settings.s3_prefix,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret_key.get_secret_value() if secret_key else None,
        )
    secret = settings.jwt_secret.get_secret_value().encode()
    key = hashlib.sha256(b"lumi-storage-url\n" + secret).digest()
    return LocalStorage(settings.storage_dir, secret=key)


def _secret(value: SecretStr | None) -> str:
    assert value is not None, "Settings checks every chosen provider has its key"
    return value.get_secret_value()


def _llm(settings: Settings, name: str, http: httpx.AsyncClient) -> PromptOptimizer:
    if name == "local":
        return LocalPromptOptimizer(latency=settings.local_latency_seconds)
    from providers.openai_compat import OpenAIChatOptimizer

    timeout = settings.provider_timeout_seconds
    if name == "qwen":  # through DashScope's OpenAI-compatible endpoint
        return OpenAIChatOptimizer(
            api_key=_secret(settings.dashscope_api_key),
            http=http,
            base_url=settings.qwen_base_url,
            model=settings.qwen_model,
            name="qwen",
            timeout=timeout,
        )
    return OpenAIChatOptimizer(  # siliconflow
        api_key=_secret(settings.siliconflow_api_key),
        http=http,
        base_url=settings.siliconflow_base_url,
        model=settings.siliconflow_chat_model,
        name="siliconflow",
        timeout=timeout,
    )


def _image(settings: Settings, name: str, http: httpx.AsyncClient) -> ImageGenerator:
    timeout = settings.provider_timeout_seconds
    if name == "siliconflow":
        return SiliconFlowImageGenerator(
            api_key=_secret(settings.siliconflow_api_key),
            http=http,
            base_url=settings.siliconflow_base_url,
            model=settings.siliconflow_image_model,
            timeout=timeout,
        )
    if name == "dashscope":
        from providers.dashscope import DashScopeImageGenerator

        return DashScopeImageGenerator(
            api_key=_secret(settings.dashscope_api_key),
            http=http,
            base_url=settings.dashscope_base_url,
            model=settings.dashscope_image_model,
            timeout=timeout,
        )
    if name in ("ark", "openai"):
        from providers.openai_compat import OpenAIImageGenerator

        if name == "ark":
            return OpenAIImageGenerator(
                api_key=_secret(settings.ark_api_key),
                http=http,
                base_url=settings.ark_base_url,
                path="/api/v3/images/generations",
                model=settings.ark_image_model,
                name="ark",
                extra={"watermark": False},
                send_seed=True,
                side_range=(512, 2048),
                timeout=timeout,
            )
        return OpenAIImageGenerator(
            api_key=_secret(settings.openai_api_key),
            http=http,
            base_url=settings.openai_base_url,
            model=settings.openai_image_model,
            name="openai",
            timeout=timeout,
        )
    return LocalImageGenerator(latency=settings.local_latency_seconds)


def _model(settings: Settings, name: str, http: httpx.AsyncClient) -> ModelGenerator:
    if name == "hunyuan":
        from providers.hunyuan import HunyuanModelGenerator

        assert settings.hunyuan_secret_id is not None
        return HunyuanModelGenerator(
            secret_id=settings.hunyuan_secret_id,
            secret_key=_secret(settings.hunyuan_secret_key),
            http=http,
            endpoint=settings.hunyuan_endpoint,
            region=settings.hunyuan_region,
            timeout=settings.provider_timeout_seconds,
            typical_seconds=settings.hunyuan_typical_seconds,
        )
    return LocalModelGenerator(
        work_dir=settings.provider_work_dir, latency=settings.local_model_latency_seconds
    )


def build_providers(settings: Settings, http: httpx.AsyncClient, redis: Any = None) -> Providers:
    """The chains the settings name, sharing one HTTP client; built on the loop using them.
    Worker processes share their vendor slots through `redis` when the broker is Redis."""
    threshold, cooldown = settings.breaker_threshold, settings.breaker_cooldown_seconds
    limiter: SlotLimiter = MemoryLimiter()
    rates: RequestRate = MemoryRequestRate()
    if settings.broker == "redis" and redis is not None:
        limiter = RedisLimiter(redis, prefix=settings.redis_namespace)
        rates = RedisRequestRate(redis, prefix=settings.redis_namespace)
    return Providers(
        llm=Chain([_llm(settings, n, http) for n in settings.chain("llm")], threshold, cooldown),
        image=Chain(
            [_image(settings, n, http) for n in settings.chain("image")], threshold, cooldown
        ),
        model=Chain(
            [_model(settings, n, http) for n in settings.chain("model")], threshold, cooldown
        ),
        limiter=limiter,
        limits=settings.concurrency_limits,
        rates=rates,
        rate_limits=settings.request_rates,
    )


def build_bus(settings: Settings) -> EventBus:
    """A bus for this event loop: Redis pub/sub, or in-process fan-out when embedded."""
    if settings.bus == "redis":
        return RedisBus(settings.redis_url, prefix=settings.redis_namespace)
    return InProcessBus()


def build_deps(settings: Settings, *, bus: EventBus, queue: JobQueue) -> Deps:
    """Builds the loop-bound parts (engine, HTTP client): call it on the loop that uses them."""
    # One HTTP client per process (per loop) for every vendor call and download.
    http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=True)
    redis = None
    if settings.uses_redis:
        from app.redis_clients import connect

        redis = connect(settings.redis_url)
    # A worker's stages each hold a connection while they write: a pool smaller than
    # their number closed and reopened connections all day.
    pool_size = max(20, min(settings.stage_concurrency, 64))
    db = Database(create_engine(settings.resolved_database_url, pool_size=pool_size))
    deps = Deps(
        settings=settings,
        db=db,
        bus=bus,
        queue=queue,
        storage=build_storage(settings),
        providers=build_providers(settings, http, redis),
        tokens=build_authenticator(settings, http=http, redis=redis),
        http=http,
        redis=redis,
        throttle=build_throttle(settings, redis),
        subscription_slots=SubscriptionSlots(
            per_connection=settings.max_subscriptions_per_connection,
            per_user=settings.max_subscriptions_per_user,
        ),
        rechecks=Rechecks(db, settings.subscription_recheck_seconds),
        queue_watch=QueueWatch(db),
        viewers=Viewers(initial_credits=settings.initial_credits),
        rankings=Rankings(
            every=settings.gallery_ranking_seconds, keep=settings.gallery_ranking_keep_seconds
        ),
        persisted_queries=PersistedQueries.from_settings(settings, redis),
        public_changes=PublicChanges(bus, flag_versions(settings, redis)),
    )
    deps.response_cache = build_response_cache(settings, deps)
    deps.views = ViewCounter(db, deps.public_changes, every=settings.view_flush_seconds)
    return deps


def flag_versions(settings: Settings, redis: Any) -> FlagVersions | None:
    """Viewers' flags versions (app/models/viewer_flags.py) where processes share a bus."""
    if settings.bus != "redis" or redis is None:
        return None  # one process: its own changes reach its cache before it answers
    from app.models.viewer_flags import FlagVersions

    return FlagVersions(redis, prefix=settings.redis_namespace)


def build_response_cache(settings: Settings, deps: Deps) -> ResponseCache | None:
    """The response cache, when on. An answer lives at most its TTL, and never more than
    a tenth of a signed file link's lifetime: the links it holds stay valid."""
    if settings.response_cache_max_entries <= 0 or settings.response_cache_max_bytes <= 0:
        return None
    from app.models.cache import ResponseCache

    ttl = min(settings.response_cache_ttl_seconds, settings.file_url_ttl_seconds / 10)
    return ResponseCache(
        deps,
        max_entries=settings.response_cache_max_entries,
        max_bytes=settings.response_cache_max_bytes,
        ttl_seconds=ttl,
    )


def build_throttle(settings: Settings, redis: Any) -> Throttle | None:
    """The per-user and per-address rate limits; None when both are off."""
    burst = settings.rate_limit_burst
    per_user, per_address = settings.rate_limits
    if not per_user and not per_address:
        return None
    limiter: RateLimiter = (
        RedisRateLimiter(redis, prefix=settings.redis_namespace) if redis else MemoryRateLimiter()
    )
    return Throttle(
        limiter,
        per_user=Rate(per_user, burst) if per_user else None,
        per_address=Rate(per_address, burst) if per_address else None,
    )
