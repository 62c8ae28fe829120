-- The models an upstream serves; empty means every model. Only upstreams that serve a
-- request's model are routing candidates for it.
ALTER TABLE upstreams ADD COLUMN models TEXT[] NOT NULL DEFAULT '{}';
