-- Day aggregates move from jsonb to the cache's own encoding (orjson, zstd-compressed; see codec.py), the same bytes
-- Redis holds. PostgreSQL's jsonb input and output dominated cold reads (about 7 s for 60 days of 12k rows each).
-- Cached days cannot be converted in SQL, so they are purged: the aggregates are dropped and every version bumped,
-- exactly as an invalidation does, and the next read recomputes them from LiteLLM's table.
UPDATE litemaas_cache.daily_usage
SET is_complete = false, row_count = 0, requests = 0, total_tokens = 0, spend = 0,
    version = version + 1, updated_at = now()
WHERE aggregates IS NOT NULL;

ALTER TABLE litemaas_cache.daily_usage ALTER COLUMN aggregates TYPE bytea USING NULL;
COMMENT ON COLUMN litemaas_cache.daily_usage.aggregates IS
    'codec-encoded DayUsage.to_payload(): day, complete, version and the rows as dictionary-coded columns; '
    'byte for byte what the Redis tier stores for the day';
