-- Day aggregates become Arrow columns whose text dimensions (user, api key, model, provider) are integer codes into
-- one global, append-only dictionary: a code never changes meaning, so any process can read any day's columns once
-- its copy of the dictionary has caught up (codes only ever grow). Day payloads carry a layout version of their own,
-- so rows written in the previous layout are read as misses and rewritten: no purge is needed.
CREATE TABLE IF NOT EXISTS litemaas_cache.dimension_values (
    code      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dimension text NOT NULL,
    value     text NOT NULL,
    UNIQUE (dimension, value)
);
