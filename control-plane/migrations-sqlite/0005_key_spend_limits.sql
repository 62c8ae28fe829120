-- Key spending caps (see the Postgres migration 0006). NULL = no cap.
ALTER TABLE api_keys ADD COLUMN spend_limit_micros INTEGER CHECK (spend_limit_micros > 0);
ALTER TABLE api_keys ADD COLUMN spend_limit_5h_micros INTEGER CHECK (spend_limit_5h_micros > 0);
ALTER TABLE api_keys ADD COLUMN spend_limit_day_micros INTEGER CHECK (spend_limit_day_micros > 0);
ALTER TABLE api_keys ADD COLUMN spend_limit_week_micros INTEGER CHECK (spend_limit_week_micros > 0);
ALTER TABLE api_keys ADD COLUMN spend_limit_month_micros INTEGER CHECK (spend_limit_month_micros > 0);

ALTER TABLE config_state ADD COLUMN windows_rolled_hour INTEGER NOT NULL DEFAULT 0;
