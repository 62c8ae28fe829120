-- Every UTC hour's totals per model and upstream, and failures in the per-user daily rollups
-- (see the Postgres migration 0010). The hour is text, as in usage_hourly.
CREATE TABLE usage_by_hour (
    hour TEXT NOT NULL,
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
CREATE UNIQUE INDEX usage_by_hour_identity ON usage_by_hour (hour, model, COALESCE(upstream_id, 0));

ALTER TABLE usage_daily ADD COLUMN errors INTEGER NOT NULL DEFAULT 0;

-- Events recorded before this migration are rolled up once, here.
INSERT INTO usage_by_hour (hour, model, upstream_id, requests, input_tokens, cached_tokens,
    output_tokens, reasoning_tokens, cost_micros, estimated, errors)
SELECT hour, model, upstream_id, SUM(requests), SUM(input_tokens), SUM(cached_tokens),
    SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_micros), SUM(estimated), SUM(errors)
FROM usage_hourly
GROUP BY 1, 2, 3;

-- Failures recorded before this migration are counted once, here.
UPDATE usage_daily SET errors = h.errors
FROM (
    SELECT substr(hour, 1, 10) AS day, user_id, model, SUM(errors) AS errors
    FROM usage_hourly
    GROUP BY 1, 2, 3
) AS h
WHERE usage_daily.day = h.day AND usage_daily.user_id = h.user_id
    AND usage_daily.model = h.model AND h.errors <> 0;
