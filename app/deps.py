"""Everything a resolver or an actor needs, built from settings in one place."""

from __future__ import annotations

import hashlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import httpx

from app.auth import TokenVerifier
from app.bus import EventBus, InProcessBus, RedisBus
from app.config import Settings
from app.db import Database, create_engine
from app.queue import JobQueue
from app.unit import Unit, unit_of_work
from providers.base import ImageGenerator, ModelGenerator, PromptOptimizer
from providers.local import LocalImageGenerator, LocalModelGenerator, LocalPromptOptimizer
from providers.s3 import S3Storage
from providers.storage import LocalStorage, Storage


@dataclass(frozen=True, slots=True)
class Providers:
    llm: PromptOptimizer
    image: ImageGenerator
    model: ModelGenerator


@dataclass
class Deps:
    settings: Settings
    db: Database
    bus: EventBus
    queue: JobQueue
    storage: Storage
    providers: Providers
    tokens: TokenVerifier
    http: httpx.AsyncClient

    def unit(self) -> AbstractAsyncContextManager[Unit]:
        """A write transaction whose events and messages go out after it commits."""
        return unit_of_work(self.db, self.bus, self.queue)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.storage.close()
        await self.db.dispose()


def build_storage(settings: Settings) -> Storage:
    """Storage for one event loop (an S3 client belongs to the loop that opened it)."""
    if settings.storage_backend == "s3":
        secret_key = settings.s3_secret_access_key
        return S3Storage(
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            prefix=settings.s3_prefix,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret_key.get_secret_value() if secret_key else None,
        )
    secret = settings.jwt_secret.get_secret_value().encode()
    key = hashlib.sha256(b"lumi-storage-url\n" + secret).digest()
    return LocalStorage(settings.storage_dir, secret=key)


def build_providers(settings: Settings) -> Providers:
    latency = settings.local_latency_seconds
    return Providers(
        llm=LocalPromptOptimizer(latency=latency),
        image=LocalImageGenerator(latency=latency),
        model=LocalModelGenerator(
            work_dir=settings.provider_work_dir, latency=settings.local_model_latency_seconds
        ),
    )


def build_bus(settings: Settings) -> EventBus:
    """A bus for this event loop: Redis pub/sub, or in-process fan-out when embedded."""
    if settings.bus == "redis":
        return RedisBus(settings.redis_url, prefix=settings.redis_namespace)
    return InProcessBus()


def build_deps(settings: Settings, *, bus: EventBus, queue: JobQueue) -> Deps:
    """Builds the loop-bound parts (engine, HTTP client): call it on the loop that uses them."""
    return Deps(
        settings=settings,
        db=Database(create_engine(settings.resolved_database_url)),
        bus=bus,
        queue=queue,
        storage=build_storage(settings),
        providers=build_providers(settings),
        tokens=TokenVerifier.from_settings(settings),
        http=httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=True),
    )
