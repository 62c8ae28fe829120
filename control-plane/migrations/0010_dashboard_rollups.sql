-- What the console's dashboard reads: every UTC hour's totals per model and upstream over all
-- users (48 hours are a few hundred rows, where the per-key hourly rollups hold thousands an
-- hour), and failures counted in the per-user daily rollups too, as in every other rollup.
CREATE TABLE usage_by_hour (
    -- Start of the UTC hour.
    hour TIMESTAMPTZ NOT NULL,
    model TEXT NOT NULL,
    -- NULL for events that reached no upstream.
    upstream_id BIGINT,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    estimated BIGINT NOT NULL,
    errors BIGINT NOT NULL
);
-- No upstream is keyed as 0, as in usage_hourly.
CREATE UNIQUE INDEX usage_by_hour_identity ON usage_by_hour (hour, model, COALESCE(upstream_id, 0));

ALTER TABLE usage_daily ADD COLUMN errors BIGINT NOT NULL DEFAULT 0;

-- The hourly rollups hold every event recorded so far (retention keeps rollups): both are
-- filled from them.
-- Events recorded before this migration are rolled up once, here.
INSERT INTO usage_by_hour (hour, model, upstream_id, requests, input_tokens, cached_tokens,
    output_tokens, reasoning_tokens, cost_micros, estimated, errors)
SELECT hour, model, upstream_id, SUM(requests), SUM(input_tokens), SUM(cached_tokens),
    SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_micros), SUM(estimated), SUM(errors)
FROM usage_hourly
GROUP BY 1, 2, 3;

-- Failures recorded before this migration are counted once, here.
UPDATE usage_daily d SET errors = h.errors
FROM (
    SELECT to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, user_id, model,
        SUM(errors) AS errors
    FROM usage_hourly
    GROUP BY 1, 2, 3
) h
WHERE d.day = h.day AND d.user_id = h.user_id AND d.model = h.model AND h.errors <> 0;
