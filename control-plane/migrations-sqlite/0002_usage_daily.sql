-- Per-day rollups of the ledger (see the Postgres migration 0003).
CREATE TABLE usage_daily (
    day TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    PRIMARY KEY (day, user_id, model)
);

-- Events recorded before this migration are rolled up once, here.
INSERT INTO usage_daily (day, user_id, model, requests, input_tokens, cached_tokens,
    output_tokens, reasoning_tokens, cost_micros, estimated)
SELECT substr(started_at, 1, 10), user_id, model, COUNT(*), SUM(input_tokens),
    SUM(cached_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_micros),
    SUM(CASE WHEN estimated THEN 1 ELSE 0 END)
FROM usage_events
GROUP BY 1, 2, 3;
