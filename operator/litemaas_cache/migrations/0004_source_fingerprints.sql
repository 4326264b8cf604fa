-- Each cached day remembers a fingerprint of the source rows it was computed from (row count, requests, spend and
-- the latest updated_at): rows LiteLLM writes late for a past day change it, and the day is then recomputed.
-- Rows cached before this migration have none, so they are recomputed once if they fall in the checked window.
ALTER TABLE litemaas_cache.daily_usage ADD COLUMN IF NOT EXISTS source_fingerprint text;
