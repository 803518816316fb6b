-- table: settings
--
-- What the database says about itself: `environment` (db init --environment), which the seed's
-- production guard reads, so the guard holds on every machine whatever its variables say.

CREATE TABLE IF NOT EXISTS minnoctl.settings (
    name    text PRIMARY KEY,
    value   text NOT NULL,
    set_at  timestamptz NOT NULL DEFAULT now(),
    set_by  text NOT NULL
);
