-- Per-hour rollups of the ledger (see the Postgres migration 0005). The hour is stored as
-- sqlx stores every timestamp here, UTC RFC 3339 text: YYYY-MM-DDTHH:00:00+00:00.
CREATE TABLE usage_hourly (
    hour TEXT NOT NULL,
    key_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    upstream_id INTEGER,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    errors INTEGER NOT NULL
);

-- A row's identity: no upstream is keyed as 0, which no upstream id is (as on Postgres).
CREATE UNIQUE INDEX usage_hourly_identity
    ON usage_hourly (hour, key_id, user_id, model, COALESCE(upstream_id, 0));
CREATE INDEX usage_hourly_key ON usage_hourly (key_id, hour);

-- Events recorded before this migration are rolled up once, here.
INSERT INTO usage_hourly (hour, key_id, user_id, model, upstream_id, requests, input_tokens,
    cached_tokens, output_tokens, reasoning_tokens, cost_micros, estimated, errors)
SELECT substr(started_at, 1, 13) || ':00:00+00:00', key_id, user_id, model, upstream_id,
    COUNT(*), SUM(input_tokens), SUM(cached_tokens), SUM(output_tokens), SUM(reasoning_tokens),
    SUM(cost_micros), SUM(CASE WHEN estimated THEN 1 ELSE 0 END),
    SUM(CASE WHEN status IN ('completed', 'incomplete') THEN 0 ELSE 1 END)
FROM usage_events
GROUP BY 1, 2, 3, 4, 5;
