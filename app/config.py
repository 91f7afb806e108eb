"""One Settings object, read from `LUMI_*` environment variables (or a `.env` file).

Its defaults are the embedded mode: SQLite, an in-process broker and bus, a local
storage directory and the offline `local` providers. Nothing else reads `os.environ`.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "lumi-development-secret-change-me"  # noqa: S105 - the known dev default


_CHAINS = {"llm": "llm_providers", "image": "image_providers", "model": "model_providers"}
# Each provider of each modality, and the settings it cannot work without.
_NEEDS: dict[str, dict[str, tuple[str, ...]]] = {
    "llm": {"local": (), "qwen": ("dashscope_api_key",), "siliconflow": ("siliconflow_api_key",)},
    "image": {
        "local": (),
        "siliconflow": ("siliconflow_api_key",),
        "dashscope": ("dashscope_api_key",),
        "ark": ("ark_api_key",),
        "openai": ("openai_api_key",),
    },
    "model": {"local": (), "hunyuan": ("hunyuan_secret_id", "hunyuan_secret_key")},
}


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LUMI_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "production", "test"] = "development"

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        default=None,
        description="Absolute base URL of the API for file links; else taken from each request.",
    )
    graphiql: bool | None = Field(
        default=None, description="GraphiQL at GET /graphql; default: on, off in production."
    )
    studio: bool | None = Field(
        default=None, description="The studio page at GET /; default: on, off in production."
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins allowed to call the API from a browser "
        "(HTTP CORS and websocket handshakes); '*' for any.",
    )
    max_body_bytes: int = Field(
        default=1_000_000, ge=1024, description="Larger request bodies answer 413."
    )
    # Longer than the idle timeouts of the clients and proxies in front (browsers and most
    # load balancers keep 60 s): the side that closes an idle connection first must be
    # the client, or a request sent as the server closes is lost with no answer, and a
    # caller of createRequest cannot tell whether it ran.
    max_concurrent_operations: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="GraphQL operations over HTTP that one API process runs at once; the "
        "others wait their turn before they take a database connection (the pool holds 30).",
    )
    http_keep_alive_seconds: float = Field(
        default=75,
        ge=1,
        le=3600,
        description="An idle keep-alive HTTP connection is closed after this many seconds.",
    )
    shutdown_grace_seconds: float = Field(
        default=10,
        ge=0,
        le=3600,
        description="On shutdown, HTTP responses still running after this many seconds are "
        "cut (subscriptions streamed over HTTP never end by themselves; their clients resume "
        "on another instance).",
    )
    # Default: none. A gateway reached directly must not let any peer (a local one
    # included) name its own address; behind a proxy, the operator names the proxy.
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated IP addresses or CIDR networks of the proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed, so the per-address rate limit "
        "and the logs see each client's own address; '*': any peer, only for a gateway "
        "that nothing but its proxy can reach.",
    )

    # Storage of every artifact; database file and local files live here by default.
    data_dir: Path = Path("var")
    database_url: str | None = None
    auto_migrate: bool = Field(
        default=True, description="Upgrade the database to the newest revision at start."
    )
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str = "lumi"
    s3_region: str = "us-east-1"
    s3_endpoint_url: str | None = Field(
        default=None, description="For S3-compatible stores (MinIO, moto); None means AWS."
    )
    # The gateway may reach the store by a name clients cannot (compose's `minio:9000`).
    s3_public_endpoint_url: str | None = Field(
        default=None,
        description="The store's address in the file links handed to clients; "
        "default: LUMI_S3_ENDPOINT_URL.",
    )
    s3_prefix: str = ""
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_create_bucket: bool = Field(
        default=False, description="Create the bucket at start if missing (development)."
    )
    file_url_ttl_seconds: int = Field(default=3600, ge=10, le=7 * 24 * 3600)
    download_url_ttl_seconds: int = Field(default=300, ge=10, le=24 * 3600)
    # A user's own image (README: "Your own image to 3D"): refused past either limit.
    upload_max_bytes: int = Field(
        default=20_000_000,
        ge=1024,
        le=1_000_000_000,
        description="The largest image file a user may upload, in bytes.",
    )
    upload_max_pixels: int = Field(
        default=25_000_000,
        ge=1024,
        le=89_000_000,  # Pillow's own decompression-bomb threshold
        description="The most pixels (width x height) an uploaded image may have; "
        "checked from its header, before it is decoded.",
    )
    upload_url_ttl_seconds: int = Field(
        default=900, ge=10, le=24 * 3600, description="How long a presigned upload is open."
    )
    upload_ttl_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="An upload not used by a request within this long is deleted.",
    )
    upload_max_unused: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="How many uploads a user may hold that no request used yet (and not "
        "expired); one more is LIMIT_EXCEEDED.",
    )
    # Each snapshot holds a row per public model and counter sort, and the versions of
    # the last `keep` seconds stay: about 3 x public models x keep / ranking rows.
    gallery_ranking_seconds: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="A new walk through a counter sort of the gallery (POPULAR, MOST_LIKED, "
        "MOST_DOWNLOADED, MOST_VIEWED) ranks it anew when its newest ranking is older than this.",
    )
    view_flush_seconds: float = Field(
        default=5,
        gt=0,
        le=300,
        description="Views of public models (`viewModel`) add up in memory and are written "
        "this often, in one statement per batch; a crash loses at most this long's views.",
    )
    gallery_ranking_keep_seconds: float = Field(
        default=1800,
        ge=60,
        le=7 * 24 * 3600,
        description="A ranking stays this long after a newer one replaced it: how long a "
        "walk through a counter sort may take.",
    )

    # Queue and bus.
    broker: Literal["embedded", "redis"] = "embedded"
    bus: Literal["embedded", "redis"] = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = Field(
        default="lumi", pattern=r"^[A-Za-z0-9_.-]{1,40}$", description="Prefix of every Redis key"
    )
    worker_threads: int = Field(default=4, ge=1, le=64)
    stage_concurrency: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Stages a worker process runs at once on its event loop; its threads "
        "only fetch messages and hand them over.",
    )
    embedded_workers: bool = Field(
        default=True,
        description="With the embedded broker: whether `lumi serve` runs the stages (and the "
        "sweeper) in its own threads. Off, requests wait in line until a start with it on "
        "sends their work again (maintenance, or holding the line).",
    )
    worker_metrics_port: int = Field(
        default=9191, ge=0, le=65535, description="Where `lumi worker` serves /metrics; 0: off."
    )
    # Off by default: on one host `lumi serve` already holds 8000. The image turns it on
    # at 8000, where its HEALTHCHECK (and the manifests' probes) ask every container.
    worker_health_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Where `lumi worker` answers /health (its consumer threads); 0: off.",
    )
    worker_watchdog_seconds: float = Field(
        default=5,
        gt=0,
        le=300,
        description="How often `lumi worker` checks its Dramatiq consumer threads and "
        "restarts one that died.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_operation_names: str = Field(
        default="",
        description="Comma-separated GraphQL operation names that label their own durations "
        "in /metrics; every other name is `other` (clients choose names: unbounded labels).",
    )

    # Auth: how a bearer token becomes a user (see README, "Authentication").
    auth_mode: Literal["hs256", "jwks", "user-service"] = Field(
        default="hs256",
        description="hs256: JWTs signed with LUMI_JWT_SECRET; jwks: RS256 JWTs checked "
        "against the keys at LUMI_JWKS_URL; user-service: the token is sent to "
        "LUMI_USER_SERVICE_URL, whose answer names the user.",
    )
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_issuer: str = "lumi"
    jwt_audience: str = "lumi-gateway"
    dev_token_ttl_seconds: int = 30 * 24 * 3600
    jwks_url: str | None = Field(
        default=None, description="The identity provider's JWKS document (auth_mode=jwks)."
    )
    jwks_cache_seconds: float = Field(
        default=300, gt=0, description="How long fetched signing keys are trusted."
    )
    user_service_url: str | None = Field(
        default=None,
        description="Base URL of the user service; GET <url>/me with the caller's bearer "
        "token answers {id, name} (auth_mode=user-service).",
    )
    user_service_cache_seconds: float = Field(
        default=60, gt=0, description="How long a user service answer is reused (in Redis)."
    )
    auth_timeout_seconds: float = Field(
        default=3, gt=0, le=60, description="Longest wait for the JWKS URL or the user service."
    )

    # Rate limits per user and per client address; in Redis when processes share it.
    rate_limit_user_per_minute: int | None = Field(
        default=None,
        ge=0,
        description="GraphQL operations per user per minute; 0: no limit. "
        "Default: 600 in production, no limit otherwise.",
    )
    rate_limit_ip_per_minute: int | None = Field(
        default=None,
        ge=0,
        description="GraphQL operations per client address per minute; 0: no limit. "
        "Default: 1200 in production, no limit otherwise.",
    )
    rate_limit_burst: int = Field(
        default=60, ge=1, description="Operations allowed at once above the steady rate."
    )

    # Providers.
    # Providers: a failover chain per modality, first choice first (see README).
    llm_providers: str = Field(default="local", description="Of: local, qwen, siliconflow.")
    image_providers: str = Field(
        default="local", description="Of: local, siliconflow, dashscope, ark, openai."
    )
    model_providers: str = Field(default="local", description="Of: local, hunyuan.")
    local_latency_seconds: float = Field(default=0.5, ge=0, le=60)
    local_model_latency_seconds: float = Field(default=3.0, ge=0, le=600)
    image_size: int = Field(default=512, ge=64, le=2048)
    provider_timeout_seconds: float = Field(
        default=60, gt=0, description="Longest wait for one answer from a vendor's API."
    )
    provider_concurrency: str = Field(
        default="hunyuan=3",
        description="vendor=limit pairs: jobs in flight at once, across all processes.",
    )
    provider_request_rates: str = Field(
        default="hunyuan=20",
        description="vendor=requests per second, per API action (submit, poll), across all "
        "processes: the vendor's own quota (Tencent documents 20/s for each Hunyuan 3D API).",
    )
    breaker_threshold: int = Field(
        default=5, ge=1, description="Failures in a row that open a vendor's circuit."
    )
    breaker_cooldown_seconds: float = Field(
        default=30, gt=0, description="How long an open circuit skips its vendor."
    )
    siliconflow_api_key: SecretStr | None = None
    siliconflow_base_url: str = "https://api.siliconflow.cn"
    siliconflow_image_model: str = "Kwai-Kolors/Kolors"
    siliconflow_chat_model: str = "Qwen/Qwen2.5-7B-Instruct"
    dashscope_api_key: SecretStr | None = None
    dashscope_base_url: str = "https://dashscope.aliyuncs.com"
    dashscope_image_model: str = "wanx2.1-t2i-turbo"
    qwen_base_url: str = "https://dashscope.aliyuncs.com/compatible-mode"
    qwen_model: str = "qwen-plus"
    ark_api_key: SecretStr | None = None
    ark_base_url: str = "https://ark.cn-beijing.volces.com"
    ark_image_model: str = "doubao-seedream-3-0-t2i-250415"
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com"
    openai_image_model: str = "gpt-image-1"
    hunyuan_secret_id: str | None = None
    hunyuan_secret_key: SecretStr | None = None
    hunyuan_endpoint: str = "https://ai3d.tencentcloudapi.com"
    hunyuan_region: str = "ap-guangzhou"
    hunyuan_typical_seconds: float = Field(
        default=120, gt=0, description="A usual Hunyuan 3D job: drives its progress estimate."
    )

    # Pipeline.
    model_poll_interval_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How soon a 3D job is first polled, and again."
    )
    model_poll_max_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Polls of a 3D job space out as it runs (a fifth of its age), up to this.",
    )
    model_poll_batch: int = Field(
        default=200,
        ge=1,
        le=5000,
        description="3D jobs one worker process's poller takes per round: asked about "
        "together, their results committed in one transaction.",
    )
    model_job_timeout_seconds: float = Field(
        default=900, gt=0, description="A vendor 3D job running longer than this is TIMEOUT."
    )
    stage_time_limit_seconds: float = Field(
        default=180, gt=0, description="Longest one stage's provider call and copy may take."
    )
    job_max_attempts: int = Field(
        default=4, ge=1, le=20, description="Attempts per job before its failure is final."
    )
    retry_base_seconds: float = Field(
        default=2.0, gt=0, description="First retry delay; doubles per attempt, with jitter."
    )
    retry_max_seconds: float = Field(default=300, gt=0, description="Longest retry delay.")
    stall_seconds: float = Field(
        default=60, gt=0, description="A running job whose heartbeat is older is stalled."
    )
    sweep_interval_seconds: float = Field(
        default=15, gt=0, description="How often workers look for stalled and lost jobs."
    )
    overdue_seconds: float = Field(
        default=60,
        gt=0,
        description="A waiting job due this long ago is sent again even though the broker "
        "still holds a message for it (a delayed message can be stranded by a Redis outage).",
    )
    high_priority_roles: str = Field(
        default="admin,priority", description="Comma-separated roles that may ask for HIGH."
    )

    # Credits.
    initial_credits: int = Field(default=100, ge=0, description="Granted to every new user.")
    image_credit_cost: int = Field(default=1, ge=0, description="Debited per image.")
    model_credit_cost: int = Field(default=5, ge=0, description="Debited per 3D model.")

    # GraphQL limits, checked before any resolver runs.
    graphql_max_depth: int = Field(default=12, ge=2, le=100)
    graphql_max_aliases: int = Field(default=30, ge=0, le=1000)
    graphql_max_tokens: int = Field(default=3000, ge=100, le=100_000)
    graphql_max_document_chars: int = Field(
        default=100_000,
        ge=1000,
        description="Longer GraphQL documents are refused before they are parsed.",
    )
    graphql_max_cost: int = Field(
        default=20000, ge=100, description="Fields times the page sizes of the lists around them."
    )
    introspection: bool | None = Field(
        default=None, description="Schema introspection; default: on, off in production."
    )
    graphql_max_batch: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Operations one HTTP request may batch (a JSON array); each is counted "
        "by the rate limits and meets the cost limits as if sent alone.",
    )

    # Persisted queries (see README, "GraphQL over HTTP").
    persisted_queries: Literal["apq", "allowlist", "off"] = Field(
        default="apq",
        description="apq: automatic persisted queries (Apollo's protocol); allowlist: only "
        "the documents of LUMI_PERSISTED_QUERIES_MANIFEST run (trusted documents); off.",
    )
    persisted_queries_manifest: Path | None = Field(
        default=None,
        description="A JSON file of known documents: Apollo's persisted query manifest or "
        '{"<sha256>": "<document>"}; required by allowlist mode.',
    )
    persisted_queries_max_entries: int = Field(
        default=10_000,
        ge=10,
        description="Documents remembered by hash (in Redis when processes share it, else "
        "in each process); the least recently used go first.",
    )
    persisted_queries_ttl_seconds: int = Field(
        default=86_400, ge=60, description="A document unused this long is forgotten (Redis)."
    )
    persisted_queries_max_age_seconds: int = Field(
        default=5,
        ge=0,
        le=3600,
        description="Cache-Control max-age of an anonymous persisted query over GET answered "
        "without errors (public data, shared by HTTP caches); 0: never cacheable.",
    )
    response_cache_max_entries: int = Field(
        default=10_000,
        ge=0,
        description="Answers of public queries (the gallery, a public model) each API process "
        "keeps, invalidated live through the bus; the least recently used go first; 0: off.",
    )
    response_cache_max_bytes: int = Field(
        default=64_000_000,
        ge=0,
        description="The most bytes of answers the response cache holds per API process.",
    )
    response_cache_ttl_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="The longest a cached answer is kept even when nothing changes (a safety "
        "net; never more than a tenth of LUMI_FILE_URL_TTL_SECONDS, so its links stay valid).",
    )

    # Websockets.
    ws_init_timeout_seconds: float = Field(
        default=3, gt=0, le=60, description="Close 4408 when no connection_init comes in time."
    )
    ws_ping_interval_seconds: float = Field(
        default=15, ge=0, le=600, description="Server pings on a quiet websocket; 0: none."
    )
    ws_max_message_bytes: int = Field(
        default=262_144,
        ge=4096,
        le=16 * 1024 * 1024,
        description="A larger websocket message closes its connection (1009) before it is "
        "read: an operation and its variables fit well within the default.",
    )
    ws_per_message_deflate: bool = Field(
        default=False,
        description="permessage-deflate on websockets: ~40 KiB more per connection.",
    )
    max_subscriptions_per_connection: int = Field(
        default=20, ge=1, description="Subscriptions one websocket may hold open at once."
    )
    max_subscriptions_per_user: int = Field(
        default=50, ge=1, description="Subscriptions one user may hold open on one API process."
    )
    http_stream_heartbeat_seconds: float = Field(
        default=15,
        gt=0,
        le=600,
        description="A subscription streamed over HTTP (SSE, multipart) sends a heartbeat "
        "after this many quiet seconds, so proxies keep it open.",
    )

    # Subscriptions: how often a quiet subscription re-reads the event table while the
    # bus is connected (a safety net for a lost publish); every 2 s while it is not.
    subscription_recheck_seconds: float = Field(default=30.0, gt=0, le=600)

    # Webhooks (see README, "Webhooks").
    webhook_allowed_networks: str = Field(
        default="",
        description="Comma-separated networks webhook URLs may reach although they are not "
        "public (loopback, private, link-local...), e.g. 10.1.2.0/24; empty: public only.",
    )
    webhook_allow_http: bool | None = Field(
        default=None,
        description="Whether webhook URLs may be plain http://; null: yes in development, "
        "no in production (https only).",
    )
    webhook_retry_seconds: str = Field(
        default="5,300,1800,7200,18000,36000,36000",
        description="Delays in seconds between a delivery's attempts after the first (which "
        "is immediate), each with +-10% jitter; after the last one fails it is FAILED.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="How long one webhook call may take."
    )
    webhook_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often each process looks for new events and due webhook deliveries.",
    )
    webhook_secret_grace_seconds: float = Field(
        default=86400,
        ge=0,
        description="How long a rotated webhook secret still signs (beside the new one).",
    )
    webhook_batch: int = Field(
        default=50, ge=1, le=1000, description="Webhook deliveries one process sends per round."
    )
    webhook_retention_days: float = Field(
        default=30,
        ge=0,
        description="How long delivered and failed webhook deliveries are kept (listed by "
        "webhookDeliveries, redeliverable) before they are deleted; 0: kept for ever.",
    )

    production_allow: str = Field(
        default="",
        description=(
            "Comma-separated embedded defaults production may keep anyway: "
            "dev-secret, sqlite, embedded-broker, embedded-bus, local-storage."
        ),
    )

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _webhook_networks_are_networks(cls, value: str) -> str:
        for entry in _comma_list(value):
            try:
                ipaddress.ip_network(entry)
            except ValueError as exc:
                raise ValueError(f"LUMI_WEBHOOK_ALLOWED_NETWORKS: {exc}") from None
        return value

    @field_validator("webhook_retry_seconds")
    @classmethod
    def _webhook_retries_are_delays(cls, value: str) -> str:
        try:
            delays = [float(entry) for entry in _comma_list(value)]
        except ValueError:
            raise ValueError(
                "LUMI_WEBHOOK_RETRY_SECONDS: a comma-separated list of seconds"
            ) from None
        if any(delay < 0 for delay in delays):
            raise ValueError("LUMI_WEBHOOK_RETRY_SECONDS: delays cannot be negative")
        return value

    @property
    def webhook_retry_delays(self) -> list[float]:
        return [float(entry) for entry in _comma_list(self.webhook_retry_seconds)]

    @property
    def webhook_http_allowed(self) -> bool:
        if self.webhook_allow_http is None:
            return self.env != "production"
        return self.webhook_allow_http

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_are_addresses(cls, value: str) -> str:
        """Uvicorn quietly never matches an entry it cannot parse (a name, a network with
        host bits set, '*' beside others); here such a typo stops the start instead."""
        entries = _comma_list(value)
        if "*" in entries:
            if entries != ["*"]:
                raise ValueError("LUMI_TRUSTED_PROXIES: '*' trusts every peer; list nothing else")
            return value
        for entry in entries:
            try:
                ipaddress.ip_network(entry)  # an address alone is a network of one
            except ValueError as exc:
                raise ValueError(f"LUMI_TRUSTED_PROXIES: {exc}") from None
        return value

    @model_validator(mode="after")
    def _providers_are_known_and_configured(self) -> Settings:
        for modality, setting in _CHAINS.items():
            names = self.chain(modality)
            if not names:
                raise ValueError(f"LUMI_{setting.upper()} names no provider")
            for name in names:
                if name not in _NEEDS[modality]:
                    known = ", ".join(_NEEDS[modality])
                    raise ValueError(f"LUMI_{setting.upper()}: unknown {name!r}; known: {known}")
                for needed in _NEEDS[modality][name]:
                    if not getattr(self, needed):
                        raise ValueError(f"provider {name} needs LUMI_{needed.upper()}")
        self.concurrency_limits  # noqa: B018 - parses, so a typo fails at start
        self.request_rates  # noqa: B018 - likewise
        if self.auth_mode == "jwks" and not self.jwks_url:
            raise ValueError("LUMI_AUTH_MODE=jwks needs LUMI_JWKS_URL")
        if self.auth_mode == "user-service" and not self.user_service_url:
            raise ValueError("LUMI_AUTH_MODE=user-service needs LUMI_USER_SERVICE_URL")
        if self.persisted_queries == "allowlist" and not self.persisted_queries_manifest:
            raise ValueError(
                "LUMI_PERSISTED_QUERIES=allowlist needs LUMI_PERSISTED_QUERIES_MANIFEST"
            )
        return self

    def chain(self, modality: str) -> list[str]:
        """The providers of `modality` (llm, image, model), in failover order."""
        value: str = getattr(self, _CHAINS[modality])
        return [name.strip() for name in value.split(",") if name.strip()]

    @property
    def concurrency_limits(self) -> dict[str, int]:
        limits: dict[str, int] = {}
        for pair in filter(None, (p.strip() for p in self.provider_concurrency.split(","))):
            vendor, _, limit = pair.partition("=")
            if not limit.strip().isdigit() or int(limit) < 1:
                raise ValueError(f"LUMI_PROVIDER_CONCURRENCY: {pair!r} is not vendor=limit")
            limits[vendor.strip()] = int(limit)
        return limits

    @property
    def request_rates(self) -> dict[str, float]:
        """Each rate-limited vendor's requests per second, per API action."""
        rates: dict[str, float] = {}
        for pair in filter(None, (p.strip() for p in self.provider_request_rates.split(","))):
            vendor, _, rate = pair.partition("=")
            try:
                value = float(rate)
            except ValueError:
                value = 0.0
            if not value > 0:
                raise ValueError(f"LUMI_PROVIDER_REQUEST_RATES: {pair!r} is not vendor=rate")
            rates[vendor.strip()] = value
        return rates

    def production_problems(self) -> list[str]:
        """What makes these settings unsafe for production, each with the setting to change.

        Empty outside production, and for whatever `production_allow` names.
        """
        if self.env != "production":
            return []
        allowed = {item.strip() for item in self.production_allow.split(",")}
        checks = {
            "dev-secret": (
                (self.auth_mode == "hs256" or self.storage_backend == "local")
                and (
                    self.jwt_secret.get_secret_value() == DEV_JWT_SECRET
                    or len(self.jwt_secret.get_secret_value()) < 32
                ),
                "LUMI_JWT_SECRET is the development secret or shorter than 32 bytes",
            ),
            "sqlite": (
                self.resolved_database_url.startswith("sqlite"),
                "LUMI_DATABASE_URL is SQLite: set a mysql+aiomysql:// URL",
            ),
            "embedded-broker": (
                self.broker == "embedded",
                "LUMI_BROKER is embedded: set it to redis and run `lumi worker`",
            ),
            "embedded-bus": (
                self.bus == "embedded",
                "LUMI_BUS is embedded: set it to redis so every API instance gets events",
            ),
            "local-storage": (
                self.storage_backend == "local",
                "LUMI_STORAGE_BACKEND is local: set it to s3 and name the bucket (LUMI_S3_*)",
            ),
        }
        return [
            f"{message} (or allow it with LUMI_PRODUCTION_ALLOW={name})"
            for name, (unsafe, message) in checks.items()
            if unsafe and name not in allowed
        ]

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'lumi.db').resolve()}"

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor."""
        values = [self.hunyuan_secret_id]
        for value in self.__dict__.values():
            if isinstance(value, SecretStr):
                values.append(value.get_secret_value())
        return [value for value in values if value]

    @property
    def rate_limits(self) -> tuple[int, int]:
        """(per user, per address) operations per minute; 0: no limit."""
        production = self.env == "production"
        user, address = self.rate_limit_user_per_minute, self.rate_limit_ip_per_minute
        return (
            user if user is not None else (600 if production else 0),
            address if address is not None else (1200 if production else 0),
        )

    @property
    def uses_redis(self) -> bool:
        """Processes share Redis: limits and caches that must hold across them live there."""
        return self.broker == "redis" or self.bus == "redis"

    @property
    def graphiql_enabled(self) -> bool:
        return self.graphiql if self.graphiql is not None else self.env != "production"

    @property
    def studio_enabled(self) -> bool:
        return self.studio if self.studio is not None else self.env != "production"

    @property
    def trusted_proxy_list(self) -> list[str]:
        return _comma_list(self.trusted_proxies)

    @property
    def metrics_operation_name_list(self) -> list[str]:
        return _comma_list(self.metrics_operation_names)

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def introspection_enabled(self) -> bool:
        return self.introspection if self.introspection is not None else self.env != "production"

    @property
    def high_priority_role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.high_priority_roles.split(",") if r.strip())

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def provider_work_dir(self) -> Path:
        return self.data_dir / "provider-work"
