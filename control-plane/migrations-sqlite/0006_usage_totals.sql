-- Every user's totals per model, and every UTC day's per model and upstream (see the Postgres
-- migration 0007).
CREATE TABLE usage_by_user (
    user_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (user_id, model)
);

CREATE TABLE usage_by_day (
    day TEXT NOT NULL,
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
CREATE UNIQUE INDEX usage_by_day_identity ON usage_by_day (day, model, COALESCE(upstream_id, 0));

-- "One user's days" (`usage summary --by day --user`, a key holder's history) without
-- reading every user's.
CREATE INDEX usage_daily_user ON usage_daily (user_id, day);

-- From usage_hourly, which holds every event recorded so far (retention keeps rollups).
-- Events recorded before this migration are rolled up once, here.
INSERT INTO usage_by_user (user_id, model, requests, input_tokens, cached_tokens,
    output_tokens, reasoning_tokens, cost_micros, estimated, errors)
SELECT user_id, model, SUM(requests), SUM(input_tokens), SUM(cached_tokens), SUM(output_tokens),
    SUM(reasoning_tokens), SUM(cost_micros), SUM(estimated), SUM(errors)
FROM usage_hourly
GROUP BY 1, 2;

INSERT INTO usage_by_day (day, model, upstream_id, requests, input_tokens, cached_tokens,
    output_tokens, reasoning_tokens, cost_micros, estimated, errors)
SELECT substr(hour, 1, 10), model, upstream_id, SUM(requests), SUM(input_tokens),
    SUM(cached_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_micros),
    SUM(estimated), SUM(errors)
FROM usage_hourly
GROUP BY 1, 2, 3;
