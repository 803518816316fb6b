"""One exception base and the exit codes minnoctl documents in its README.

A MinnoctlError is a user error: the CLI prints its message as one line on stderr and exits with
its code, with no traceback unless --traceback was given. Anything else is a bug and keeps its
traceback. Messages must never contain a secret: build them from masked URLs (config.mask_url).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes. The README's exit-code table is generated from this enum's docs."""

    OK = 0
    FAILURE = 1  # the command ran but failed (for `health`: WARNING)
    USAGE = 2  # bad option or argument (for `health`: CRITICAL)
    CONFIG = 3  # bad configuration: malformed URL, bad setting value, a session command behind a transaction
    # pool (for `health`: UNKNOWN)
    UNREACHABLE = 4  # cannot reach the server: refused, unknown host, timeout, SSL
    AUTH = 5  # the server refused the login: wrong or missing password, unknown role, pg_hba
    NO_DATABASE = 6  # the database does not exist
    EMBEDDED = 7  # the embedded PostgreSQL cannot be used or started here
    LOCK_HELD = 8  # another minnoctl run holds the lock this command needs (or a Citus backup's table locks)
    PENDING = 9  # `migrate --dry-run --exit-code`: migrations are pending
    DRIFT = 10  # applied migrations were edited, removed or renamed; or the live schema drifted
    NOT_CONFIRMED = 11  # a destructive command was not confirmed (no terminal and no --yes)
    EXTENSION = 12  # a module needs a PostgreSQL extension the server lacks
    MIGRATION_FAILED = 13  # a migration failed; the database is as before it
    CRYPTO = 14  # master key missing, malformed or wrong; an encrypted field cannot be used
    PARTIAL = 15  # stopped at --max-runtime with work left; run it again to resume
    PRODUCTION = 16  # refused: the target is production and --force-production was not given
    RANGE_FULL = 17  # `ports`: no free port left in the range
    PORT_TAKEN = 18  # `ports`: the port asked for is held, reserved or cooling down
    NOT_FOUND = 19  # a project, range, workspace, data key or other named object does not exist
    BACKUP_INVALID = 20  # `backup`: not a backup, a checksum mismatch, unreadable, or a failed restore test
    INTERNAL = 70  # a bug in minnoctl (EX_SOFTWARE); the traceback is printed


EXIT_CODE_DOCS: dict[ExitCode, str] = {
    ExitCode.OK: "success (`health`: OK)",
    ExitCode.FAILURE: "the command ran but failed (`health`: WARNING)",
    ExitCode.USAGE: "bad option or argument (`health`: CRITICAL, which includes an unreachable server)",
    ExitCode.CONFIG: "bad configuration: malformed URL or setting, or a command that needs a session of its own "
                     "pointed at a transaction-mode pool (set `MINNO_DIRECT_URL`) (`health`: UNKNOWN)",
    ExitCode.UNREACHABLE: "server unreachable: connection refused, unknown host, timeout, SSL failure",
    ExitCode.AUTH: "login refused: wrong or missing password, unknown role, rejected by pg_hba.conf",
    ExitCode.NO_DATABASE: "the database does not exist",
    ExitCode.EMBEDDED: "the embedded PostgreSQL is not available on this platform or failed to start",
    ExitCode.LOCK_HELD: "another minnoctl run holds the lock this command needs; `backup create` on a Citus "
                        "coordinator: its tables' locks were not had within `--lock-timeout`",
    ExitCode.PENDING: "`migrate --dry-run --exit-code`: there are pending migrations",
    ExitCode.DRIFT: "applied migrations were edited, removed or renamed, or the live schema no longer matches what "
                    "they built (`migrate verify` lists them)",
    ExitCode.NOT_CONFIRMED: "a destructive command was declined, or run without a terminal and without `--yes`",
    ExitCode.EXTENSION: "a chosen module needs a PostgreSQL extension the server does not have",
    ExitCode.MIGRATION_FAILED: "a migration failed; the database is as it was before that migration",
    ExitCode.CRYPTO: "the master key is missing, malformed or not the one that wrapped the data keys",
    ExitCode.PARTIAL: "stopped at `--max-runtime` with work left (a rerun resumes), or some fields could not be used",
    ExitCode.PRODUCTION: "refused: the target is production (`MINNO_ENV`, `APP_ENV` or `NODE_ENV`, or "
                         "`db init --environment production`) and `--force-production` was not given",
    ExitCode.RANGE_FULL: "`ports`: no free port left in the range (every port allocated, reserved or cooling down)",
    ExitCode.PORT_TAKEN: "`ports`: the port asked for is held by another service (named), reserved, cooling down, "
                         "or bound outside minnoctl",
    ExitCode.NOT_FOUND: "a project, port range, workspace, data key or other named object does not exist (the "
                        "message lists the known ones or says where to look)",
    ExitCode.BACKUP_INVALID: "`backup`: the file is not a minnoctl backup, is truncated or changed (checksum), "
                             "cannot be read, or its restore test failed",
    ExitCode.INTERNAL: "a bug in minnoctl: the traceback is printed; please report it",
}


class MinnoctlError(Exception):
    """A user error: one line on stderr and a documented exit code, no traceback."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(MinnoctlError):
    """An option or argument that cannot be used as given."""

    exit_code = ExitCode.USAGE


class ConfigError(MinnoctlError):
    """A configuration value (URL, environment variable, .env entry) that is malformed."""

    exit_code = ExitCode.CONFIG


class ConnectError(MinnoctlError):
    """A connection attempt failed; `kind` says why (refused, unknown-host, timeout, ...)."""

    exit_code = ExitCode.UNREACHABLE

    def __init__(self, message: str, *, kind: str, exit_code: ExitCode | None = None):
        super().__init__(message, exit_code=exit_code)
        self.kind = kind


class EmbeddedError(MinnoctlError):
    """The embedded PostgreSQL is missing for this platform or could not be started or stopped."""

    exit_code = ExitCode.EMBEDDED


class LockHeldError(MinnoctlError):
    """Another minnoctl process holds a lock this command needs."""

    exit_code = ExitCode.LOCK_HELD


class MigrationFailed(MinnoctlError):
    """A migration statement failed; the message names the file and the statement."""

    exit_code = ExitCode.MIGRATION_FAILED


class DriftError(MinnoctlError):
    """Applied migrations were edited, removed or renamed, or the live schema drifted from what they built."""

    exit_code = ExitCode.DRIFT


class ExtensionMissing(MinnoctlError):
    """A chosen module needs an extension the server does not have."""

    exit_code = ExitCode.EXTENSION


class NotConfirmed(MinnoctlError):
    """A destructive command was declined or could not ask (no terminal, no --yes)."""

    exit_code = ExitCode.NOT_CONFIRMED


class ProductionRefused(MinnoctlError):
    """The target is production (by its environment or its own record) and --force-production was not given."""

    exit_code = ExitCode.PRODUCTION
