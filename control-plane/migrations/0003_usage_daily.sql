-- Per-day rollups of the ledger, written in the same transaction as the events they count
-- (only events newly inserted), so they always agree with usage_events.
CREATE TABLE usage_daily (
    -- UTC day, YYYY-MM-DD.
    day TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    -- Events whose usage was estimated rather than reported.
    estimated BIGINT NOT NULL,
    PRIMARY KEY (day, user_id, model)
);

-- Events recorded before this migration are rolled up once, here.
INSERT INTO usage_daily (day, user_id, model, requests, input_tokens, cached_tokens,
    output_tokens, reasoning_tokens, cost_micros, estimated)
SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), user_id, model, COUNT(*),
    SUM(input_tokens), SUM(cached_tokens), SUM(output_tokens), SUM(reasoning_tokens),
    SUM(cost_micros), COUNT(*) FILTER (WHERE estimated)
FROM usage_events
GROUP BY 1, 2, 3;
