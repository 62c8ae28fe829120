-- Signed-in console and portal sessions, so every replica knows them and signing out ends one
-- everywhere. Only a digest of the cookie's token is kept.
CREATE TABLE console_sessions (
    digest BYTEA PRIMARY KEY,
    -- 'admin' (the admin token) or 'portal' (a gateway key, key_id).
    kind TEXT NOT NULL,
    key_id BIGINT,
    -- The token every form of the session carries.
    csrf TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
