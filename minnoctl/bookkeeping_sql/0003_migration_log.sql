-- table: migration_log
--
-- Every apply and rollback of a module's migration, with its duration.

CREATE TABLE IF NOT EXISTS minnoctl.migration_log (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration_id text NOT NULL,
    operation    text NOT NULL CHECK (operation IN ('apply', 'rollback')),
    checksum     text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    by_user      text NOT NULL,
    host         text NOT NULL,
    duration_ms  double precision NOT NULL
);
