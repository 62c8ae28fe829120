-- Two more rollups, written in the ledger transaction like usage_daily and usage_hourly, so a
-- usage summary without a key or a time filter reads a few thousand rows, not the quarter
-- million per-day rows of a large ledger (or its millions of events).
-- Every user's totals per model, all time.
CREATE TABLE usage_by_user (
    user_id BIGINT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    estimated BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    PRIMARY KEY (user_id, model)
);

-- Every UTC day's totals (YYYY-MM-DD) per model and upstream, over all users.
CREATE TABLE usage_by_day (
    day TEXT NOT NULL,
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
CREATE UNIQUE INDEX usage_by_day_identity ON usage_by_day (day, model, COALESCE(upstream_id, 0));

-- "One user's days" (`usage summary --by day --user`, a key holder's history) without
-- reading every user's.
CREATE INDEX usage_daily_user ON usage_daily (user_id, day);

-- The hourly rollups hold every event recorded so far (retention keeps rollups): both new ones
-- are filled from them.
-- Events recorded before this migration are rolled up once, here.
INSERT INTO usage_by_user (user_id, model, requests, input_tokens, cached_tokens,
    output_tokens, reasoning_tokens, cost_micros, estimated, errors)
SELECT user_id, model, SUM(requests), SUM(input_tokens), SUM(cached_tokens), SUM(output_tokens),
    SUM(reasoning_tokens), SUM(cost_micros), SUM(estimated), SUM(errors)
FROM usage_hourly
GROUP BY 1, 2;

INSERT INTO usage_by_day (day, model, upstream_id, requests, input_tokens, cached_tokens,
    output_tokens, reasoning_tokens, cost_micros, estimated, errors)
SELECT to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD'), model, upstream_id, SUM(requests),
    SUM(input_tokens), SUM(cached_tokens), SUM(output_tokens), SUM(reasoning_tokens),
    SUM(cost_micros), SUM(estimated), SUM(errors)
FROM usage_hourly
GROUP BY 1, 2, 3;
