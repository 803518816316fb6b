-- table: schema_baseline
--
-- Each module's schema as its last migration left it: the reference of drift detection (drift.py).
-- Created with the first baseline recorded.

CREATE TABLE IF NOT EXISTS minnoctl.schema_baseline (
    module       text PRIMARY KEY,
    migration_id text NOT NULL,
    fingerprint  jsonb NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
