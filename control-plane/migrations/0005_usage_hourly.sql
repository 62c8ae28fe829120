-- Per-hour rollups of the ledger, by key and upstream as well as user and model, written in the
-- same transaction as the events they count (only events newly inserted), like usage_daily.
-- They answer spending caps over rolling windows and charts of the last hours.
CREATE TABLE usage_hourly (
    -- Start of the UTC hour.
    hour TIMESTAMPTZ NOT NULL,
    key_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    model TEXT NOT NULL,
    -- NULL for events that reached no upstream.
    upstream_id BIGINT,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    -- Events whose usage was estimated rather than reported.
    estimated BIGINT NOT NULL,
    -- Events whose status is neither completed nor incomplete.
    errors BIGINT NOT NULL
);

-- A row's identity. upstream_id is nullable, so it cannot be in a primary key, and a unique
-- index treats NULLs as distinct: no upstream is keyed as 0, which no upstream id is (they
-- start at 1). Ingest names this expression in its ON CONFLICT.
CREATE UNIQUE INDEX usage_hourly_identity
    ON usage_hourly (hour, key_id, user_id, model, COALESCE(upstream_id, 0));
-- "Spend of key K since hour H".
CREATE INDEX usage_hourly_key ON usage_hourly (key_id, hour);

-- Events recorded before this migration are rolled up once, here.
INSERT INTO usage_hourly (hour, key_id, user_id, model, upstream_id, requests, input_tokens,
    cached_tokens, output_tokens, reasoning_tokens, cost_micros, estimated, errors)
SELECT date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', key_id, user_id,
    model, upstream_id, COUNT(*), SUM(input_tokens), SUM(cached_tokens), SUM(output_tokens),
    SUM(reasoning_tokens), SUM(cost_micros), COUNT(*) FILTER (WHERE estimated),
    COUNT(*) FILTER (WHERE status NOT IN ('completed', 'incomplete'))
FROM usage_events
GROUP BY 1, 2, 3, 4, 5;
