"""Application connections: one login role per system, least privilege, kept after every migration.

`minnoctl app create` gives each application (a module, or several modules for one service) a
login role of its own:

- its `search_path` is a role setting for this database (ALTER ROLE r IN DATABASE d SET ...): its
  module schemas in order, then `minno` (the core), then `public` (the extensions). A role setting
  is applied by the server when a session starts, so it holds through PgBouncer in transaction
  pooling (every pooled server connection of the role starts with it) and no session SET is needed;
- it gets exactly: USAGE on its schemas; SELECT, INSERT, UPDATE, DELETE on their tables and views;
  USAGE, SELECT on their sequences; EXECUTE on their functions except SECURITY DEFINER ones (the
  keyring guard minno.reject_retired_field_keys runs as its owner, fires as a trigger without the
  writer holding EXECUTE, and keeps EXECUTE revoked from everyone); for a module with encrypted
  columns, USAGE on minno and SELECT on minno.encryption_keys (the wrapped data keys minnoctl.crypto
  needs); CREATE on its schemas only with --allow-ddl. The keyring (minno.encryption_keys and
  minno.key_audit_log, the minno entry's seed_keeps) is never writable by an app, also not by
  minno's own; other modules' schemas are never granted, and of minnoctl's bookkeeping only
  SELECT on minnoctl.migrations (so `minnoctl health --ready` runs as the app's login);
- the same grants are made default privileges of the migrating role in those schemas, and the
  roles are recorded in minnoctl.app_roles; migrate.migrate() and migrate.init() call keep_grants()
  after a run that applied something, which re-applies every recorded role's grants (a role dropped
  by hand is reported, not recreated).

Every change of one `app create` is one transaction (CREATE ROLE is transactional too), checked
before commit: a grant that did not take (objects owned by another role) fails the whole command.
The password never goes to the server in clear (a SCRAM verifier computed by libpq) nor to argv,
stdout, stderr or logs: it goes to a 0600 env file written atomically after the commit.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minnoctl import locks, modules
from minnoctl.errors import ExitCode, MinnoctlError, UsageError
from minnoctl.render_text import shown
from minnoctl.rows import one

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("minnoctl")

BOOKKEEPING = modules.BOOKKEEPING
CORE = "minno"
KEYRING = modules.get(CORE).seed_keeps  # ("encryption_keys", "key_audit_log"): never writable by an app
KEYRING_READ = "encryption_keys"  # what an app with encrypted columns reads (the wrapped data keys)
# the one table of minnoctl's own an app reads: which migrations are applied (ids, checksums, when,
# by whom; no secret), so `minnoctl health --ready` runs as the app's own login in a readiness probe
READY_RECORD = "migrations"
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
ALL_TABLE_PRIVILEGES = TABLE_PRIVILEGES + ("TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT")
_LOCK_KEY = 16  # a transaction-level advisory lock (locks.NAMESPACE, 16): one app-role change at a time
_RESERVED = {"public", "none", "current_user", "session_user", "current_role", "user", "all"}


@dataclass
class Created:
    """One role of `app create`: what the application uses (never its password)."""

    role: str
    modules: list[str]
    search_path: list[str]
    url: str  # postgresql://role@host:port/db?... without any password
    env_file: str | None
    password: str  # generated | from stdin | unchanged
    created: bool

    def record(self) -> dict[str, Any]:
        return {"role": self.role, "modules": self.modules, "search_path": ", ".join(self.search_path),
                "url": self.url, "env_file": self.env_file, "password": self.password}


@dataclass
class Listed:
    role: str
    modules: list[str]
    search_path: str | None  # as set for this database, None when not set
    allow_ddl: bool
    exists: bool
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.exists:
            return "role missing"
        return "complete" if not self.missing and not self.extra else "incomplete"

    def record(self) -> dict[str, Any]:
        return {"role": self.role, "modules": self.modules, "search_path": self.search_path,
                "allow_ddl": self.allow_ddl, "exists": self.exists, "status": self.status,
                "missing": self.missing, "extra": self.extra}


@dataclass
class Dropped:
    role: str
    revoked: bool
    dropped: bool
    note: str

    def record(self) -> dict[str, Any]:
        return {"role": self.role, "revoked": self.revoked, "dropped": self.dropped, "note": self.note}


# ---------------------------------------------------------------------------------------------
# Names, paths, passwords


def check_role_name(name: str) -> str:
    """A role name minnoctl may create or change: 1-63 bytes, no control characters, not reserved."""
    if not name or len(name.encode("utf-8")) > 63:
        raise UsageError(f"role name {shown(name)} must be 1 to 63 bytes long — e.g. chatbot_app")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise UsageError(f"role name {shown(name)} holds a control character — give a plain name, e.g. chatbot_app")
    if name.lower().startswith("pg_") or name.lower() in _RESERVED:
        raise UsageError(f"role name {shown(name)} is reserved by PostgreSQL — choose another, e.g. chatbot_app")
    return name


def check_password(password: str) -> str:
    if not password:
        raise UsageError("--password-stdin read an empty password — give one line with the password on stdin")
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise UsageError("--password-stdin: the password holds a control character (only its first line is read) "
                         "— give a password without")
    if len(password) > 1000:
        raise UsageError("--password-stdin: the password is longer than 1000 characters — give a shorter one")
    return password


def default_env_file(role: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*", role):
        raise UsageError(f"role name {shown(role)} makes no safe file name — give --env-file PATH")
    return Path(f"{role}.env")


def _check_env_target(path: Path) -> None:
    """Refuse before any change a path that cannot take the file or holds other settings."""
    if path.is_dir():
        raise UsageError(f"--env-file {shown(str(path))} is a directory — give a file path, e.g. {path / 'app.env'}")
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not path.is_file():
            raise UsageError(f"--env-file {shown(str(path))} is not a regular file — give another path")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise UsageError(f"--env-file {shown(str(path))} exists and cannot be read — remove it or give another "
                             "path") from None
        others = [ln for ln in text.splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#") and not ln.strip().startswith("DATABASE_URL=")]
        if others:
            raise UsageError(f"--env-file {shown(str(path))} already holds other settings; minnoctl only replaces a "
                             "file of its own — give another path and copy the DATABASE_URL line over")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"--env-file {shown(str(path))}: the directory {shown(str(path.absolute().parent))} "
                         "does not exist — create it or give another path")


class _EnvFile:
    """DATABASE_URL=... in a temporary file created 0600 beside its path, renamed over it after the
    commit (atomic: a reader sees the old file or the new one, never half of one)."""

    def __init__(self, path: Path, url: str):
        self.path = path
        fd, tmp = tempfile.mkstemp(dir=str(path.absolute().parent), prefix=f".{path.name}.", suffix=".tmp")
        self.tmp = Path(tmp)
        try:
            # single-quoted when the shell would read a character specially (&: several parameters);
            # dotenv, python-dotenv, systemd and minnoctl's own .env reader all remove the quotes
            value = url if re.fullmatch(r"[A-Za-z0-9_.~:/?=@%+,-]*", url) else f"'{url}'"
            os.write(fd, f"DATABASE_URL={value}\n".encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.discard()
            raise
        os.close(fd)

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------------------
# Catalog helpers


def _sql() -> Any:
    from psycopg import sql

    return sql


def _ident(name: str) -> Any:
    return _sql().Identifier(name)


def search_path_for(mods: list[modules.Module]) -> list[str]:
    path = [m.schema for m in mods]
    for schema in (CORE, "public"):
        if schema not in path:
            path.append(schema)
    return path


def _existing_schemas(conn: "psycopg.Connection", names: list[str]) -> list[str]:
    rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (names,)).fetchall()
    found = {r[0] for r in rows}
    return [n for n in names if n in found]


def _all_schemas(conn: "psycopg.Connection") -> list[str]:
    """Every schema minnoctl manages that exists here: the modules' and its bookkeeping."""
    return _existing_schemas(conn, [m.schema for m in modules.MODULES] + [BOOKKEEPING])


def installed(conn: "psycopg.Connection") -> list[modules.Module]:
    from minnoctl import migrate

    names = migrate.installed_modules(migrate.read_applied(conn))
    return [m for m in modules.MODULES if m.name in names]


def _role_row(conn: "psycopg.Connection", role: str) -> tuple[Any, ...] | None:
    """(superuser, can log in, is the role minnoctl connects as) of `role`, or None."""
    return conn.execute(
        "SELECT rolsuper, rolcanlogin, rolname = current_user OR rolname = session_user "
        "  FROM pg_roles WHERE rolname = %s", (role,)).fetchone()


def _owns_managed_objects(conn: "psycopg.Connection", role: str, own: list[str]) -> bool:
    """Whether `role` owns one of minnoctl's schemas, or objects in one outside its own `own`
    schemas (where --allow-ddl lets an app own what it creates): the migrating role, say."""
    return bool(one(conn.execute(
        """SELECT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = ANY(%(s)s) AND n.nspowner = %(r)s::regrole)
               OR EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE n.nspname = ANY(%(s)s) AND NOT n.nspname = ANY(%(own)s)
                             AND c.relowner = %(r)s::regrole)
               OR EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                           WHERE n.nspname = ANY(%(s)s) AND NOT n.nspname = ANY(%(own)s)
                                 AND p.proowner = %(r)s::regrole)""",
        {"s": _all_schemas(conn), "own": own, "r": _quote_ident(role)}))[0])


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _refuse_untouchable(conn: "psycopg.Connection", role: str, row: tuple[Any, ...], own: list[str]) -> None:
    superuser, _login, is_self = row
    if superuser:
        raise MinnoctlError(f"refusing to touch role {shown(role)}: it is a superuser — an application needs a "
                            "role of its own (leave --role out, or name a plain login role)", exit_code=ExitCode.USAGE)
    if is_self:
        raise MinnoctlError(f"refusing to touch role {shown(role)}: minnoctl itself connects as it — give the "
                            "application a role of its own", exit_code=ExitCode.USAGE)
    if _owns_managed_objects(conn, role, own):
        raise MinnoctlError(f"refusing to touch role {shown(role)}: it owns minnoctl's schemas or objects in them "
                            "(it runs the migrations) — give the application a role of its own",
                            exit_code=ExitCode.USAGE)


# ---------------------------------------------------------------------------------------------
# What a role should hold, and what it holds


def _expected_sql() -> str:
    return """
WITH own AS (SELECT oid, nspname FROM pg_namespace WHERE nspname = ANY(%(own)s)),
rels AS (
  SELECT c.oid, n.nspname, c.relname, c.relkind, c.relowner,
         pg_get_userbyid(c.relowner) = ANY(%(apps)s) AS apps_own
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = ANY(%(all)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
),
want (kind, name, priv, ok) AS (
  SELECT 'schema', nspname, p, has_schema_privilege(%(r)s, oid, p) FROM own, unnest(%(schema_privs)s::text[]) p
  UNION ALL
  SELECT 'table', format('%%I.%%I', nspname, relname), p, has_table_privilege(%(r)s, oid, p)
    FROM rels, unnest(%(table_privs)s::text[]) p
   WHERE relkind <> 'S' AND nspname = ANY(%(own)s) AND NOT (nspname = %(core)s AND relname = ANY(%(keyring)s))
     AND NOT apps_own
  UNION ALL
  SELECT 'sequence', format('%%I.%%I', nspname, relname), p, has_sequence_privilege(%(r)s, oid, p)
    FROM rels, unnest(%(seq_privs)s::text[]) p WHERE relkind = 'S' AND nspname = ANY(%(own)s) AND NOT apps_own
  UNION ALL
  SELECT 'function', format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
         'EXECUTE', has_function_privilege(%(r)s, p.oid, 'EXECUTE')
    FROM pg_proc p JOIN own n ON n.oid = p.pronamespace WHERE p.prokind IN ('f', 'p') AND NOT p.prosecdef
     AND NOT pg_get_userbyid(p.proowner) = ANY(%(apps)s)
  UNION ALL
  SELECT 'schema', nspname, 'USAGE', has_schema_privilege(%(r)s, oid, 'USAGE')
    FROM pg_namespace WHERE %(keys)s AND nspname = %(core)s
  UNION ALL
  SELECT 'table', format('%%I.%%I', nspname, relname), 'SELECT', has_table_privilege(%(r)s, oid, 'SELECT')
    FROM rels WHERE %(keys)s AND nspname = %(core)s AND relname = %(keyring_read)s
  UNION ALL
  SELECT 'schema', nspname, 'USAGE', has_schema_privilege(%(r)s, oid, 'USAGE')
    FROM pg_namespace WHERE nspname = %(book)s
  UNION ALL
  SELECT 'table', format('%%I.%%I', nspname, relname), 'SELECT', has_table_privilege(%(r)s, oid, 'SELECT')
    FROM rels WHERE nspname = %(book)s AND relname = %(record)s
),
extra (kind, name, priv, ok) AS (
  SELECT 'schema', n.nspname, p, has_schema_privilege(%(r)s, n.oid, p)
    FROM pg_namespace n, unnest(ARRAY['USAGE', 'CREATE']) p WHERE n.nspname = ANY(%(all)s)
  UNION ALL
  SELECT 'table', format('%%I.%%I', nspname, relname), p, has_table_privilege(%(r)s, oid, p)
    FROM rels, unnest(%(all_table_privs)s::text[]) p WHERE relkind <> 'S' AND relowner <> %(rq)s::regrole
     AND NOT apps_own
  UNION ALL
  SELECT 'sequence', format('%%I.%%I', nspname, relname), p, has_sequence_privilege(%(r)s, oid, p)
    FROM rels, unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p WHERE relkind = 'S' AND relowner <> %(rq)s::regrole
     AND NOT apps_own
)
SELECT 'missing', kind, name, priv FROM want WHERE NOT ok
UNION ALL
SELECT 'extra', e.kind, e.name, e.priv FROM extra e
 WHERE e.ok AND NOT EXISTS (SELECT 1 FROM want w WHERE (w.kind, w.name, w.priv) = (e.kind, e.name, e.priv))
ORDER BY 1, 2, 3, 4
"""


def audit(conn: "psycopg.Connection", role: str, mods: list[modules.Module], allow_ddl: bool
          ) -> tuple[list[str], list[str]]:
    """(missing, extra) privileges of `role` against what an app role of `mods` holds, each as
    'SELECT on table chatbot.messages'. Extra counts only minnoctl's schemas (grants elsewhere are
    the admin's business); privileges through PUBLIC count as held. Objects another app role owns
    (its own --allow-ddl tables, e.g. spec 002's `migrations`) are that app's: not expected here."""
    schemas = _existing_schemas(conn, [m.schema for m in mods])
    apps = [r for r, _, _ in records(conn) if r != role]
    rows = conn.execute(_expected_sql(), {
        "apps": apps, "book": BOOKKEEPING, "record": READY_RECORD,
        "own": schemas, "all": _all_schemas(conn), "r": role, "rq": _quote_ident(role), "core": CORE,
        "schema_privs": ["USAGE", "CREATE"] if allow_ddl else ["USAGE"],
        "table_privs": list(TABLE_PRIVILEGES), "all_table_privs": list(ALL_TABLE_PRIVILEGES),
        "seq_privs": list(SEQUENCE_PRIVILEGES), "keyring": list(KEYRING), "keyring_read": KEYRING_READ,
        "keys": any(m.encrypted for m in mods),
    }).fetchall()
    missing = [f"{priv} on {kind} {name}" for what, kind, name, priv in rows if what == "missing"]
    extra = [f"{priv} on {kind} {name}" for what, kind, name, priv in rows if what == "extra"]
    if not one(conn.execute("SELECT has_database_privilege(%s, current_database(), 'CONNECT')",
                            (role,)))[0]:
        missing.insert(0, "CONNECT on database")
    return missing, extra


def _summary(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ---------------------------------------------------------------------------------------------
# Applying the grants


_HELD_SQL = """
SELECT 'SCHEMA', quote_ident(n.nspname) FROM pg_namespace n
 WHERE n.nspname = ANY(%(s)s) AND n.nspowner <> %(r)s::regrole
   AND EXISTS (SELECT 1 FROM aclexplode(n.nspacl) a WHERE a.grantee = %(r)s::regrole)
UNION ALL
SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, format('%%I.%%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY(%(s)s) AND c.relowner <> %(r)s::regrole
   AND EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = %(r)s::regrole)
UNION ALL
SELECT 'ROUTINE', format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = ANY(%(s)s) AND p.proowner <> %(r)s::regrole
   AND EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = %(r)s::regrole)
ORDER BY 1, 2
"""


def _revoke_statements(conn: "psycopg.Connection", role: str, grantor: str) -> list[Any]:
    """Revoke what `role` holds in minnoctl's schemas (never on what it owns itself: an app's own
    --allow-ddl tables keep their owner's rights) and its default privileges from `grantor`."""
    sql = _sql()
    r, g = _ident(role), _ident(grantor)
    schemas = _all_schemas(conn)
    out = [sql.SQL("REVOKE ALL ON {} {} FROM {}").format(sql.SQL(kind), sql.SQL(name), r)
           for kind, name in conn.execute(_HELD_SQL, {"s": schemas, "r": _quote_ident(role)}).fetchall()]
    # default privileges: the grantor's in every managed schema, and any other role's that names
    # this one there (an earlier `app create` run by another admin) when the grantor may act for it
    pairs = {(grantor, schema) for schema in schemas}
    pairs |= set(conn.execute(
        "SELECT d.defaclrole::regrole::text, n.nspname FROM pg_default_acl d "
        "JOIN pg_namespace n ON n.oid = d.defaclnamespace "
        "WHERE n.nspname = ANY(%(s)s) AND pg_has_role(current_user, d.defaclrole, 'MEMBER') "
        "AND EXISTS (SELECT 1 FROM aclexplode(d.defaclacl) a WHERE a.grantee = %(r)s::regrole)",
        {"s": schemas, "r": _quote_ident(role)}).fetchall())
    for owner, schema in sorted(pairs):
        who = g if owner == grantor else sql.SQL(owner)  # regrole text is already quoted as needed
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            out.append(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE ALL ON {} FROM {}").format(
                who, _ident(schema), sql.SQL(kind), r))
    return out


def _grant_statements(conn: "psycopg.Connection", role: str, mods: list[modules.Module], allow_ddl: bool,
                      grantor: str) -> list[Any]:
    sql = _sql()
    r, g = _ident(role), _ident(grantor)
    out = []
    schemas = _existing_schemas(conn, [m.schema for m in mods])
    for schema in schemas:
        s = _ident(schema)
        out += [
            sql.SQL("GRANT USAGE{} ON SCHEMA {} TO {}").format(sql.SQL(", CREATE" if allow_ddl else ""), s, r),
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES "
                    "TO {}").format(g, s, r),
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT USAGE, SELECT ON SEQUENCES TO {}").format(
                g, s, r),
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT EXECUTE ON FUNCTIONS TO {}").format(
                g, s, r),
        ]
    # tables and sequences one at a time: not those another app role owns (its own --allow-ddl
    # tables are its business, and `app list` does not expect them)
    apps = [a for a, _, _ in records(conn) if a != role]
    for kind, name in conn.execute(
            "SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, "
            "format('%%I.%%I', n.nspname, c.relname) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') "
            "AND NOT pg_get_userbyid(c.relowner) = ANY(%s) ORDER BY 1, 2", (schemas, apps)).fetchall():
        privileges = "USAGE, SELECT" if kind == "SEQUENCE" else "SELECT, INSERT, UPDATE, DELETE"
        out.append(sql.SQL("GRANT {} ON {} {} TO {}").format(sql.SQL(privileges), sql.SQL(kind), sql.SQL(name), r))
    # EXECUTE one function at a time: never on a SECURITY DEFINER one (they keep EXECUTE revoked)
    for (name,) in conn.execute(
            "SELECT format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = ANY(%s) AND p.prokind IN ('f', 'p') AND NOT p.prosecdef "
            "AND NOT pg_get_userbyid(p.proowner) = ANY(%s) ORDER BY 1", (schemas, apps)).fetchall():
        out.append(sql.SQL("GRANT EXECUTE ON ROUTINE {} TO {}").format(sql.SQL(name), r))
    keyring = [t for (t,) in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) ORDER BY 1", (CORE, list(KEYRING))).fetchall()]
    if CORE in schemas:
        for table in keyring:
            out.append(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(CORE, table), r))
    if any(m.encrypted for m in mods) and _existing_schemas(conn, [CORE]):
        out.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_ident(CORE), r))
        if KEYRING_READ in keyring:
            out.append(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(CORE, KEYRING_READ), r))
    if one(conn.execute("SELECT to_regclass(%s)", (f"{BOOKKEEPING}.{READY_RECORD}",)))[0] is not None:
        out.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_ident(BOOKKEEPING), r))
        out.append(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(BOOKKEEPING, READY_RECORD), r))
    if not one(conn.execute("SELECT has_database_privilege(%s, current_database(), 'CONNECT')",
                            (role,)))[0]:
        out.append(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(_ident(conn.info.dbname), r))
    return out


def _run(conn: "psycopg.Connection", statements: list[Any]) -> None:
    """Statements in one round trip (the simple query protocol takes several at once)."""
    if statements:
        sql = _sql()
        conn.execute(sql.SQL("; ").join(statements).as_string(conn).encode("utf-8"), prepare=False)


def _set_search_path(conn: "psycopg.Connection", role: str, path: list[str]) -> None:
    sql = _sql()
    conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(
        _ident(role), _ident(conn.info.dbname), sql.SQL(", ").join(_ident(s) for s in path)))


def _apply(conn: "psycopg.Connection", role: str, mods: list[modules.Module], allow_ddl: bool) -> None:
    """Set the role's search_path and exactly its grants, then check them (inside the caller's
    transaction): anything missing is an error naming it, and the transaction rolls back."""
    grantor = one(conn.execute("SELECT current_user"))[0]
    _set_search_path(conn, role, search_path_for(mods))
    _run(conn, _revoke_statements(conn, role, grantor) + _grant_statements(conn, role, mods, allow_ddl, grantor))
    missing, extra = audit(conn, role, mods, allow_ddl)
    if missing:
        raise MinnoctlError(
            f"could not grant role {shown(role)} {_summary(missing)} — run minnoctl as the role that owns the "
            "schemas' objects (the one that ran the migrations); nothing was changed")
    if extra:
        log.warning("role %s also holds, through PUBLIC or another grantor: %s", role, _summary(extra))


def _record(conn: "psycopg.Connection", role: str, mods: list[modules.Module], allow_ddl: bool) -> None:
    from minnoctl import bookkeeping

    bookkeeping.ensure(conn, ("app_roles",))  # created by the first app create
    conn.execute(
        f"INSERT INTO {BOOKKEEPING}.app_roles (role, modules, allow_ddl) VALUES (%s, %s, %s) "
        "ON CONFLICT (role) DO UPDATE SET modules = excluded.modules, allow_ddl = excluded.allow_ddl, "
        "updated_at = now(), updated_by = current_user", (role, [m.name for m in mods], allow_ddl))


def remember(conn: "psycopg.Connection", recorded: list[tuple[str, list[str], bool]]) -> None:
    """Record `recorded` (records()) again, in the caller's transaction: db init --force's drop."""
    for role, names, allow_ddl in recorded:
        _record(conn, role, _known_modules(names), allow_ddl)


def _lock(conn: "psycopg.Connection") -> None:
    conn.execute("SET LOCAL lock_timeout = '30s'")
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (locks.NAMESPACE, _LOCK_KEY))


def _encrypt(conn: "psycopg.Connection", password: str, role: str) -> str:
    """The SCRAM-SHA-256 verifier of the password (libpq's PQencryptPasswordConn): the server never
    sees the password itself, so no statement log or pg_stat_activity can show it."""
    return conn.pgconn.encrypt_password(password.encode("utf-8"), role.encode("utf-8"),
                                        b"scram-sha-256").decode("ascii")


# ---------------------------------------------------------------------------------------------
# app create


@dataclass
class _Plan:
    role: str
    mods: list[modules.Module]
    env_path: Path | None = None
    exists: bool = False
    password: str | None = None
    source: str = "unchanged"


def _resolve_modules(conn: "psycopg.Connection", names: list[str]) -> list[modules.Module]:
    chosen = [modules.get(n) for n in dict.fromkeys(names)]  # unknown: UsageError (exit 2)
    have = {m.name for m in installed(conn)}
    absent = [m.name for m in chosen if m.name not in have]
    if absent:
        raise MinnoctlError(f"module {', '.join(absent)} is not installed in this database — install it first "
                            f"(minnoctl db init --modules {','.join(absent)}); nothing was changed",
                            exit_code=ExitCode.NOT_FOUND)
    return chosen


def app_url(params: dict[str, str], role: str, password: str | None = None) -> str:
    """postgresql://role[:password]@host:port/db?sslmode=... in config.display_url's form (a unix
    socket as ?host=/dir&port=N); the password percent-encoded."""
    from urllib.parse import quote

    from minnoctl.config import display_url

    shown_url = display_url({k: v for k, v in params.items() if k != "password"} | {"user": role})
    if password is None:
        return shown_url
    prefix = f"postgresql://{quote(role, safe='')}@"
    assert shown_url.startswith(prefix)
    return f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@" + shown_url[len(prefix):]


def target_params(conn: "psycopg.Connection", sslmode: str | None) -> dict[str, str]:
    """host, port, dbname of the admin connection (as connected), and its sslmode if one was set."""
    info = conn.info
    params = {"host": info.host, "port": str(info.port), "dbname": info.dbname}
    given = info.get_parameters()
    if given.get("hostaddr") and not given.get("host"):
        params["host"] = given["hostaddr"]
    if sslmode:
        params["sslmode"] = sslmode
    return params


def create(conn: "psycopg.Connection", names: list[str], *, role: str | None = None, password: str | None = None,
           new_password: bool = False, env_file: Path | None = None, allow_ddl: bool = False,
           sslmode: str | None = None) -> list[Created]:
    """Create or update the app role(s); `password` is the one read from stdin (else generated
    when the role is new or `new_password`). `conn` is autocommit; everything runs in one
    transaction. Returns one record per role; the env files are written after the commit."""
    import psycopg

    if role is not None and not names:
        raise UsageError("--role needs the modules it serves, e.g. minnoctl app create supervisor knowledge "
                         "--role supervisor_app")
    if role is not None:
        check_role_name(role)
    if password is not None:
        check_password(password)
        if new_password:
            raise UsageError("--password-stdin sets the password already — leave out --new-password")
    if names:
        chosen = _resolve_modules(conn, names)
        plans = [_Plan(role, chosen)] if role is not None else [_Plan(f"{m.name}_app", [m]) for m in chosen]
    else:
        chosen = installed(conn)
        if not chosen:
            raise MinnoctlError("no module is installed in this database — run minnoctl db init first",
                                exit_code=ExitCode.NOT_FOUND)
        plans = [_Plan(f"{m.name}_app", [m]) for m in chosen]
    if len(plans) > 1 and password is not None:
        raise UsageError(f"--password-stdin sets one role's password, and this makes {len(plans)} roles — name one "
                         "module, or give --role NAME")
    if len(plans) > 1 and env_file is not None:
        raise UsageError(f"--env-file names one file, and this makes {len(plans)} roles (each gets ./<role>.env) — "
                         "name one module, or give --role NAME")
    me = conn.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
    for plan in plans:
        row = _role_row(conn, plan.role)
        plan.exists = row is not None
        if row is not None:
            _refuse_untouchable(conn, plan.role, row, [m.schema for m in plan.mods])
        elif not (me and (me[0] or me[1])):
            raise MinnoctlError(f"role {shown(plan.role)} does not exist, and creating a role needs CREATEROLE — ask "
                                "an admin, or pass --role NAME of an existing role")
        if password is not None:
            plan.password, plan.source = password, "from stdin"
        elif new_password or not plan.exists:
            plan.password, plan.source = secrets.token_urlsafe(32), "generated"
        if plan.password is not None:
            plan.env_path = env_file if env_file is not None else default_env_file(plan.role)
            _check_env_target(plan.env_path)
    params = target_params(conn, sslmode)
    files: list[_EnvFile] = []
    results: list[Created] = []
    try:
        try:
            with conn.transaction():
                _lock(conn)
                for plan in plans:
                    if not plan.exists:
                        conn.execute(_sql().SQL(
                            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION "
                            "NOBYPASSRLS").format(_ident(plan.role)))
                    if plan.password is not None:
                        conn.execute(_sql().SQL("ALTER ROLE {} PASSWORD {}").format(
                            _ident(plan.role), _sql().Literal(_encrypt(conn, plan.password, plan.role))))
                    _apply(conn, plan.role, plan.mods, allow_ddl)
                    _record(conn, plan.role, plan.mods, allow_ddl)
                    log.info("%s role %s for %s", "updated" if plan.exists else "created", plan.role,
                             ", ".join(m.name for m in plan.mods))
                    env_shown = None
                    if plan.password is not None:
                        assert plan.env_path is not None
                        files.append(_EnvFile(plan.env_path, app_url(params, plan.role, plan.password)))
                        env_shown = os.path.abspath(plan.env_path)
                    results.append(Created(plan.role, [m.name for m in plan.mods], search_path_for(plan.mods),
                                           app_url(params, plan.role), env_shown, plan.source, not plan.exists))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise MinnoctlError(
                f"permission denied changing the app role: {exc.diag.message_primary or 'insufficient privilege'} — "
                "creating or changing a role needs CREATEROLE (on PostgreSQL 16+ also ADMIN OPTION on that role) "
                "and the grants need the owner of the schemas: ask an admin, or pass --role NAME of a role you "
                "administer; nothing was changed") from None
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            raise MinnoctlError("another session created the same role meanwhile — run the command again (it then "
                                "updates that role); nothing was changed") from None
    except BaseException:
        for f in files:
            f.discard()
        raise
    for f in files:
        f.commit()
    for result in results:
        row = _role_row(conn, result.role)
        if row is not None and not row[1]:
            log.warning("role %s cannot log in (NOLOGIN) — ALTER ROLE %s LOGIN, if the application connects as it",
                        result.role, result.role)
    return results


# ---------------------------------------------------------------------------------------------
# app list


def records(conn: "psycopg.Connection") -> list[tuple[str, list[str], bool]]:
    """The recorded app roles: (role, module names, allow_ddl)."""
    if one(conn.execute("SELECT to_regclass(%s)", (f"{BOOKKEEPING}.app_roles",)))[0] is None:
        return []
    return [(r[0], list(r[1]), r[2]) for r in conn.execute(
        f"SELECT role, modules, allow_ddl FROM {BOOKKEEPING}.app_roles ORDER BY role").fetchall()]


def _role_search_path(conn: "psycopg.Connection", role: str) -> str | None:
    row = conn.execute(
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = current_database() AND r.rolname = %s",
        (role,)).fetchone()
    for item in (row[0] if row else None) or []:
        key, _, value = item.partition("=")
        if key == "search_path":
            return value
    return None


def _known_modules(names: list[str]) -> list[modules.Module]:
    return [modules.BY_NAME[n] for n in names if n in modules.BY_NAME]


def list_roles(conn: "psycopg.Connection") -> list[Listed]:
    out = []
    for role, names, allow_ddl in records(conn):
        mods = _known_modules(names)
        exists = _role_row(conn, role) is not None
        item = Listed(role, names, _role_search_path(conn, role) if exists else None, allow_ddl, exists)
        if exists:
            item.missing, item.extra = audit(conn, role, mods, allow_ddl)
            wanted = ", ".join(_quote_if_needed(s) for s in search_path_for(mods))
            if item.search_path != wanted:
                item.missing.insert(0, f"search_path {wanted} (set: {item.search_path or 'none'})")
        out.append(item)
    return out


def _quote_if_needed(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else _quote_ident(name)


# ---------------------------------------------------------------------------------------------
# After a migration


def keep_grants(conn: "psycopg.Connection", restore: list[tuple[str, list[str], bool]] | None = None) -> list[str]:
    """Re-apply every recorded app role's grants (migrate and db init call this after applying
    something). Returns the roles kept; a recorded role that no longer exists is reported (a
    warning), never recreated. `restore`: the records read before `db init --force` dropped
    minnoctl's schemas, recorded again. Never raises: the migrations are committed; a failure is a
    warning naming the command that retries it."""
    import psycopg

    try:
        recorded = records(conn) if restore is None else restore
    except psycopg.Error:
        return []
    kept = []
    for role, names, allow_ddl in recorded:
        try:
            with conn.transaction():
                _lock(conn)
                if _role_row(conn, role) is None:
                    log.warning("app role %s (%s) is recorded but no longer exists: it was dropped by hand — "
                                "`minnoctl app create %s --role %s` makes it again, `minnoctl app drop %s --yes` "
                                "forgets it", role, ", ".join(names), " ".join(names), role, role)
                    continue
                _apply(conn, role, _known_modules(names), allow_ddl)
                if restore is not None:
                    _record(conn, role, _known_modules(names), allow_ddl)
            kept.append(role)
        except (psycopg.Error, MinnoctlError) as exc:
            reason = exc.message if isinstance(exc, MinnoctlError) else str(exc).strip().splitlines()[0]
            log.warning("could not re-apply the grants of app role %s after the migration: %s — run "
                        "`minnoctl app create %s --role %s` to retry", role, reason, " ".join(names), role)
    if kept:
        log.info("re-applied the grants of app role(s) %s", ", ".join(kept))
    return kept


# ---------------------------------------------------------------------------------------------
# app drop


def drop(conn: "psycopg.Connection", role: str, approve: Any = None) -> Dropped:
    """Revoke the app role's privileges and default privileges in this database, remove its
    search_path setting and its record; drop the role when nothing else holds it (it owns
    nothing, has no privileges or settings in other databases). One transaction. `approve()` is
    called once the role is known to be an app role, before anything changes (the CLI's confirmation)."""
    import psycopg

    check_role_name(role)
    sql = _sql()
    recorded = {r[0]: r for r in records(conn)}
    row = _role_row(conn, role)
    if role not in recorded:
        known = ", ".join(recorded) or "none"
        raise MinnoctlError(f"{shown(role)} is not an app role of this database (recorded: {known}) — "
                            "`minnoctl app list` shows them", exit_code=ExitCode.NOT_FOUND)
    if row is not None:
        _refuse_untouchable(conn, role, row, [m.schema for m in _known_modules(recorded[role][1])])
    if approve is not None:
        approve()
    with conn.transaction():
        _lock(conn)
        if row is None:
            conn.execute(f"DELETE FROM {BOOKKEEPING}.app_roles WHERE role = %s", (role,))
            return Dropped(role, False, False, "the role no longer existed; its record is removed")
        grantor = one(conn.execute("SELECT current_user"))[0]
        statements = _revoke_statements(conn, role, grantor)
        statements.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(_ident(conn.info.dbname), _ident(role)))
        statements.append(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(
            _ident(role), _ident(conn.info.dbname)))
        _run(conn, statements)
        conn.execute(f"DELETE FROM {BOOKKEEPING}.app_roles WHERE role = %s", (role,))
        others = one(conn.execute(
            "SELECT string_agg(DISTINCT d.datname, ', ') FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE r.rolname = %s AND d.datname <> current_database()", (role,)))[0]
        if others:
            return Dropped(role, True, False, f"kept the role: it has settings in other databases ({others})")
        try:
            with conn.transaction():
                conn.execute(sql.SQL("DROP ROLE {}").format(_ident(role)))
        except psycopg.errors.DependentObjectsStillExist as exc:
            detail = " ".join((exc.diag.message_detail or "").split())
            return Dropped(role, True, False, f"kept the role: it still owns objects or holds privileges elsewhere"
                                              f"{' (' + detail[:200] + ')' if detail else ''}")
        return Dropped(role, True, True, "revoked and dropped")
