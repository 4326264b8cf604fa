"""Typed settings, read once from the environment with pydantic-settings."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated
from urllib.parse import quote, urlsplit

import psycopg
from pydantic import (
    AliasChoices,
    Field,
    PositiveInt,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import parse_url

from .errors import ConfigurationError
from .redaction import Redactor
from .redis_tier.connection import SENTINEL_SCHEMES, SentinelUrlError, is_sentinel_url, parse_sentinel_url
from .vocabulary import LogFormat, ServiceScope

PositiveSeconds = Annotated[int, Field(gt=0)]
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", *SENTINEL_SCHEMES)
_REDIS_DB_PATH = re.compile(r"^(/[0-9]*)?$")
MIN_JWT_SECRET_CHARS = 32
MIN_ADMIN_KEY_CHARS = 16


class Settings(BaseSettings):
    """Every setting of the cache, the API and the operator, one field per environment variable."""

    # No setting means anything as inf or nan (an infinite lock or timeout overflows where it is used).
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, allow_inf_nan=False)

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
    db_pool_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        validation_alias="DB_POOL_TIMEOUT_SECONDS",
        description="How long a read waits for a pooled connection before it is answered 503 (retry later).",
    )
    db_pool_max_waiting: int = Field(
        default=64,
        ge=1,
        le=100_000,
        validation_alias="DB_POOL_MAX_WAITING",
        description="Reads that may queue for a pooled connection; beyond that, further ones get 503 at once.",
    )
    db_statement_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        validation_alias="DB_STATEMENT_TIMEOUT_SECONDS",
        description="PostgreSQL statement_timeout of this process's sessions (both databases).",
    )
    db_lock_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        le=86400,
        validation_alias="DB_LOCK_TIMEOUT_SECONDS",
        description="PostgreSQL lock_timeout: the longest wait for another process's fill or purge of a day.",
    )

    redis_enabled: bool = Field(default=True, validation_alias="REDIS_ENABLED")
    redis_url: SecretStr | None = Field(
        default=None,
        validation_alias="REDIS_URL",
        description=(
            "redis://, rediss:// (TLS) URL, or redis+sentinel://[:password@]host:26379[,host:port...]/master[/db] "
            "(rediss+sentinel:// for TLS; ?sentinel_password= for sentinels that require AUTH); "
            "overrides REDIS_HOST/PORT/PASSWORD/DB."
        ),
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
    freshness_days: int = Field(
        default=7,
        ge=0,
        le=366,
        validation_alias="CACHE_FRESHNESS_DAYS",
        description="Past days whose source rows are fingerprinted to catch late rows (0: no check).",
    )
    freshness_check_minutes: float = Field(
        default=10.0,
        gt=0,
        le=1440,
        validation_alias="CACHE_FRESHNESS_CHECK_MINUTES",
        description="Reads check those fingerprints at most this often (every warm checks them too).",
    )
    stampede_lock_seconds: float = Field(default=30.0, gt=0, validation_alias="CACHE_LOCK_SECONDS")
    stampede_wait_seconds: float = Field(default=10.0, ge=0, validation_alias="CACHE_LOCK_WAIT_SECONDS")

    max_range_days: int = Field(
        default=90,
        ge=1,
        le=366,
        validation_alias=AliasChoices("ANALYTICS_MAX_RANGE_DAYS", "ADMIN_ANALYTICS_MAX_ANALYTICS_DAYS"),
        description="Longest range of an analytics document or breakdown (LiteMaaS's name works too).",
    )
    max_export_days: int = Field(
        default=365,
        ge=1,
        le=366,
        validation_alias="ADMIN_ANALYTICS_MAX_EXPORT_DAYS",
        description="Longest range of an export (LiteMaaS's setting).",
    )
    currency_code: str = Field(
        default="USD",
        pattern=r"^[A-Z]{3}$",
        validation_alias="CURRENCY_CODE",
        description="ISO 4217 code of LiteLLM's spend, named in the export's cost column (not converted).",
    )
    trend_stable_percent: float = Field(
        default=1.0,
        ge=0,
        validation_alias="ADMIN_ANALYTICS_TREND_STABILITY_THRESHOLD",
        description="A trend whose change is within this many percent is 'stable' (LiteMaaS's setting).",
    )
    trend_precision: int = Field(
        default=2,
        ge=0,
        le=10,
        validation_alias="ADMIN_ANALYTICS_TREND_PRECISION",
        description="Decimals of a trend's percentageChange (LiteMaaS's setting).",
    )
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
    local_results_mib: int = Field(
        default=64,
        ge=0,
        le=65536,
        validation_alias="CACHE_LOCAL_RESULTS_MIB",
        description="Memory each process may keep of result bodies read from Redis, as stored (0: none).",
    )
    chunk_days: int = Field(
        default=7,
        ge=1,
        le=366,
        validation_alias="ANALYTICS_CHUNK_DAYS",
        description="Days read and folded at a time by a computation: bounds its memory, whatever the range.",
    )

    warm_max_concurrent: int = Field(
        default=1,
        ge=1,
        le=16,
        validation_alias="WARM_MAX_CONCURRENT",
        description="Warms run at once per process, whatever the number of CacheWarmPolicies; the rest queue.",
    )
    operator_max_retries: int = Field(
        default=40,
        ge=1,
        le=10_000,
        validation_alias="OPERATOR_MAX_RETRIES",
        description="Retries of a CacheInvalidation whose purge keeps failing before it is marked Failed.",
    )
    operator_retry_seconds: float = Field(
        default=15.0,
        gt=0,
        validation_alias="OPERATOR_RETRY_SECONDS",
        description="The operator retries a temporarily failed warm or invalidation after this long.",
    )

    log_format: LogFormat = Field(
        default="text",
        validation_alias="LOG_FORMAT",
        description="text, or json: one JSON object per line (time, level, logger, message; request_id in the API).",
    )

    operator_priority: int | None = Field(
        default=None,
        ge=0,
        validation_alias="OPERATOR_PRIORITY",
        description="kopf peering priority of this replica; default: random, so replicas never tie.",
    )
    metrics_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        validation_alias="METRICS_PORT",
        description="Port of the operator's Prometheus /metrics endpoint (the API serves /metrics on its own port); "
        "0 turns it off.",
    )

    api_token: SecretStr | None = Field(
        default=None,
        validation_alias="API_TOKEN",
        description="Service token of application instances calling the HTTP API; what it may do is API_TOKEN_SCOPE.",
    )
    api_token_scope: ServiceScope = Field(
        default="read",
        validation_alias="API_TOKEN_SCOPE",
        description="read: the service token reads usage; admin: it may also refresh, rebuild and invalidate.",
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias="JWT_SECRET",
        description="LiteMaaS's JWT_SECRET: the HTTP API accepts the HS256/384/512 JWTs LiteMaaS signs with it.",
    )
    admin_api_keys: SecretStr | None = Field(
        default=None,
        validation_alias="ADMIN_API_KEYS",
        description="LiteMaaS's ADMIN_API_KEYS: comma-separated admin API keys (ltm_admin_...) the HTTP API accepts.",
    )
    admin_analytics_rate_limit: PositiveInt = Field(
        default=10,
        validation_alias="ADMIN_ANALYTICS_RATE_LIMIT",
        description="Requests per minute per caller to analytics, breakdowns, filter options, metrics and refresh.",
    )
    admin_export_rate_limit: PositiveInt = Field(
        default=5, validation_alias="ADMIN_EXPORT_RATE_LIMIT", description="Exports per minute per caller."
    )
    admin_cache_rebuild_limit: PositiveInt = Field(
        default=1,
        validation_alias="ADMIN_CACHE_REBUILD_LIMIT",
        description="Cache rebuilds and invalidations per 5 minutes per caller.",
    )

    @field_validator("api_token", "jwt_secret", "admin_api_keys", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty variable (an optional Secret key rendered as "") means the credential is not configured."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("jwt_secret")
    @classmethod
    def _long_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_JWT_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_JWT_SECRET_CHARS} characters (an HMAC key of 256 bits or more)")
        return value

    @field_validator("admin_api_keys")
    @classmethod
    def _admin_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        keys = _split_keys(value.get_secret_value())
        if not keys:
            raise ValueError("lists no key (expected comma-separated keys)")
        for position, key in enumerate(keys):
            if len(key) < MIN_ADMIN_KEY_CHARS:
                raise ValueError(f"key {position + 1} is shorter than {MIN_ADMIN_KEY_CHARS} characters")
        return value

    @field_validator("database_url", "litellm_database_url")
    @classmethod
    def _postgres_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        text = "" if value is None else value.get_secret_value().strip()
        if value is not None and not (text.startswith(POSTGRES_SCHEMES) or "=" in text):
            raise ValueError("must be a PostgreSQL URL (postgresql://...) or a libpq key=value string")
        try:
            # Parsed now, so that a malformed one fails here, naming the variable, and not later in a connection
            # attempt whose error quotes the piece libpq choked on (a piece of the password, often).
            params = psycopg.conninfo.conninfo_to_dict(text)
        except psycopg.Error:
            raise ValueError(
                "is not a valid PostgreSQL connection string: quote a key=value value holding spaces ('...'), "
                "percent-encode special characters in a URL"
            ) from None
        # libpq takes any port text here and fails only on connecting, after the pool's retries, naming no variable.
        if not all(_is_port(port) for port in str(params.get("port", "5432")).split(",")):
            raise ValueError("names a port that is not a number in 1..65535")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        text = value.get_secret_value().strip()
        if not text.lower().startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(REDIS_SCHEMES)}")
        if is_sentinel_url(text):
            try:
                parse_sentinel_url(text)
            except SentinelUrlError as exc:
                raise ValueError(f"is not a valid Redis Sentinel URL: it {exc}") from None
            return value
        try:
            parse_url(text)  # type: ignore[no-untyped-call]  # redis-py's own parser; its errors quote the URL
        except ValueError:
            raise ValueError(
                "is not a valid Redis URL: percent-encode special characters (: @ / ? #) in the password"
            ) from None
        # redis-py ignores a database path that is not a number, and so would use database 0.
        if text.startswith(("redis://", "rediss://")) and not _REDIS_DB_PATH.match(urlsplit(text).path):
            raise ValueError("names a database that is not a number (redis://host:6379/0)")
        return value

    @field_validator("redis_cluster")
    @classmethod
    def _cluster_without_sentinel(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("redis_url")
        if value and isinstance(url, SecretStr) and is_sentinel_url(url.get_secret_value()):
            raise ValueError("cannot be combined with a redis+sentinel:// REDIS_URL (Sentinel serves one master)")
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

    @property
    def admin_keys(self) -> tuple[str, ...]:
        """The keys of ADMIN_API_KEYS (none when it is not set)."""
        return () if self.admin_api_keys is None else _split_keys(self.admin_api_keys.get_secret_value())


def _is_port(text: str) -> bool:
    return text.isdigit() and 1 <= int(text) <= 65535


def _split_keys(text: str) -> tuple[str, ...]:
    return tuple(key.strip() for key in text.split(",") if key.strip())


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
