"""One Settings object, read from `LUMI_*` environment variables (or a `.env` file).

Its defaults are the embedded mode: SQLite, an in-process broker and bus, a local
storage directory and the offline `local` providers. Nothing else reads `os.environ`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "lumi-development-secret-change-me"  # noqa: S105 - the known dev default


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
    graphiql: bool = True

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
    s3_prefix: str = ""
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_create_bucket: bool = Field(
        default=False, description="Create the bucket at start if missing (development)."
    )
    file_url_ttl_seconds: int = Field(default=3600, ge=10, le=7 * 24 * 3600)
    download_url_ttl_seconds: int = Field(default=300, ge=10, le=24 * 3600)

    # Queue and bus.
    broker: Literal["embedded", "redis"] = "embedded"
    bus: Literal["embedded", "redis"] = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = Field(
        default="lumi", pattern=r"^[A-Za-z0-9_.-]{1,40}$", description="Prefix of every Redis key"
    )
    worker_threads: int = Field(default=4, ge=1, le=64)
    worker_metrics_port: int = Field(
        default=9191, ge=0, le=65535, description="Where `lumi worker` serves /metrics; 0: off."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Auth: HS256 bearer tokens.
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_issuer: str = "lumi"
    jwt_audience: str = "lumi-gateway"
    dev_token_ttl_seconds: int = 30 * 24 * 3600

    # Providers.
    llm_provider: Literal["local"] = "local"
    image_provider: Literal["local"] = "local"
    model_provider: Literal["local"] = "local"
    local_latency_seconds: float = Field(default=0.5, ge=0, le=60)
    local_model_latency_seconds: float = Field(default=3.0, ge=0, le=600)
    image_size: int = Field(default=512, ge=64, le=2048)

    # Pipeline.
    model_poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    model_poll_max_attempts: int = Field(default=600, ge=1)

    # Subscriptions: how often a quiet subscription re-checks the event table.
    subscription_recheck_seconds: float = Field(default=2.0, gt=0, le=60)

    production_allow: str = Field(
        default="",
        description=(
            "Comma-separated embedded defaults production may keep anyway: "
            "dev-secret, sqlite, embedded-broker, embedded-bus, local-storage."
        ),
    )

    def production_problems(self) -> list[str]:
        """What makes these settings unsafe for production, each with the setting to change.

        Empty outside production, and for whatever `production_allow` names.
        """
        if self.env != "production":
            return []
        allowed = {item.strip() for item in self.production_allow.split(",")}
        checks = {
            "dev-secret": (
                self.jwt_secret.get_secret_value() == DEV_JWT_SECRET
                or len(self.jwt_secret.get_secret_value()) < 32,
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

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def provider_work_dir(self) -> Path:
        return self.data_dir / "provider-work"
