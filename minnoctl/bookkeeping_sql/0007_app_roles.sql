-- table: app_roles
--
-- The roles `app create` made, with their modules, so their grants are kept after each migration.
-- Created by the first `app create`: a database without app roles has no such table.

CREATE TABLE IF NOT EXISTS minnoctl.app_roles (
    role        text PRIMARY KEY,
    modules     text[] NOT NULL,
    allow_ddl   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL DEFAULT current_user
);
