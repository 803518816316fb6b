-- table: bookkeeping_migrations
--
-- minnoctl's own schema and this migration set's record: one row per file applied, with the table
-- the file belongs to (minnoctl/bookkeeping.py). Files 0001-0007 create the tables minnoctl had
-- before its tables were migrations; databases in the field hold some or all of them (earlier
-- versions ran these CREATE TABLE IF NOT EXISTS statements before each write), so these files
-- only create what is missing. IF NOT EXISTS belongs in them only: a later file changes a table
-- the ordinary way (ALTER TABLE ... ADD COLUMN) and runs once. The names are fixed
-- (minnoctl.modules.BOOKKEEPING is "minnoctl").

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

CREATE TABLE IF NOT EXISTS minnoctl.bookkeeping_migrations (
    id          text PRIMARY KEY,
    table_name  text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL DEFAULT current_user
);
