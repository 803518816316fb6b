-- table: cleanup_runs
--
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
