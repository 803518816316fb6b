-- minnoctl's own tables, as minnoctl before this migration set created them.
--
-- Databases in the field already hold some or all of them (earlier versions ran these
-- CREATE TABLE IF NOT EXISTS statements before each write: the first four at every migrate and
-- cleanup, app_roles at the first `app create`, schema_baseline at the first migration), so every
-- statement here is a no-op on what exists and creates what does not. IF NOT EXISTS belongs in this
-- file only: a later one changes the tables the ordinary way (ALTER TABLE ... ADD COLUMN) and runs
-- once, recorded in bookkeeping_migrations. minnoctl/bookkeeping.py applies the files; the names
-- are fixed (minnoctl.modules.BOOKKEEPING is "minnoctl").

-- Only when missing: CREATE SCHEMA IF NOT EXISTS checks CREATE on the database first, which a role
-- that owns minnoctl's schema need not have (a managed server's database owned by another role).
-- A catalog read, not to_regnamespace (a cache), so it sees what another session just committed.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'minnoctl') THEN
        CREATE SCHEMA minnoctl;
    END IF;
END
$$;

-- This migration set's own record: one row per file applied.
CREATE TABLE IF NOT EXISTS minnoctl.bookkeeping_migrations (
    id          text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL DEFAULT current_user
);

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

-- One row per `minnoctl cleanup` run, so `health` can tell when cleanup last succeeded. A run
-- killed with kill -9 stays 'running' until the next run (which holds the lock) marks it failed.
CREATE TABLE IF NOT EXISTS minnoctl.cleanup_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL CHECK (status IN ('running', 'ok', 'partial', 'failed')),
    dry_run     boolean NOT NULL,
    rows        bigint NOT NULL DEFAULT 0,
    tasks       jsonb NOT NULL DEFAULT '[]',
    error       text,
    by_user     text NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL
);

-- What the database says about itself: `environment` (db init --environment), which the seed's
-- production guard reads, so the guard holds on every machine whatever its variables say.
CREATE TABLE IF NOT EXISTS minnoctl.settings (
    name    text PRIMARY KEY,
    value   text NOT NULL,
    set_at  timestamptz NOT NULL DEFAULT now(),
    set_by  text NOT NULL
);

-- The roles `app create` made, with their modules, so their grants are kept after each migration.
CREATE TABLE IF NOT EXISTS minnoctl.app_roles (
    role        text PRIMARY KEY,
    modules     text[] NOT NULL,
    allow_ddl   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL DEFAULT current_user
);

-- Each module's schema as its last migration left it: the reference of drift detection (drift.py).
CREATE TABLE IF NOT EXISTS minnoctl.schema_baseline (
    module       text PRIMARY KEY,
    migration_id text NOT NULL,
    fingerprint  jsonb NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
