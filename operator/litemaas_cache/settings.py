"""Typed settings, read once from the environment with pydantic-settings."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated
from urllib.parse import quote

import psycopg
from pydantic import (
    AliasChoices,
    Field,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import parse_url

from .errors import ConfigurationError
from .redaction import Redactor

PositiveSeconds = Annotated[int, Field(gt=0)]
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class Settings(BaseSettings):
    """Every setting of the cache, the API and the operator, one field per environment variable."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: SecretStr = Field(
        validation_alias="DATABASE_URL",
        description="PostgreSQL holding the daily cache and LiteMaaS's users / api_keys tables.",
    )
    litellm_database_url: SecretStr | None = Field(
        default=None,
        validation_alias="LITELLM_DATABASE_URL",
        description='PostgreSQL holding LiteLLM\'s "LiteLLM_DailyUserSpend"; defaults to DATABASE_URL.',
    )
    db_pool_max_size: PositiveInt = Field(default=10, validation_alias="DB_POOL_MAX_SIZE")

    redis_enabled: bool = Field(default=True, validation_alias="REDIS_ENABLED")
    redis_url: SecretStr | None = Field(
        default=None,
        validation_alias="REDIS_URL",
        description="redis://, rediss:// (TLS) URL; overrides REDIS_HOST/PORT/PASSWORD/DB.",
    )
    redis_host: str = Field(default="127.0.0.1", validation_alias="REDIS_HOST")
    redis_port: int = Field(default=6379, ge=1, le=65535, validation_alias="REDIS_PORT")
    redis_password: SecretStr | None = Field(default=None, validation_alias="REDIS_PASSWORD")
    redis_db: int = Field(default=0, ge=0, validation_alias="REDIS_DB")
    redis_cluster: bool = Field(
        default=False, validation_alias="REDIS_CLUSTER", description="Connect to a Redis Cluster."
    )
    redis_key_prefix: str = Field(default="litemaas:", min_length=1, max_length=64, validation_alias="REDIS_KEY_PREFIX")
    redis_socket_timeout: float = Field(default=0.5, gt=0, validation_alias="REDIS_SOCKET_TIMEOUT")
    redis_breaker_failures: PositiveInt = Field(default=3, validation_alias="REDIS_BREAKER_FAILURES")
    redis_breaker_reset_seconds: float = Field(default=2.0, gt=0, validation_alias="REDIS_BREAKER_RESET_SECONDS")
    version_resync_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias="CACHE_VERSION_RESYNC_SECONDS",
        description="How often each process re-raises Redis's day-version mirror from PostgreSQL.",
    )
    compress_threshold: int = Field(
        default=1024,
        ge=0,
        validation_alias="CACHE_COMPRESS_THRESHOLD",
        description="Redis result entries of at least this many bytes are zstd-compressed (day payloads always are).",
    )

    ttl_historical_day: PositiveSeconds = Field(default=30 * 86400, validation_alias="CACHE_TTL_HISTORICAL_DAY")
    ttl_current_day: PositiveSeconds = Field(default=5 * 60, validation_alias="CACHE_TTL_CURRENT_DAY")
    ttl_analytics: PositiveSeconds = Field(default=10 * 60, validation_alias="CACHE_TTL_ANALYTICS")
    ttl_breakdown: PositiveSeconds = Field(default=15 * 60, validation_alias="CACHE_TTL_BREAKDOWN")
    yesterday_grace_seconds: int = Field(
        default=2 * 3600,
        ge=0,
        validation_alias="CACHE_YESTERDAY_GRACE_SECONDS",
        description="After UTC midnight, yesterday is still refreshed like today for this long.",
    )
    stampede_lock_seconds: float = Field(default=30.0, gt=0, validation_alias="CACHE_LOCK_SECONDS")
    stampede_wait_seconds: float = Field(default=10.0, ge=0, validation_alias="CACHE_LOCK_WAIT_SECONDS")

    max_range_days: PositiveInt = Field(default=90, validation_alias=AliasChoices("ANALYTICS_MAX_RANGE_DAYS"))
    max_filter_ids: PositiveInt = Field(default=1000, validation_alias="ANALYTICS_MAX_FILTER_IDS")
    max_concurrent_computations: int = Field(
        default=2,
        ge=1,
        le=64,
        validation_alias="ANALYTICS_MAX_CONCURRENT",
        description="Analytics computations (cache misses) run at once per process; further ones queue.",
    )
    local_frames_mib: int = Field(
        default=96,
        ge=0,
        le=65536,
        validation_alias="CACHE_LOCAL_FRAMES_MIB",
        description="Memory each process may keep of decoded days read from the cache tiers (0: none).",
    )
    chunk_days: int = Field(
        default=7,
        ge=1,
        le=366,
        validation_alias="ANALYTICS_CHUNK_DAYS",
        description="Days read and folded at a time by a computation: bounds its memory, whatever the range.",
    )

    operator_retry_seconds: float = Field(
        default=15.0,
        gt=0,
        validation_alias="OPERATOR_RETRY_SECONDS",
        description="The operator retries a temporarily failed warm or invalidation after this long.",
    )

    operator_priority: int | None = Field(
        default=None,
        ge=0,
        validation_alias="OPERATOR_PRIORITY",
        description="kopf peering priority of this replica; default: random, so replicas never tie.",
    )

    api_token: SecretStr | None = Field(
        default=None, validation_alias="API_TOKEN", description="Bearer token the HTTP API requires."
    )

    @field_validator("database_url", "litellm_database_url")
    @classmethod
    def _postgres_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        text = "" if value is None else value.get_secret_value().strip()
        if value is not None and not (text.startswith(POSTGRES_SCHEMES) or "=" in text):
            raise ValueError("must be a PostgreSQL URL (postgresql://...) or a libpq key=value string")
        try:
            # Parsed now, so that a malformed one fails here, naming the variable, and not later in a connection
            # attempt whose error quotes the piece libpq choked on (a piece of the password, often).
            psycopg.conninfo.conninfo_to_dict(text)
        except psycopg.Error:
            raise ValueError(
                "is not a valid PostgreSQL connection string: quote a key=value value holding spaces ('...'), "
                "percent-encode special characters in a URL"
            ) from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        text = value.get_secret_value().strip()
        if not text.startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(REDIS_SCHEMES)}")
        try:
            parse_url(text)  # type: ignore[no-untyped-call]  # redis-py's own parser; its errors quote the URL
        except ValueError:
            raise ValueError(
                "is not a valid Redis URL: percent-encode special characters (: @ / ? #) in the password"
            ) from None
        return value

    @model_validator(mode="after")
    def _litellm_defaults_to_database(self) -> Settings:
        if self.litellm_database_url is None:
            self.litellm_database_url = self.database_url
        return self

    @cached_property
    def redact(self) -> Redactor:
        """Redacts every secret of these settings from a message (see redaction.py)."""
        return Redactor.of(self)

    @cached_property
    def redis_dsn(self) -> str:
        """The Redis URL, built from the host/port/password/db settings when REDIS_URL is not set."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        auth = ""
        if self.redis_password is not None:
            auth = ":" + quote(self.redis_password.get_secret_value(), safe="") + "@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def litellm_dsn(self) -> str:
        assert self.litellm_database_url is not None
        return self.litellm_database_url.get_secret_value()

    @property
    def database_dsn(self) -> str:
        return self.database_url.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; a missing or invalid one raises ConfigurationError naming it."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            field = Settings.model_fields.get(name)
            if field is not None and isinstance(field.validation_alias, str):
                name = field.validation_alias
            problems.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None
