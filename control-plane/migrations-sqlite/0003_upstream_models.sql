-- The models an upstream serves (see the Postgres migration 0004): a JSON array of names,
-- empty meaning every model.
ALTER TABLE upstreams ADD COLUMN models TEXT NOT NULL DEFAULT '[]';
