-- Caching of idempotent calls. A call answered from the cache (or by an identical call in
-- flight) ran no tool: 1 here.
ALTER TABLE tool_calls ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;

-- The `store` cache backend: one row per cache key (a hash of the tool, its version and
-- its resolved arguments). `value` is the cached outcome as JSON; `expires_at` (epoch ms)
-- is when it stops answering.
CREATE TABLE tool_cache (
    key         TEXT PRIMARY KEY,
    tool        TEXT NOT NULL,
    value       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX tool_cache_expires ON tool_cache (expires_at);
