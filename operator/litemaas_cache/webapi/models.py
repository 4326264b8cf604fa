"""Every request and response of the HTTP API as pydantic models: LiteMaaS's admin usage contract (field names as
LiteMaaS sends them, camelCase with its few snake_case fields) plus our operator-side extras.

Requests are validated through these models; responses are built by analytics.py / stats.py / maintenance.py and
described here, and the OpenAPI document (openapi.py) is generated from these classes. Response models forbid
extra fields, so a test that validates an answer against the generated schema catches any drift between the two.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, RootModel, create_model

from ..analytics import DEFAULT_PAGE_LIMIT, DEFAULT_SORT, MAX_PAGE_LIMIT, MAX_PAGE_NUMBER, SORT_FIELDS
from ..dates import ISO_DAY
from ..filters import ID_PATTERN
from ..vocabulary import Dimension, ExportFormat, InvalidationTier


def _iso_day_text(value: Any) -> Any:
    """Only YYYY-MM-DD text is a date here (pydantic alone would also take timestamps and datetimes)."""
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not ISO_DAY.match(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_iso_day_text)]
SortOrder = Literal["asc", "desc"]
FilterIds = Annotated[
    list[Annotated[str, Field(pattern=ID_PATTERN.pattern, max_length=256)]],
    Field(default_factory=list, description="[] or absent: no filter."),
]


# --- requests ----------------------------------------------------------------------------------------------------


class Request(BaseModel):
    """A request: unknown properties are ignored, as LiteMaaS ignores them."""

    model_config = ConfigDict(extra="ignore")


class UsageFilterRequest(Request):
    """LiteMaaS's AdminUsageFilters: the body of analytics and of the three breakdowns."""

    startDate: IsoDate = Field(description="First day (UTC), inclusive.")
    endDate: IsoDate = Field(description="Last day (UTC), inclusive.")
    userIds: FilterIds
    modelIds: FilterIds
    providerIds: FilterIds
    apiKeyIds: FilterIds = Field(description="Key aliases (litellm_key_alias), or key hashes.")


class ExportRequest(UsageFilterRequest):
    """LiteMaaS's ExportQuery: the filters, and the file format."""

    format: ExportFormat = Field(default="csv", description="csv (text/csv) or json (application/json).")


class RangeQuery(Request):
    """LiteMaaS's FilterOptionsQuery."""

    startDate: IsoDate
    endDate: IsoDate


class RebuildCacheRequest(Request):
    """Both optional: the end defaults to today (UTC), the start to ANALYTICS_MAX_RANGE_DAYS before the end."""

    startDate: IsoDate | None = None
    endDate: IsoDate | None = None


def _distinct(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("must not repeat a value")
    return values


class InvalidateRequest(Request):
    startDate: IsoDate
    endDate: IsoDate
    tiers: Annotated[list[InvalidationTier], AfterValidator(_distinct)] = Field(
        default=["redis", "postgres"], min_length=1, max_length=2
    )


def _pagination_query(dimension: Dimension) -> type[Request]:
    """LiteMaaS's PaginationQuery, with the sortBy values of one breakdown."""
    sort_by: Any = Literal[SORT_FIELDS[dimension]]
    model: type[Request] = create_model(
        f"{dimension.capitalize()}BreakdownQuery",
        __base__=Request,
        page=(int, Field(default=1, ge=1, le=MAX_PAGE_NUMBER)),
        limit=(int, Field(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT)),
        sortBy=(sort_by, Field(default=DEFAULT_SORT)),
        sortOrder=(SortOrder, Field(default="desc")),
    )
    return model


PAGINATION_QUERIES: dict[Dimension, type[Request]] = {d: _pagination_query(d) for d in SORT_FIELDS}


# --- responses ---------------------------------------------------------------------------------------------------


class Response(BaseModel):
    """A response shape: every field is always sent, nothing else is."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


Count = Annotated[int, Field(ge=0)]
Cost = Annotated[float, Field(ge=0)]
Percent = Annotated[float, Field(ge=0, le=100)]


class Period(Response):
    startDate: dt.date
    endDate: dt.date


class TokenTotals(Response):
    total: Count
    prompt: Count
    completion: Count


class TotalCost(Response):
    total: Cost
    byProvider: dict[str, float]
    byModel: dict[str, float]
    byUser: dict[str, float] = Field(description="By userId (the Unknown User's is the zero UUID).")


class UserIdentity(Response):
    userId: str
    username: str
    email: str = Field(description='"" when LiteMaaS has none.')
    role: str


class SummaryNumbers(Response):
    requests: Count
    tokens: Count
    prompt_tokens: Count
    completion_tokens: Count
    cost: Cost


class UserSummary(SummaryNumbers, UserIdentity):
    pass


class ModelSummary(SummaryNumbers):
    modelId: str = Field(description="The model name, as LiteLLM records it.")
    modelName: str
    provider: str


class ApiKeySummary(Response):
    keyId: str = Field(description="The key hash LiteLLM records.")
    keyAlias: str = Field(description="LiteLLM's alias of the key, else its hash.")
    userId: str
    username: str
    requests: Count
    tokens: Count
    cost: Cost


class TopMetrics(Response):
    topUser: UserSummary | None = Field(description="Top by cost; never the Unknown User.")
    topModel: ModelSummary | None
    topApiKey: ApiKeySummary | None


class TrendData(Response):
    metric: str
    current: float
    previous: float
    percentageChange: float
    direction: Literal["up", "down", "stable"]


class Trends(Response):
    requestsTrend: TrendData
    costTrend: TrendData
    usersTrend: TrendData
    totalTokensTrend: TrendData
    promptTokensTrend: TrendData
    completionTokensTrend: TrendData


class DailyUsage(Response):
    date: dt.date
    requests: Count
    tokens: Count
    prompt_tokens: Count
    completion_tokens: Count
    cost: Cost


class DailyModelUsage(Response):
    date: dt.date
    models: list[ModelSummary]


class AnalyticsResponse(Response):
    """LiteMaaS's AnalyticsResponse; every filter, providerIds included, applies to every field."""

    period: Period
    totalUsers: Count = Field(
        description="LiteMaaS's users (those in userIds, when given) plus the Unknown User when it has requests."
    )
    activeUsers: Count = Field(description="Users with requests in the period, the Unknown User included.")
    totalRequests: Count
    totalTokens: TokenTotals
    totalCost: TotalCost
    successRate: Percent
    averageLatency: float = Field(description="Always 0: LiteLLM's daily table records no latency.")
    topMetrics: TopMetrics
    trends: Trends
    dailyUsage: list[DailyUsage]
    dailyModelUsage: list[DailyModelUsage]
    topModels: list[ModelSummary] = Field(max_length=10)
    topUsers: list[UserSummary] = Field(max_length=5)


class UserModelUsage(Response):
    modelId: str
    modelName: str
    provider: str
    requests: Count
    tokens: TokenTotals
    cost: Cost
    successRate: Percent


class UserApiKeyUsage(Response):
    keyId: str
    keyAlias: str
    requests: Count
    tokens: TokenTotals
    cost: Cost
    lastUsed: dt.datetime


class UserMetrics(Response):
    requests: Count
    tokens: TokenTotals
    cost: Cost
    models: list[UserModelUsage]
    apiKeys: list[UserApiKeyUsage]
    lastActive: dt.datetime | None = Field(description="UTC midnight of the last day with requests.")


class UserBreakdown(UserIdentity):
    metrics: UserMetrics


class RowMetrics(Response):
    requests: Count
    tokens: TokenTotals
    cost: Cost
    successRate: Percent


class ModelMetrics(RowMetrics):
    users: Count


class ModelBreakdown(Response):
    modelId: str
    modelName: str
    provider: str
    metrics: ModelMetrics


class ProviderMetrics(RowMetrics):
    models: Count
    users: Count


class ProviderBreakdown(Response):
    provider: str
    metrics: ProviderMetrics


class Pagination(Response):
    page: int = Field(ge=1, le=MAX_PAGE_NUMBER)
    limit: int = Field(ge=1, le=MAX_PAGE_LIMIT)
    total: Count
    totalPages: Count
    hasNext: bool
    hasPrevious: bool


class UserBreakdownPage(Response):
    data: list[UserBreakdown]
    pagination: Pagination


class ModelBreakdownPage(Response):
    data: list[ModelBreakdown]
    pagination: Pagination


class ProviderBreakdownPage(Response):
    data: list[ProviderBreakdown]
    pagination: Pagination


BREAKDOWN_PAGES: dict[Dimension, type[Response]] = {
    "user": UserBreakdownPage,
    "model": ModelBreakdownPage,
    "provider": ProviderBreakdownPage,
}


class ExportModelUsage(UserModelUsage):
    averageLatency: float = Field(description="Always 0: LiteLLM's daily table records no latency.")


class ExportUserMetrics(UserMetrics):
    models: list[ExportModelUsage]  # type: ignore[assignment]


class ExportUserRow(UserIdentity):
    """A by-user row as LiteMaaS's export writes it (its service's shape: models carry averageLatency)."""

    metrics: ExportUserMetrics


class ExportFilters(Response):
    """The range, and each id list the request sent (only those)."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=False)

    startDate: dt.date
    endDate: dt.date
    userIds: list[str] = Field(default_factory=list)
    modelIds: list[str] = Field(default_factory=list)
    providerIds: list[str] = Field(default_factory=list)
    apiKeyIds: list[str] = Field(default_factory=list)


class ExportMetadata(Response):
    exportedAt: dt.datetime
    breakdownType: Literal["user"]
    filters: ExportFilters
    recordCount: Count


class ExportDocument(Response):
    """The JSON export (format json; format csv answers text/csv with LiteMaaS's columns)."""

    metadata: ExportMetadata
    data: list[ExportUserRow]


class FilterModel(Response):
    id: str
    name: str
    provider: str


class FilterUser(Response):
    userId: str
    username: str
    email: str


class FilterOptionsResponse(Response):
    models: list[FilterModel]
    users: list[FilterUser]


class CacheMetrics(Response):
    cacheHits: Count
    cacheMisses: Count
    cacheRebuilds: Count
    lockAcquisitionSuccesses: Count
    lockAcquisitionFailures: Count
    gracePeriodApplications: Count
    cacheHitRate: float = Field(ge=0, le=1)
    lockContentionRate: float = Field(ge=0, le=1)


class RefreshTodayResponse(Response):
    message: str
    refreshedAt: dt.datetime
    status: Literal["success", "partial"] = Field(description="partial: Redis was unreachable during the purge.")


class RebuildCacheResponse(Response):
    message: str
    rebuiltCount: Count = Field(description="Days purged and computed again.")
    totalEntries: Count = Field(description="Cache entries written by the recomputation.")
    status: Literal["success", "partial"]


class ErrorResponse(Response):
    error: str
    code: str
    details: dict[str, Any] | None = None

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=False)


class Health(Response):
    status: Literal["ok"]


class PrometheusText(RootModel[str]):
    """Prometheus's text exposition format (what a scrape reads)."""


class PostgresPurge(Response):
    daysPurged: Count
    versionsBumped: Count


class RedisPurge(Response):
    keysDeleted: Count
    status: Literal["done", "unavailable", "disabled", "skipped"]


class InvalidationResponse(Response):
    startDate: dt.date
    endDate: dt.date
    tiers: list[InvalidationTier]
    postgres: PostgresPurge
    redis: RedisPurge
    complete: bool
    durationSeconds: float


class MemoryStats(Response):
    """What processes answered from their own memory: decoded days, and result bodies held as Redis stores them."""

    dayHits: Count
    resultHits: Count


class RedisStats(Response):
    enabled: bool
    available: bool
    breaker: str
    failure: str | None
    hits: Count
    misses: Count
    hitRate: float | None
    dayHits: Count
    dayMisses: Count
    keyCount: int | None
    memoryUsedBytes: int | None


class PostgresStats(Response):
    dayHits: Count
    dayMisses: Count
    hitRate: float | None
    daysComputedFromSource: Count


class CacheStats(Response):
    counterScope: Literal["shared", "process"]
    hitRate: float | None
    requests: Count
    computations: Count
    memory: MemoryStats
    redis: RedisStats
    postgres: PostgresStats
    invalidations: Count


class OpenApiDocument(BaseModel):
    """This API's OpenAPI 3.1 document."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]
