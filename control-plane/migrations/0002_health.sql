-- Active health checks: what to probe, and the outcome of the last probe.
ALTER TABLE upstreams
    ADD COLUMN probe_path TEXT NOT NULL DEFAULT '/v1/models',
    ADD COLUMN health_error TEXT NOT NULL DEFAULT '',
    ADD COLUMN health_checked_at TIMESTAMPTZ;
