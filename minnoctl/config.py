"""Where the database comes from, and the connection settings, with the source of each value.

Order (first found wins):
  --database-url > MINNO_DATABASE_URL > DATABASE_URL > POSTGRES_URL > RAILWAY_DATABASE_URL (spec 002)
  > DB_HOST / DB_PORT / DB_NAME / DB_USER / DB_PASSWORD (spec 004) > libpq's PG* variables
  > the same variables in a .env file in the working directory > the embedded PostgreSQL.

The real environment always beats the .env file: every variable is looked up in the environment
first and in .env second. Nothing here opens a connection; connection.py does that.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from minnoctl.errors import ConfigError
from minnoctl.render_text import shown

URL_VARS = ("MINNO_DATABASE_URL", "DATABASE_URL", "POSTGRES_URL", "RAILWAY_DATABASE_URL")
# spec 004's individual components -> libpq keywords
DB_VARS = {"DB_HOST": "host", "DB_PORT": "port", "DB_NAME": "dbname", "DB_USER": "user", "DB_PASSWORD": "password"}
# libpq's own variables (https://www.postgresql.org/docs/current/libpq-envars.html) -> keywords
PG_VARS = {
    "PGHOST": "host",
    "PGHOSTADDR": "hostaddr",
    "PGPORT": "port",
    "PGDATABASE": "dbname",
    "PGUSER": "user",
    "PGPASSWORD": "password",
    "PGSERVICE": "service",
}
# the variables that select a group; a password alone names no server (as libpq treats PGPASSWORD)
DB_SELECTORS = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER")
PG_SELECTORS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# DATABASE_URL as applications write it: libpq's two schemes, and SQLAlchemy's dialect+driver
# prefixes (spec 004: postgresql+asyncpg; yoyo's postgresql+psycopg). The driver names only which
# Python library the application uses; the server, role and database are the same.
URL_SCHEMES = ("postgresql", "postgres")
URL_DRIVERS = ("psycopg", "psycopg2", "psycopg2cffi", "psycopg_async", "asyncpg", "pg8000", "pygresql")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
APPLICATION_NAME = "minnoctl"
ENV_FILE = ".env"
SECRET_KEYWORDS = ("password", "sslpassword")

# spec 002's defaults, in milliseconds
DEFAULT_CONNECTION_TIMEOUT_MS = 10_000
DEFAULT_POOL_SIZE = 10
MAX_POOL_SIZE = 1000  # DB_POOL_SIZE: more than any server's max_connections allows minnoctl


# ---------------------------------------------------------------------------------------------
# SETTINGS: every environment variable minnoctl reads, declared once
#
# Each is read through this module only: env_value(NAME) (or environment().get(NAME), ctx.value(NAME)),
# which refuse a name not declared here (UndeclaredVariable: a programming error, never a user's);
# a child process's environment comes from child_environment(). The README's table of variables is
# generated from this list (python -m minnoctl.readme --write; tests/test_s18_settings.py checks it).
# `dotenv`: the .env file in the working directory counts too (the environment wins); False: the
# process's own variables (the terminal's, the session's), from the environment only. A `pattern`
# entry declares a family of names (one per health threshold). libpq's other PG* variables are not
# minnoctl's: it never reads them, libpq does (psycopg's, and the client tools' through
# child_environment()); they are one documentation entry that env_value() refuses.


@dataclass(frozen=True)
class Setting:
    name: str  # the variable, or the family's name as documented (MINNOCTL_HEALTH_<THRESHOLD>)
    purpose: str  # what it is for (the README's "meaning", Markdown)
    default: str  # what applies when it is unset, in words ("" when nothing does)
    used_by: str  # the command(s) or group that read it
    group: str  # database | connection | keys | paths | safety | health | output | system
    secret: bool = False  # never shown: passwords, keys, URLs that may carry a password
    dotenv: bool = True  # False: the environment only, never the .env file
    pattern: str | None = None  # a family: the names that match this regular expression
    read: bool = True  # False: documented only (passed on to child processes, never read)


_CONNECTS = "every command that connects"
SETTINGS: tuple[Setting, ...] = (
    # the database (the order is load_settings'; see the table above it in the README)
    Setting("MINNO_DATABASE_URL", "the database URL (or libpq `key=value` string); beats every variable below",
            "", _CONNECTS, "database", secret=True),
    Setting("DATABASE_URL", "the database URL, as applications set it (spec 002)", "", _CONNECTS, "database",
            secret=True),
    Setting("POSTGRES_URL", "the database URL (spec 002)", "", _CONNECTS, "database", secret=True),
    Setting("RAILWAY_DATABASE_URL", "the database URL (spec 002)", "", _CONNECTS, "database", secret=True),
    Setting("MINNO_DIRECT_URL", "the server's own address (URL or `key=value` string) for the commands that need a "
            "session of their own (migrate, db init, seed, cleanup, token rotate) when the database is a "
            "transaction-mode pool; `health`, `ports` and the rest keep the pooled one. Used with a database "
            "from the environment or `.env`, never with `--database-url`", "",
            "migrate, db init, seed, cleanup, token rotate, config show", "database", secret=True),
    Setting("DB_HOST", "the server's host name, address or socket directory (spec 004)", "libpq's",
            _CONNECTS, "database"),
    Setting("DB_PORT", "the server's port (spec 004)", "libpq's (5432)", _CONNECTS, "database"),
    Setting("DB_NAME", "the database (spec 004)", "libpq's (the user name)", _CONNECTS, "database"),
    Setting("DB_USER", "the role (spec 004)", "libpq's (the login name)", _CONNECTS, "database"),
    Setting("DB_PASSWORD", "the role's password (spec 004); alone it selects no server", "~/.pgpass",
            _CONNECTS, "database", secret=True),
    Setting("PGHOST", "libpq's host, read by minnoctl to select the database", "", _CONNECTS, "database"),
    Setting("PGHOSTADDR", "libpq's host address", "", _CONNECTS, "database"),
    Setting("PGPORT", "libpq's port", "", _CONNECTS, "database"),
    Setting("PGDATABASE", "libpq's database", "", _CONNECTS, "database"),
    Setting("PGUSER", "libpq's role", "", _CONNECTS, "database"),
    Setting("PGPASSWORD", "libpq's password; alone it selects no server", "", _CONNECTS, "database",
            secret=True),
    Setting("PGSERVICE", "libpq's service in the service file", "", _CONNECTS, "database"),
    Setting("PG*", "libpq's other variables (`PGSSLMODE`, `PGPASSFILE`, `PGCONNECT_TIMEOUT`, ...): minnoctl "
            "never reads them, libpq does, in minnoctl and in pg_dump, pg_restore and psql (which get "
            "minnoctl's environment); the embedded server's initdb, pg_ctl and postgres get none",
            "libpq's", _CONNECTS + ", backup", "database", dotenv=False, pattern=r"PG[A-Z_]*", read=False),
    # the connection
    Setting("DB_CONNECTION_TIMEOUT", "how long to wait for the server to answer (libpq `connect_timeout`, "
            "at least 2 s)", "10000 (ms, spec 002)", _CONNECTS, "connection"),
    Setting("DB_STATEMENT_TIMEOUT", "server `statement_timeout` for minnoctl's sessions",
            "none: migrations and backups may run long", _CONNECTS, "connection"),
    Setting("DB_QUERY_TIMEOUT", "used as the statement timeout when `DB_STATEMENT_TIMEOUT` is unset (psycopg "
            "has no client-side query timeout)", "none", _CONNECTS, "connection"),
    Setting("DB_IDLE_TIMEOUT", "server `idle_session_timeout` for minnoctl's sessions (PostgreSQL 14+)", "none",
            _CONNECTS, "connection"),
    Setting("DB_POOL_SIZE", "the most connections a parallel command opens at once (1 to 1000)", "10",
            "parallel commands (fleet runs)", "connection"),
    Setting("DB_SSL_MODE", "`disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`",
            "libpq's (`prefer`)", _CONNECTS, "connection"),
    Setting("DB_SSL_ENABLED", "spec 002's pair with `DB_SSL_REJECT_UNAUTHORIZED`: `true` means `require`; "
            "both `true` mean `verify-full` (when `DB_SSL_MODE` is unset)", "", _CONNECTS, "connection"),
    Setting("DB_SSL_REJECT_UNAUTHORIZED", "with `DB_SSL_ENABLED=true`: `true` verifies the server "
            "(`verify-full`)", "", _CONNECTS, "connection"),
    Setting("DB_SSL_CA", "CA file (`sslrootcert`)", "", _CONNECTS, "connection"),
    Setting("DB_SSL_CERT", "client certificate (`sslcert`)", "", _CONNECTS, "connection"),
    Setting("DB_SSL_KEY", "client certificate's key (`sslkey`)", "", _CONNECTS, "connection"),
    # keys
    Setting("MINNO_MASTER_KEY", "the master key (base64 of 32 bytes); `config show` shows its fingerprint only",
            "a development key, with the embedded database only", "token, seed, config show", "keys",
            secret=True),
    Setting("MINNO_MASTER_KEY_FILE", "a file holding the master key (when `MINNO_MASTER_KEY` is unset)", "",
            "token, seed, config show", "keys"),
    Setting("MINNO_NEW_MASTER_KEY", "the next master key, for `token rotate --master`", "",
            "token rotate, config show", "keys", secret=True),
    Setting("MINNO_NEW_MASTER_KEY_FILE", "a file holding the next master key", "", "token rotate, config show",
            "keys"),
    # paths
    Setting("MINNO_HOME", "where the embedded PostgreSQL (and its development master key) lives",
            "the platform's user data directory (`~/.local/share/minnoctl`)", "local, every command on the "
            "embedded database", "paths"),
    Setting("MINNOCTL_MIGRATIONS_DIR", "another copy of the migration set (developing a migration; "
            "`migrate new` writes there)", "the checkout's `migrations/` when run in one, else the one inside "
            "the package", "migrate, db init, seed, health, every command reading the modules", "paths"),
    Setting("MINNO_BACKUP_DIR", "where `minnoctl backup` writes and finds backups", "`./backups`",
            "backup, health (backup age)", "paths"),
    Setting("MINNOCTL_PG_BINDIR", "a directory of PostgreSQL client tools (pg_dump, pg_restore, psql) for "
            "`backup`", "the server's major version, else the embedded package's", "backup, config show",
            "paths"),
    Setting("MINNOCTL_SEEDS_DIR", "a folder of seed files (`<module>.json`, format in migrations/README.md) "
            "for `minnoctl seed`", "each module folder's `seed/`", "seed", "paths"),
    # targets (fleets)
    Setting("MINNOCTL_TARGETS", "the targets file (`--target`, `--group`, `--all-targets`; README: Targets and "
            "fleets)", "`minnoctl.toml` in the working directory or above it, else in the user config directory",
            "every command that connects", "paths"),
    Setting("<a target's password_env>", "the variable a target's `password_env` names in the targets file: its "
            "password (read for that target only)", "", "every command given a target", "database", secret=True,
            read=False),
    # production safety
    Setting("MINNO_ENV", "the environment's name (one of a fixed set, else an error); `production` makes "
            "destructive commands refuse without `--force-production`", "", "seed, db init, migrate rollback, "
            "backup restore --clean", "safety"),
    Setting("APP_ENV", "as `MINNO_ENV`; only production names count", "", "as MINNO_ENV", "safety"),
    Setting("NODE_ENV", "as `MINNO_ENV`; only production names count", "", "as MINNO_ENV", "safety"),
    # health
    Setting("MINNOCTL_HEALTH_<THRESHOLD>", "a health threshold, as `--threshold` (`MINNOCTL_HEALTH_LONG_QUERY_"
            "WARNING=2m`; `minnoctl health --list` names them)", "each check's", "health", "health",
            pattern=r"MINNOCTL_HEALTH_\S+"),  # each one declared by its check (health registry, thresholds=)
    Setting("MINNOCTL_HEALTH_ONLY", "the checks to run (comma or space separated), as `--only`", "all",
            "health", "health"),
    Setting("MINNOCTL_HEALTH_SKIP", "the checks to leave out, as `--skip`", "", "health", "health"),
    # output
    Setting("MINNOCTL_TRACEBACK", "`1`: show the traceback of user errors too (as `--traceback`)", "",
            "every command", "output"),
    Setting("NO_COLOR", "set (even empty): no colour even in a terminal (the terminal's setting)", "",
            "every command", "output", dotenv=False),
    Setting("TERM", "`dumb`: no colour", "", "every command", "output", dotenv=False),
    # the system
    Setting("XDG_RUNTIME_DIR", "where the embedded server's socket goes when the data directory's path is "
            "too long for one (when private to the user)", "the temporary folder", "local, the embedded "
            "database", "system", dotenv=False),
)
_DECLARED = {s.name: s for s in SETTINGS if s.pattern is None}
_PATTERNS = [(re.compile(s.pattern), s) for s in SETTINGS if s.pattern is not None]


class UndeclaredVariable(LookupError):
    """A variable read without a declaration in config.SETTINGS: a programming error (not a
    KeyError, which Mapping.get and `in` would take for "unset")."""


def declared(name: str) -> Setting | None:
    """The declaration of the variable `name` (its own or its family's), None if none."""
    found = _DECLARED.get(name)
    if found is None:
        found = next((s for rx, s in _PATTERNS if rx.fullmatch(name)), None)
    return found


def _setting(name: str) -> Setting:
    found = declared(name)
    if found is None or not found.read:
        raise UndeclaredVariable(
            f"{name!r} is not declared in minnoctl.config.SETTINGS — declare it there (and document it: "
            "python -m minnoctl.readme --write) before reading it" if found is None else
            f"{name!r} is libpq's (config.SETTINGS: {found.name}), not minnoctl's: it is passed on, never read")
    return found


@dataclass(frozen=True)
class Value:
    """One effective setting: its value and where it came from (for `config show`)."""

    value: object
    source: str


@dataclass
class Settings:
    """Everything needed to open a connection, plus the source of each value."""

    params: dict[str, str]  # libpq keywords; empty host/dbname for the embedded server
    source: str  # where the database came from ("DATABASE_URL", ".env: DB_HOST...", "embedded")
    embedded: bool
    connect_timeout_s: int
    statement_timeout_ms: int | None
    idle_timeout_ms: int | None
    pool_size: int
    minno_home: Path
    values: dict[str, Value] = field(default_factory=dict)
    # MINNO_DIRECT_URL's settings: the server itself, for the commands that need a session of their
    # own (connection.open_session); None when unset or when --database-url names the target
    direct: "Settings | None" = None

    def secrets(self) -> list[str]:
        own = [self.params[k] for k in SECRET_KEYWORDS if self.params.get(k)]
        return own + (self.direct.secrets() if self.direct is not None else [])

    def display_url(self) -> str:
        return display_url(self.params)

    def label(self) -> str:
        """The target as a person reads it in a question or a message (password masked)."""
        return f"the embedded database in {self.minno_home}" if self.embedded else self.display_url()


# ---------------------------------------------------------------------------------------------
# .env


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, `export` prefixes, quotes and # comments, as shells and dotenv read them."""
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc.__class__.__name__} — fix or remove the file") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export "):].lstrip()
        key, sep, raw = stripped.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{path}, line {lineno}: expected KEY=VALUE — fix or remove that line")
        try:
            parts = shlex.split(_strip_comment(raw))
        except ValueError:
            raise ConfigError(f"{path}, line {lineno}: unbalanced quotes in the value of {key}") from None
        out[key] = " ".join(parts)
    return out


def _strip_comment(raw: str) -> str:
    """Cut a trailing # comment. As in sh and dotenv, # starts one only outside quotes and after
    whitespace: `DB_PASSWORD=abc#123` is the password abc#123, `X=1  # note` is 1."""
    quoted: str | None = None
    escaped = False
    for i, ch in enumerate(raw):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted != "'":
            escaped = True
        elif quoted:
            if ch == quoted:
                quoted = None
        elif ch in "'\"":
            quoted = ch
        elif ch == "#" and i > 0 and raw[i - 1].isspace():
            return raw[:i]
    return raw


class _Lookup:
    """Layers of variables, first wins; remembers where each value came from.

    A layer's label is None for the process environment, else the file it was read from.
    """

    def __init__(self, layers: list[tuple[str | None, Mapping[str, str]]]):
        self.layers = layers

    def get(self, name: str) -> tuple[str, str] | None:
        _setting(name)  # declared in SETTINGS
        for label, layer in self.layers:
            value = layer.get(name)
            if value not in (None, ""):
                return value, name if label is None else f"{label}: {name}"
        return None

    def each_layer(self) -> list["_Lookup"]:
        return [_Lookup([layer]) for layer in self.layers]


class Environment(Mapping):
    """The process environment, then the .env file in the working directory: the one accessor of
    every variable minnoctl reads (a setting in .env works exactly like its variable; the real
    environment wins). A value set but empty in the environment gives way to .env's, as in
    load_settings; else it stays (empty). `source(name)` says where a value came from.

    Only the variables declared in SETTINGS can be read (UndeclaredVariable else), and it lists
    only those; one declared environment-only (NO_COLOR, ...) never comes from .env. `read_file`
    False: the process environment alone (process_environment())."""

    def __init__(self, env: Mapping[str, str] | None = None, cwd: Path | None = None, *, read_file: bool = True):
        self.env = os.environ if env is None else env
        self.file = read_env_file((cwd or Path.cwd()) / ENV_FILE) if read_file else {}

    def _layer(self, name: str) -> Mapping[str, str] | None:
        if not _setting(name).dotenv:
            return self.env if name in self.env else None
        if self.env.get(name):
            return self.env
        if self.file.get(name) or (name in self.file and name not in self.env):
            return self.file
        return self.env if name in self.env else None

    def __getitem__(self, name: str) -> str:
        layer = self._layer(name)
        if layer is None:
            raise KeyError(name)
        return layer[name]

    def __iter__(self):
        return iter(n for n in dict.fromkeys([*self.env, *self.file]) if (s := declared(n)) and s.read
                    and self._layer(n) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def named(self, name: str) -> str | None:
        """The variable a targets file names (a target's password_env): not one of minnoctl's own
        settings, so not declared; read like them (the environment, then .env), empty as unset."""
        return self.env.get(name) or self.file.get(name) or None

    def source(self, name: str) -> str | None:
        """`NAME` from the environment, `.env: NAME` from the file, None when unset."""
        layer = self._layer(name)
        return None if layer is None else name if layer is self.env else f"{ENV_FILE}: {name}"


_current: Environment | None = None


def use_environment(env: Environment | None) -> None:
    """Make `env` the environment of this invocation (the CLI does, once per command, and clears
    it at the end): every later `environment()` / `env_value()` without arguments reads it
    instead of reading the environment and the .env file again."""
    global _current
    _current = env


def environment(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Environment:
    """The variables minnoctl reads, .env included (see Environment): the invocation's (read once)
    when there is one and no other is asked for."""
    if isinstance(env, Environment):
        return env
    if env is None and cwd is None and _current is not None:
        return _current
    return Environment(env, cwd)


def process_environment(env: Mapping[str, str] | None = None) -> Environment:
    """The process environment alone, as an Environment (the declared names only): what to read
    when the .env file cannot be (the command reports that itself)."""
    return Environment(env, read_file=False)


def env_value(name: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> tuple[str, str] | None:
    """(value, source) of one variable from the environment or .env, None when unset or empty.
    `name` must be declared in SETTINGS (UndeclaredVariable else); an environment-only one
    (NO_COLOR, TERM, XDG_RUNTIME_DIR) never reads the .env file."""
    if not _setting(name).dotenv and not isinstance(env, Environment):
        value = _process(env).get(name)
        return (value, name) if value else None
    look = environment(env, cwd)
    value = look.get(name)
    return (value, look.source(name) or name) if value else None


def _process(env: Mapping[str, str] | None) -> Mapping[str, str]:
    """The process environment: `env`'s (without its .env file), else this process's."""
    if isinstance(env, Environment):
        return env.env
    return os.environ if env is None else env


def plain_terminal(env: Mapping[str, str] | None = None) -> str | None:
    """Why output has no colour even in a terminal: NO_COLOR set (even empty, as no-color.org
    says), or TERM=dumb; None when colour is allowed. The terminal's settings: the environment
    only, never .env."""
    process = _process(env)
    if "NO_COLOR" in process:
        return "NO_COLOR"
    return "TERM=dumb" if process.get("TERM") == "dumb" else None


def child_environment(*, libpq: bool = True, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the process environment for a child process (never the .env file: its values
    are minnoctl's settings, passed as options). `libpq` True: as it is, so pg_dump, pg_restore and
    psql read the PG* variables psycopg's libpq reads in this process (connection.for_tools);
    False: without any PG* variable, for the embedded server's initdb, pg_ctl and postgres, which a
    user's PGDATA, PGPORT or PGHOST would move."""
    process = dict(_process(env))
    return process if libpq else {k: v for k, v in process.items() if not k.startswith("PG")}


# ---------------------------------------------------------------------------------------------
# URLs and masking


def display_url(params: Mapping[str, str]) -> str:
    """A postgresql:// URL for people: password masked, unix-socket hosts as ?host=."""
    user = params.get("user") or ""
    userinfo = quote(user, safe="")
    if params.get("password"):
        userinfo += ":****"
    if userinfo:
        userinfo += "@"
    host = params.get("host") or params.get("hostaddr") or ""
    port = params.get("port") or ""
    dbname = quote(params.get("dbname") or "", safe="")
    query: list[str] = []
    if host.startswith("/"):
        query.append(f"host={host}")
        netloc = userinfo
        if port:
            query.append(f"port={port}")
    else:
        hostpart = f"[{host}]" if ":" in host and "," not in host else host
        netloc = userinfo + hostpart + (f":{port}" if port else "")
    if params.get("service"):
        query.append(f"service={params['service']}")
    if params.get("sslmode"):
        query.append(f"sslmode={params['sslmode']}")
    return f"postgresql://{netloc}/{dbname}" + ("?" + "&".join(query) if query else "")


_URL_USERINFO = re.compile(r"(\w[\w+.-]*://[^:/@\s]*):([^@\s]*)@")


def scrub(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove secrets from a message: the given values and any user:password@ in a URL."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "****")
            quoted = quote(secret, safe="")
            if quoted != secret:
                text = text.replace(quoted, "****")
    text = _URL_USERINFO.sub(r"\1:****@", text)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1****", text)


def parse_url(raw: str, origin: str) -> dict[str, str]:
    """A database URL (or libpq key=value string) -> libpq keywords. Errors never echo the URL."""
    from psycopg.conninfo import conninfo_to_dict

    raw = raw.strip()
    password = None
    if "://" in raw:
        scheme = raw.split("://", 1)[0].lower()
        try:
            password = urlsplit(raw).password
        except ValueError:
            password = None
        dialect, _, driver = scheme.partition("+")
        if dialect not in URL_SCHEMES:
            raise ConfigError(
                f"{origin} is not a valid PostgreSQL URL: scheme {shown(scheme)} — expected "
                "postgresql://user@host:port/dbname"
            )
        if driver and driver not in URL_DRIVERS:
            raise ConfigError(
                f"{origin} names the driver {shown(driver)} — expected postgresql:// or one of "
                + ", ".join(f"postgresql+{d}://" for d in URL_DRIVERS))
        raw = "postgresql" + raw[len(scheme):]
        if driver == "asyncpg":
            raw = _asyncpg_ssl(raw, origin)
    try:
        params = conninfo_to_dict(raw)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's parser; its text echoes the input
        # libpq quotes the offending token, which may be a password given as ?password=...
        secrets = [password or "", raw, *re.findall(r"[?&]password=([^&#]*)", raw)]
        reason = scrub(str(exc).strip(), secrets).splitlines()[0] if str(exc).strip() else "unparsable"
        raise ConfigError(
            f"{origin} is not a valid PostgreSQL URL ({reason}) — expected postgresql://user@host:port/dbname"
        ) from None
    return {k: str(v) for k, v in params.items() if v is not None}


def _asyncpg_ssl(url: str, origin: str) -> str:
    """asyncpg spells libpq's ?sslmode=MODE as ?ssl=MODE (SQLAlchemy's asyncpg dialect passes it on)."""
    from urllib.parse import unquote

    parts = urlsplit(url)
    if not parts.query:
        return url
    query = []
    for item in parts.query.split("&"):  # the other parameters as written: libpq decodes them itself
        key, eq, value = item.partition("=")
        if unquote(key) == "ssl":
            if unquote(value) not in SSL_MODES:
                raise ConfigError(f"{origin}: ssl {shown(unquote(value))} is not an SSL mode — use one of "
                                  f"{', '.join(SSL_MODES)}")
            item = "sslmode" + eq + value
        query.append(item)
    return parts._replace(query="&".join(query)).geturl()


def _check_port(params: dict[str, str], origin: str) -> None:
    for port in (params.get("port") or "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"{origin}: port {shown(port)} is not a number from 1 to 65535 — fix the port")


# ---------------------------------------------------------------------------------------------
# Numbers and durations: one parser with bounds for every option and variable that holds one
#
# Every duration and number minnoctl reads goes through parse_number or parse_duration: nan, inf,
# exponents that overflow (1e400, 1e308 days), negatives where not allowed and values beyond the
# option's bound are one line naming the option, the value (escaped) and what is accepted.

MAX_SPAN_S = 10 * 365 * 86400  # the longest duration any option or variable takes: 10 years
MAX_MS = 2_147_483_647  # PostgreSQL's timeouts (statement_timeout, ...) are int4 milliseconds
MAX_COUNT = 2**31 - 1  # counts and ids minnoctl passes to int4 columns and LIMITs

_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$", re.IGNORECASE | re.ASCII)  # 0-9 only
_DURATION_UNITS = {"ms": 0.001, "sec": 1, "s": 1, "min": 60, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = r"([0-9]+(?:\.[0-9]+)?)\s*(ms|sec|min|s|m|h|d|w)"  # 0-9 only: \d takes ١٢ or １０
_DURATION_RE = re.compile(rf"^(?:{_DURATION_PART}\s*)+$", re.IGNORECASE)
_DURATION_PARTS = re.compile(_DURATION_PART, re.IGNORECASE)
SPAN_AMOUNT = r"[0-9]+(?:\.[0-9]+)?(?:ms|sec|min|s|m|h|d|w)"  # one amount of a span (seed files): 90s, 5min, 2h, 1.5d
DURATION_FORMS = "500ms, 90s, 5min, 2m, 1h30m, 1d"  # the one syntax, as every message names it
_BARE_UNITS = {1: "a number of seconds (30)", 0.001: "milliseconds (30000)", 86400: "a number of days (30)"}


def _number_text(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e18 else f"{value:g}"


def span_text(seconds: float) -> str:
    """A bound as a person reads it: 10 years, 30 s, 1 day."""
    for size, unit in ((365 * 86400, "year"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


def parse_number(text: object, option: str, *, minimum: float | None = 0, maximum: float | None = MAX_COUNT,
                 integer: bool = False, above: bool = False, error: type | None = None,
                 unit: str = "") -> float | int:
    """A number from an option or a variable, finite and within [minimum, maximum] (above: minimum
    excluded), or an error (UsageError unless `error`) naming the option, the value and the range."""
    from minnoctl.errors import UsageError

    error = error or UsageError
    raw = str(text).strip()
    if minimum is not None and maximum is not None and not above:
        bounds = f" from {_number_text(minimum)} to {_number_text(maximum)}"
    else:
        parts = ([] if minimum is None else [f"{'more than' if above else 'at least'} {_number_text(minimum)}"]) + \
            ([] if maximum is None else [f"at most {_number_text(maximum)}"])
        bounds = f", {' and '.join(parts)}" if parts else ""
    expect = f"{'a whole number' if integer else 'a number'}{' of ' + unit if unit else ''}{bounds}"
    fail = error(f"{option} {shown(raw)} is not {expect}")
    if integer:
        if not re.fullmatch(r"[+-]?[0-9]{1,30}", raw):  # 5000 digits would pass int()'s own limit
            raise fail
        value: float | int = int(raw)
    else:
        if not _NUMBER.match(raw):  # no nan, inf, infinity, hex or 1_000
            raise fail
        value = float(raw)
        if not math.isfinite(value):  # 1e400, or a string of 400 digits
            raise fail
    if minimum is not None and (value < minimum or (above and value == minimum)):
        raise fail
    if maximum is not None and value > maximum:
        raise fail
    return value


def span_seconds(text: str) -> float:
    """'90s', '5m', '2h', '1d', '1w', '1h30m', '500ms' -> seconds; a bare number is seconds.
    ValueError else (also for a value too large to be a float). No bounds: see parse_duration."""
    value = text.strip().lower()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", value):
        seconds = float(value)
    elif _DURATION_RE.match(value):
        seconds = sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in _DURATION_PARTS.findall(value))
    else:
        raise ValueError(text)
    if not math.isfinite(seconds):
        raise ValueError(text)
    return seconds


def parse_duration(text: object, option: str, *, allow_zero: bool = False, minimum: float = 0,
                   maximum: float = MAX_SPAN_S, bare: float = 1, error: type | None = None) -> float:
    """A duration in seconds from an option or a variable: '30s', '5min', '15m', '2h', '1d', '1w', '1h30m',
    '500ms'; a bare number counts in units of `bare` seconds (1: seconds; 0.001: milliseconds; 86400: days). More
    than zero (or zero with allow_zero), at least `minimum`, at most `maximum` (10 years unless
    the option says less) — else one line naming the option, the value and the accepted form."""
    from minnoctl.errors import UsageError

    error = error or UsageError
    raw = str(text).strip()
    most = f"{maximum * 1000:.0f} ms" if bare == 0.001 else f"{maximum / 86400:g} days" if bare == 86400 \
        else span_text(maximum)
    if minimum:
        bounds = f"from {span_text(minimum)} to {most}"
    else:
        bounds = f"from zero to {most}" if allow_zero else f"more than zero and at most {most}"
    form = f"{_BARE_UNITS.get(bare, f'a number of {bare:g} s')} or a duration with a unit ({DURATION_FORMS})"
    try:
        if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", raw):
            seconds = float(raw) * bare
            if not math.isfinite(seconds):
                raise ValueError(raw)
        else:
            seconds = span_seconds(raw)
    except ValueError:
        raise error(f"{option} {shown(raw)} is not a duration — use {form}, {bounds}") from None
    if seconds < minimum or (seconds == 0 and not allow_zero) or seconds > maximum:
        raise error(f"{option} {shown(raw)} is out of range — use {form}, {bounds}")
    return seconds


def parse_duration_ms(text: str, origin: str, *, allow_zero: bool = True) -> int:
    """A variable's duration in milliseconds: '30000' (milliseconds, as spec 002 writes them),
    '30s', '500ms', '5min', '1h'; at most PostgreSQL's int4 milliseconds. ConfigError else."""
    seconds = parse_duration(text, origin, allow_zero=allow_zero, bare=0.001, maximum=MAX_MS / 1000, error=ConfigError)
    return int(round(seconds * 1000))


def _positive_int(text: str, origin: str, maximum: int = MAX_COUNT) -> int:
    return int(parse_number(text, origin, minimum=1, maximum=maximum, integer=True, error=ConfigError))


# ---------------------------------------------------------------------------------------------
# Resolution


def default_minno_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("minnoctl", appauthor=False))


def _select_database(database_url: str | None, look: _Lookup,
                     origin: str = "--database-url") -> tuple[dict[str, str], str]:
    if database_url:
        return parse_url(database_url, origin), origin
    # the environment as a whole beats the .env file as a whole
    for single in look.each_layer():
        for name in URL_VARS:
            found = single.get(name)
            if found:
                return parse_url(found[0], found[1]), found[1]
        for group, selectors in ((DB_VARS, DB_SELECTORS), (PG_VARS, PG_SELECTORS)):
            if any(single.get(name) for name in selectors):
                params: dict[str, str] = {}
                names = []
                for name, keyword in group.items():
                    # the layer that selected the group wins, but its parts may be split between
                    # the environment and .env (DB_HOST exported, DB_PASSWORD kept in .env)
                    found = single.get(name) or look.get(name)
                    if found:
                        params[keyword] = found[0]
                        names.append(found[1])
                label = ", ".join(n for n in names if "PASSWORD" not in n) or names[0]
                return params, label
    return {}, "embedded"


def load_settings(
    database_url: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    origin: str = "--database-url",
) -> Settings:
    """Resolve the effective settings. Pure: reads only `env` and the .env file in `cwd`.
    `origin` names where `database_url` came from (a target of the targets file)."""
    if env is None and cwd is None:
        env = environment()  # the invocation's environment (read once), else a fresh read
    if isinstance(env, Environment):  # already read: the .env file is not read again
        look = _Lookup([(None, env.env), (ENV_FILE, env.file)])
    else:
        env = os.environ if env is None else env
        look = _Lookup([(None, env), (ENV_FILE, read_env_file((cwd or Path.cwd()) / ENV_FILE))])

    params, source = _select_database(database_url, look, origin)
    embedded = source == "embedded"
    _check_port(params, source)
    values: dict[str, Value] = {}

    # SSL: explicit URL parameters win; DB_SSL_* fill in what the URL leaves open.
    from_url = {k for k in ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout") if params.get(k)}
    ssl_found = look.get("DB_SSL_MODE")
    if ssl_found:
        mode = ssl_found[0].strip().lower()
        if mode not in SSL_MODES:
            raise ConfigError(f"{ssl_found[1]}={shown(ssl_found[0])} is not an SSL mode — use one of "
                              f"{', '.join(SSL_MODES)}")
        params.setdefault("sslmode", mode)
    else:
        enabled = look.get("DB_SSL_ENABLED")  # spec 002's boolean pair
        if enabled:
            on = enabled[0].strip().lower() in ("1", "true", "yes", "on")
            reject = look.get("DB_SSL_REJECT_UNAUTHORIZED")
            strict = reject is not None and reject[0].strip().lower() in ("1", "true", "yes", "on")
            params.setdefault("sslmode", ("verify-full" if strict else "require") if on else "disable")
            ssl_found = ("", enabled[1])
    if params.get("sslmode") and params["sslmode"] not in SSL_MODES:
        raise ConfigError(f"{source}: sslmode '{params['sslmode']}' is not one of {', '.join(SSL_MODES)}")
    for var, keyword in (("DB_SSL_CA", "sslrootcert"), ("DB_SSL_CERT", "sslcert"), ("DB_SSL_KEY", "sslkey")):
        found = look.get(var)
        if found:
            path = Path(found[0]).expanduser()
            try:
                present = path.is_file()
            except OSError:  # a name too long for the file system
                present = False
            if not present:
                raise ConfigError(f"{found[1]}: no such file {shown(str(path))} — fix the path or unset it")
            params.setdefault(keyword, str(path))
        if params.get(keyword):  # report the value that is used and where it came from
            values[keyword] = Value(params[keyword], source if keyword in from_url or found is None else found[1])
    if params.get("sslmode"):
        values["sslmode"] = Value(params["sslmode"],
                                  source if "sslmode" in from_url or ssl_found is None else ssl_found[1])

    # as for SSL, a connect_timeout written in the URL wins (connection.py passes it on as it is)
    found = look.get("DB_CONNECTION_TIMEOUT")
    if found:  # checked even when the URL's value wins
        env_timeout_ms = parse_duration_ms(found[0], found[1], allow_zero=False)
    if "connect_timeout" in from_url:
        timeout_ms = _positive_int(params["connect_timeout"], f"{source} connect_timeout", MAX_MS // 1000) * 1000
        values["connect_timeout"] = Value(f"{timeout_ms} ms", source)
    elif found:
        timeout_ms = env_timeout_ms
        values["connect_timeout"] = Value(f"{timeout_ms} ms", found[1])
    else:
        timeout_ms = DEFAULT_CONNECTION_TIMEOUT_MS
        values["connect_timeout"] = Value(f"{timeout_ms} ms", "default (spec 002)")
    # libpq takes whole seconds and treats anything under 2 as 2
    connect_timeout_s = max(2, math.ceil(timeout_ms / 1000))

    # An admin tool runs migrations and backups that legitimately take longer than an app's 30 s
    # query limit, so unlike spec 002 there is no statement timeout unless one is configured.
    # DB_QUERY_TIMEOUT is node-postgres' client-side limit; psycopg has none, so it falls back
    # to the server-side statement_timeout.
    statement_timeout_ms = None
    for var in ("DB_STATEMENT_TIMEOUT", "DB_QUERY_TIMEOUT"):
        found = look.get(var)
        if found:
            statement_timeout_ms = parse_duration_ms(found[0], found[1])
            values["statement_timeout"] = Value(f"{statement_timeout_ms} ms", found[1])
            break
    else:
        values["statement_timeout"] = Value("none (server default)", "default")

    found = look.get("DB_IDLE_TIMEOUT")
    idle_timeout_ms = parse_duration_ms(found[0], found[1]) if found else None
    values["idle_session_timeout"] = Value(
        f"{idle_timeout_ms} ms" if found else "none (server default)", found[1] if found else "default"
    )

    found = look.get("DB_POOL_SIZE")
    pool_size = _positive_int(found[0], found[1], MAX_POOL_SIZE) if found else DEFAULT_POOL_SIZE
    values["pool_size"] = Value(pool_size, found[1] if found else "default (spec 002)")

    found = look.get("MINNO_HOME")
    minno_home = Path(found[0]).expanduser() if found else default_minno_home()
    values["minno_home"] = Value(str(minno_home), found[1] if found else "default (user data directory)")
    values["application_name"] = Value(APPLICATION_NAME, "built in")

    settings = Settings(
        params=params,
        source=source,
        embedded=embedded,
        connect_timeout_s=connect_timeout_s,
        statement_timeout_ms=statement_timeout_ms,
        idle_timeout_ms=idle_timeout_ms,
        pool_size=pool_size,
        minno_home=minno_home,
        values=values,
    )
    found = look.get("MINNO_DIRECT_URL")
    if found and source not in ("--database-url", "embedded"):  # pairs with the environment's database only
        direct = parse_url(found[0], found[1])
        _check_port(direct, found[1])
        # the SSL files and mode the DB_SSL_* variables gave the pooled URL apply to the direct one too
        for keyword in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
            if keyword in values and values[keyword].source != source:
                direct.setdefault(keyword, params[keyword])
        settings.direct = replace(settings, params=direct, source=found[1], values={})
    return settings


def has_password_in_url(url: str | None) -> bool:
    if not url:
        return False
    if "://" in url:
        try:
            return bool(urlsplit(url).password)
        except ValueError:
            return True
    return bool(re.search(r"\bpassword\s*=", url))


# ---------------------------------------------------------------------------------------------
# `config show`: every setting minnoctl reads, its value and its source


def _key_row(setting: str, names: tuple[str, str], look: Environment, fallback: tuple[str, str]) -> dict[str, object]:
    """A master key as `config show` lists it: never the key, only its fingerprint (or why it is unusable)."""
    from minnoctl import crypto
    from minnoctl.errors import MinnoctlError

    for name in names:
        found = env_value(name, look)
        if not found:
            continue
        try:
            text = found[0] if name == names[0] else Path(found[0]).expanduser().read_text(encoding="ascii")
            shown_as = f"**** (fingerprint {crypto.fingerprint(crypto.parse_master_key(text, found[1]))})"
        except (MinnoctlError, OSError, UnicodeDecodeError) as exc:
            shown_as = f"**** (not usable: {exc.__class__.__name__})"
        if name != names[0]:
            shown_as = f"{found[0]} {shown_as}"
        return {"setting": setting, "value": shown_as, "source": found[1]}
    return {"setting": setting, "value": fallback[0], "source": fallback[1]}


def _tool_row(name: str, look: Environment) -> dict[str, object]:
    from minnoctl import backup

    forced = env_value("MINNOCTL_PG_BINDIR", look)
    found = backup._candidates(name)
    tool = next((t for t in map(backup._version, found) if t is not None), None)
    value = f"{tool.path} (PostgreSQL {tool.major}{', and others' if len(found) > 1 else ''})" if tool else "not found"
    source = forced[1] if forced else "default (embedded build, /usr/lib/postgresql, PATH; matched to the server)"
    return {"setting": name, "value": value, "source": source}


def report(settings: Settings, env: Mapping[str, str] | None = None,
           cwd: Path | None = None) -> list[dict[str, object]]:
    """Every setting minnoctl reads, with its value and source (default, a variable, `.env: NAME`,
    an option); secrets masked: a password shows as ****, a master key only as its fingerprint."""
    from minnoctl import resources
    from minnoctl.health import registry as health_registry
    from minnoctl.safety import PRODUCTION_ENV_VARS

    try:
        THRESHOLDS = tuple(health_registry.thresholds().values())
    except ConfigError:  # an unreadable MINNOCTL_MIGRATIONS_DIR: shown below as it is, with the core thresholds
        THRESHOLDS = tuple(health_registry.core_thresholds().values())

    look = environment(env, cwd)

    def row(setting: str, name: str, default: object, default_source: str = "default") -> dict[str, object]:
        found = env_value(name, look)
        return {"setting": setting, "value": found[0] if found else default,
                "source": found[1] if found else default_source}

    database = (f"embedded PostgreSQL in {settings.minno_home / 'pgdata'}" if settings.embedded
                else settings.display_url())
    rows: list[dict[str, object]] = [{"setting": "database", "value": database, "source": settings.source}]
    direct_url = env_value("MINNO_DIRECT_URL", look)
    rows.append({"setting": "direct_database",
                 "value": settings.direct.display_url() if settings.direct is not None else
                 ("ignored (the database is not from the environment)" if direct_url else "not set"),
                 "source": settings.direct.source if settings.direct is not None else
                 (direct_url[1] if direct_url else "default (the database above)")})
    rows += [{"setting": k, "value": v.value, "source": v.source} for k, v in settings.values.items()]
    dev = (f"development key in {settings.minno_home / 'master.key'}", "default (embedded database only)") \
        if settings.embedded else ("not set", "default (needed by token commands)")
    rows.append(_key_row("master_key", ("MINNO_MASTER_KEY", "MINNO_MASTER_KEY_FILE"), look, dev))
    rows.append(_key_row("new_master_key", ("MINNO_NEW_MASTER_KEY", "MINNO_NEW_MASTER_KEY_FILE"), look,
                         ("not set", "default")))
    rows.append(row("backup_dir", "MINNO_BACKUP_DIR", "./backups"))
    named = next((found for found in (env_value(n, look) for n in PRODUCTION_ENV_VARS) if found),
                 ("not set", "default (a database marked by db init --environment production still counts)"))
    rows.append({"setting": "environment", "value": named[0], "source": named[1]})
    from minnoctl.migrate import migrations_root

    root, found = migrations_root()  # the one lookup migrate, db init and migrate new use
    rows.append(row("migrations_dir", "MINNOCTL_MIGRATIONS_DIR", str(root or resources.migrations()),
                    "default (the checkout the working directory is in)" if found == "checkout"
                    else "default (the installed package)"))
    rows.append(row("seeds_dir", "MINNOCTL_SEEDS_DIR",
                    str(Path(str(root or resources.migrations())) / "<module>" / "seed"),
                    "default (each module folder's seed/)"))
    rows.append(row("pg_bindir", "MINNOCTL_PG_BINDIR", "not set"))
    rows += [_tool_row(name, look) for name in ("pg_dump", "pg_restore", "psql")]
    for t in THRESHOLDS:
        if env_value(t.env, look):
            rows.append(row(f"health {t.name}", t.env, t.default))
    for name in ("MINNOCTL_HEALTH_ONLY", "MINNOCTL_HEALTH_SKIP"):
        if env_value(name, look):
            rows.append(row(f"health {name.rsplit('_', 1)[1].lower()}", name, ""))
    rows.append(row("traceback", "MINNOCTL_TRACEBACK", "0"))
    # colour is the terminal's setting: NO_COLOR and TERM=dumb count from the environment only
    plain = plain_terminal(env) == "NO_COLOR"
    rows.append({"setting": "no_color", "value": "yes" if plain else "no",
                 "source": "NO_COLOR" if plain else "default (environment only)"})
    return rows


# ---------------------------------------------------------------------------------------------
# The README's table of variables, generated from SETTINGS (python -m minnoctl.readme --write)

README_START = ("<!-- environment variables: generated from minnoctl/config.py SETTINGS (python -m minnoctl.readme "
                "--write) -->")
README_END = "<!-- end of the generated environment variables -->"


def markdown_table() -> str:
    """The README's table of every variable minnoctl reads (between README_START and README_END)."""
    from minnoctl.readme import markdown_rows

    rows = []
    for s in SETTINGS:
        notes = [n for n, on in (("secret: never shown", s.secret), ("environment only, not `.env`",
                                                                     not s.dotenv and s.read)) if on]
        rows.append((f"`{s.name}`", s.purpose + (f" ({'; '.join(notes)})" if notes else ""), s.default, s.used_by))
    return markdown_rows(("variable", "meaning", "default", "read by"), rows)


def readme_with_table(readme: str) -> str:
    """`readme` with the text between the markers replaced by markdown_table()."""
    from minnoctl.readme import replace_between

    return replace_between(readme, README_START, README_END, markdown_table(), "table of environment variables")
