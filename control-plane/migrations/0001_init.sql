-- Codex Gateway control-plane schema, version 1.
-- Postgres is the source of truth. Every change to what data planes see bumps
-- config_state.version in the same transaction, so versions survive restarts and every
-- control-plane replica agrees on them.

CREATE TABLE config_state (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version BIGINT NOT NULL
);
INSERT INTO config_state (singleton, version) VALUES (TRUE, 1);

CREATE TABLE upstreams (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    base_url TEXT NOT NULL,
    -- AES-256-GCM: 12-byte nonce followed by ciphertext and tag.
    api_key_enc BYTEA NOT NULL,
    api_key_hint TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0 CHECK (priority >= 0),
    weight INTEGER NOT NULL DEFAULT 1 CHECK (weight > 0),
    max_retries INTEGER NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    timeout_ms INTEGER NOT NULL CHECK (timeout_ms > 0),
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    health TEXT NOT NULL DEFAULT 'unknown',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    balance_micros BIGINT NOT NULL DEFAULT 0,
    multiplier_ppm BIGINT NOT NULL DEFAULT 1000000 CHECK (multiplier_ppm >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every credit or correction of a balance (the initial balance included), so that
-- balance = sum(adjustments) - sum(usage costs) can always be audited.
CREATE TABLE balance_adjustments (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id),
    amount_micros BIGINT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX balance_adjustments_user ON balance_adjustments (user_id);

CREATE TABLE api_keys (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL DEFAULT '',
    prefix TEXT NOT NULL,
    -- SHA-256 of the secret; the secret itself is never stored.
    digest BYTEA NOT NULL UNIQUE,
    revoked_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ,
    models TEXT[] NOT NULL DEFAULT '{}',
    ip_allow TEXT[] NOT NULL DEFAULT '{}',
    rpm INTEGER CHECK (rpm > 0),
    concurrency INTEGER CHECK (concurrency > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- Per 1M tokens, in micro-units of the currency. Model '*' is the default.
CREATE TABLE prices (
    model TEXT PRIMARY KEY,
    input_micros BIGINT NOT NULL CHECK (input_micros >= 0),
    cached_input_micros BIGINT NOT NULL CHECK (cached_input_micros >= 0),
    output_micros BIGINT NOT NULL CHECK (output_micros >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per proxied request, keyed by the gateway-generated event id (UUIDv7), so a
-- redelivered event is ignored rather than billed twice.
CREATE TABLE usage_events (
    id UUID PRIMARY KEY,
    request_id TEXT NOT NULL,
    key_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    upstream_id BIGINT,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    status TEXT NOT NULL,
    stream BOOLEAN NOT NULL,
    estimated BOOLEAN NOT NULL,
    ttfb_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_started ON usage_events (started_at DESC);
CREATE INDEX usage_events_user ON usage_events (user_id, started_at DESC);
CREATE INDEX usage_events_key ON usage_events (key_id, started_at DESC);

-- Stream entries the consumer could not decode, kept with the reason instead of looping.
CREATE TABLE usage_dead_letters (
    stream_id TEXT PRIMARY KEY,
    payload BYTEA,
    error TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
