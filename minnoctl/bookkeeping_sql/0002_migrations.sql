-- table: migrations
--
-- The record of the modules' applied migrations, written in each migration's own transaction.

CREATE TABLE IF NOT EXISTS minnoctl.migrations (
    id           text PRIMARY KEY,
    module       text NOT NULL,
    checksum     text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    applied_by   text NOT NULL,
    applied_host text NOT NULL,
    seq          bigint GENERATED ALWAYS AS IDENTITY
);
