-- The persistent tier: one row per UTC day with that day's aggregates at (user, api key, model, provider) grain.
CREATE TABLE IF NOT EXISTS litemaas_cache.daily_usage (
    day          date PRIMARY KEY,
    aggregates   jsonb,                              -- NULL when purged: the day must be recomputed
    is_complete  boolean NOT NULL DEFAULT false,     -- true once the day is in the past (beyond the grace period)
    row_count    integer NOT NULL DEFAULT 0,
    requests     bigint NOT NULL DEFAULT 0,
    total_tokens bigint NOT NULL DEFAULT 0,
    spend        double precision NOT NULL DEFAULT 0,
    version      bigint NOT NULL DEFAULT 1,          -- incremented by every rewrite and every invalidation
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS daily_usage_incomplete_idx
    ON litemaas_cache.daily_usage (day) WHERE NOT is_complete;
