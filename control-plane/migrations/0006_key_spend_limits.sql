-- Key spending caps, in micro-units of the currency: a lifetime cap and caps over rolling
-- windows of 5 hours, a day, a week and 30 days. NULL = no cap. What a key has spent in a
-- window is read from usage_hourly (key_id, hour).
ALTER TABLE api_keys
    ADD COLUMN spend_limit_micros BIGINT CHECK (spend_limit_micros > 0),
    ADD COLUMN spend_limit_5h_micros BIGINT CHECK (spend_limit_5h_micros > 0),
    ADD COLUMN spend_limit_day_micros BIGINT CHECK (spend_limit_day_micros > 0),
    ADD COLUMN spend_limit_week_micros BIGINT CHECK (spend_limit_week_micros > 0),
    ADD COLUMN spend_limit_month_micros BIGINT CHECK (spend_limit_month_micros > 0);

-- The last UTC hour (hours since the Unix epoch) at whose start the config version was
-- bumped so that snapshots recount rolling windows: spend leaves them as hours pass, with
-- no event to say so. Replicas race to set it; one bump per hour wins.
ALTER TABLE config_state ADD COLUMN windows_rolled_hour BIGINT NOT NULL DEFAULT 0;
