-- Codex Gateway standalone schema (SQLite), version 1: the same tables and constraints as the
-- Postgres schema after its migrations 0001-0002. Lists are JSON text; timestamps are written
-- by the application (RFC 3339, UTC) so they compare consistently.

CREATE TABLE config_state (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    version INTEGER NOT NULL
);
INSERT INTO config_state (singleton, version) VALUES (1, 1);

CREATE TABLE upstreams (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    base_url TEXT NOT NULL,
    api_key_enc BLOB NOT NULL,
    api_key_hint TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0 CHECK (priority >= 0),
    weight INTEGER NOT NULL DEFAULT 1 CHECK (weight > 0),
    max_retries INTEGER NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    timeout_ms INTEGER NOT NULL CHECK (timeout_ms > 0),
    enabled INTEGER NOT NULL DEFAULT 1,
    health TEXT NOT NULL DEFAULT 'unknown',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    probe_path TEXT NOT NULL DEFAULT '/v1/models',
    health_error TEXT NOT NULL DEFAULT '',
    health_checked_at TEXT
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    balance_micros INTEGER NOT NULL DEFAULT 0,
    multiplier_ppm INTEGER NOT NULL DEFAULT 1000000 CHECK (multiplier_ppm >= 0),
    created_at TEXT NOT NULL
);

CREATE TABLE balance_adjustments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id),
    amount_micros INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE INDEX balance_adjustments_user ON balance_adjustments (user_id);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id),
    name TEXT NOT NULL DEFAULT '',
    prefix TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    revoked_at TEXT,
    expires_at TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    ip_allow TEXT NOT NULL DEFAULT '[]',
    rpm INTEGER CHECK (rpm > 0),
    concurrency INTEGER CHECK (concurrency > 0),
    created_at TEXT NOT NULL
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE prices (
    model TEXT PRIMARY KEY,
    input_micros INTEGER NOT NULL CHECK (input_micros >= 0),
    cached_input_micros INTEGER NOT NULL CHECK (cached_input_micros >= 0),
    output_micros INTEGER NOT NULL CHECK (output_micros >= 0),
    updated_at TEXT NOT NULL
);

CREATE TABLE usage_events (
    id BLOB PRIMARY KEY,
    request_id TEXT NOT NULL,
    key_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    upstream_id INTEGER,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    status TEXT NOT NULL,
    stream INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    ttfb_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ingested_at TEXT NOT NULL
);
CREATE INDEX usage_events_started ON usage_events (started_at DESC);
CREATE INDEX usage_events_user ON usage_events (user_id, started_at DESC);
CREATE INDEX usage_events_key ON usage_events (key_id, started_at DESC);

CREATE TABLE usage_dead_letters (
    stream_id TEXT PRIMARY KEY,
    payload BLOB,
    error TEXT NOT NULL,
    created_at TEXT NOT NULL
);
