-- The per-user daily rollups count failed events too (see the Postgres migration 0010).
ALTER TABLE usage_daily ADD COLUMN errors INTEGER NOT NULL DEFAULT 0;

-- Failures recorded before this migration are counted once, here.
UPDATE usage_daily SET errors = h.errors
FROM (
    SELECT substr(hour, 1, 10) AS day, user_id, model, SUM(errors) AS errors
    FROM usage_hourly
    GROUP BY 1, 2, 3
) AS h
WHERE usage_daily.day = h.day AND usage_daily.user_id = h.user_id
    AND usage_daily.model = h.model AND h.errors <> 0;
