-- Signed-in console and portal sessions (see the Postgres migration 0009).
CREATE TABLE console_sessions (
    digest BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    key_id INTEGER,
    csrf TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
