"""What counts as production, from one fixed set of environment names.

Every destructive command (seed, db init --force, migrate rollback, backup restore --clean, and
db init --environment lifting a production mark) asks `production_reason` and passes the answer to
cli.options.guard_production, which refuses without --force-production and still asks in a terminal.

The names are a fixed, documented set (README, "Production safety"): an unknown --environment is a
usage error and an unknown MINNO_ENV a configuration error, never silently "not production".
APP_ENV and NODE_ENV belong to other tools too, so only their production names count there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from collections.abc import Mapping

from minnoctl.errors import ConfigError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

# accepted name -> the name recorded in the database
ENVIRONMENTS: dict[str, str] = {
    "production": "production", "prod": "production", "prd": "production", "live": "production",
    "staging": "staging", "stage": "staging",
    "development": "development", "dev": "development", "local": "development",
    "test": "test", "testing": "test", "ci": "test",
}
CANONICAL = ("production", "staging", "development", "test")
PRODUCTION_ENV_VARS = ("MINNO_ENV", "APP_ENV", "NODE_ENV")


def names_help() -> str:
    """The accepted names, for messages and help: production (prod, prd, live), staging (stage), ..."""
    parts = []
    for canonical in CANONICAL:
        aliases = [k for k, v in ENVIRONMENTS.items() if v == canonical and k != canonical]
        parts.append(f"{canonical} ({', '.join(aliases)})" if aliases else canonical)
    return ", ".join(parts)


def normalize_environment(name: str, origin: str = "--environment") -> str:
    """One of CANONICAL for an accepted name; a UsageError (exit 2) for anything else."""
    value = name.strip().lower()
    if value not in ENVIRONMENTS:
        from minnoctl.render_text import shown

        raise UsageError(f"{origin} {shown(name)} is not an environment name — use one of: {names_help()}")
    return ENVIRONMENTS[value]


def is_production(name: str | None) -> bool:
    return bool(name and ENVIRONMENTS.get(name.strip().lower()) == "production")


def production_reason(conn: "psycopg.Connection | None", env: Mapping[str, str] | None = None) -> str | None:
    """Why the target counts as production, or None. The variables on this machine first, then the
    database's own record (db init --environment production), which holds on every machine.
    `conn` None: a database that does not exist yet has no record. The variables come from the
    environment, else the .env file (config.environment)."""
    from minnoctl.config import environment

    env = environment(env)
    for var in PRODUCTION_ENV_VARS:
        raw = env.get(var, "")
        value = raw.strip().lower()
        if not value:
            continue
        if is_production(value):
            return f"{var}={value}"
        if var == "MINNO_ENV" and value not in ENVIRONMENTS:
            from minnoctl.render_text import shown

            raise ConfigError(f"MINNO_ENV={shown(raw)} is not an environment name — use one of: {names_help()}")
    if conn is not None:
        from minnoctl import migrate

        recorded = migrate.recorded_environment(conn)
        if is_production(recorded):
            return f"the database is marked {recorded} by db init --environment"
    return None
