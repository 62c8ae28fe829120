-- Every admin change, written in the transaction that makes it: when, who (how they signed in
-- and from where), what (an action, its target and the fields it set, as JSON without
-- secrets) and the config version it produced, if any.
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    principal TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    config_version BIGINT
);
