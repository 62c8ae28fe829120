-- The per-user daily rollups count failed events too, as the other rollups do, so every usage
-- summary (and the console's error rate) reads them from whichever rollup answers it.
ALTER TABLE usage_daily ADD COLUMN errors BIGINT NOT NULL DEFAULT 0;

-- The hourly rollups hold every event recorded so far (retention keeps rollups): the days'
-- failures are counted from them.
-- Failures recorded before this migration are counted once, here.
UPDATE usage_daily d SET errors = h.errors
FROM (
    SELECT to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, user_id, model,
        SUM(errors) AS errors
    FROM usage_hourly
    GROUP BY 1, 2, 3
) h
WHERE d.day = h.day AND d.user_id = h.user_id AND d.model = h.model AND h.errors <> 0;
