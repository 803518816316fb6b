"""The migration set and how it is applied: plan, apply, roll back, verify, db init.

The files are yoyo migrations (NNNN_slug.sql + NNNN_slug.rollback.sql, `-- transactional: false`
directives) and are split into statements by yoyo's own parser (yoyo.migrations.read_sql_migration).

Departure from yoyo's runner, on purpose: yoyo applies a migration on one connection and records
it in a second transaction afterwards, so a kill -9 between the two leaves a migration applied but
unrecorded; it records only a hash of the file *name*, so an edited migration goes unnoticed; its
lock is a table row that survives kill -9; and its step runner prints the rows of any SELECT to
stdout. minnoctl therefore keeps its own record, `minnoctl.migrations`, with a checksum of each
file's content, writes it in the same transaction as the migration itself, and serialises runs
with a session advisory lock (minnoctl.locks) that dies with its holder. So that stock yoyo can
still be pointed at the set and the database, it also writes yoyo's own bookkeeping in that same
transaction and adopts what stock yoyo did (minnoctl/yoyo_compat.py).

Modules are applied in registry order, each module's files in number order. minnoctl creates a
module's schema before its first migration and drops it (never CASCADE) after its last rollback.

Migrations never stall the application: every statement runs with a lock timeout
(--ddl-lock-timeout). An ALTER TABLE waiting for its ACCESS EXCLUSIVE lock queues every later
reader of that table behind it, so it waits at most that long, gives way (the transaction rolls
back), and is retried a bounded number of times with backoff and jitter; then it gives up naming
the session that blocks it. A transactional migration is redone whole; in a non-transactional one
the statement that timed out is retried. CONCURRENTLY statements (CREATE / DROP INDEX, REINDEX,
REFRESH MATERIALIZED VIEW, DETACH PARTITION) run without the timeout: their locks let readers and
writers through, and the waits they do (for older transactions) must not abort them half-built.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import re
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Iterable

from minnoctl import locks, modules, resources
from minnoctl.rows import one
from minnoctl.errors import (ConfigError, DriftError, ExitCode, ExtensionMissing, MigrationFailed, MinnoctlError,
                             UsageError)

if TYPE_CHECKING:
    import psycopg

    from minnoctl.config import Settings

log = logging.getLogger("minnoctl")

BOOKKEEPING = modules.BOOKKEEPING
DDL_LOCK_TIMEOUT_S = locks.DDL_LOCK_TIMEOUT_S  # --ddl-lock-timeout: how long one statement may wait for a lock
DDL_TRIES = 5  # tries of one migration (or statement) that times out waiting for a lock
_BACKOFF_S = (0.2, 3.0)  # first pause between tries, and the longest; doubled each time, with jitter
_CONCURRENTLY = re.compile(
    r"^\s*(CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY|DROP\s+INDEX\s+CONCURRENTLY|REINDEX\b.*\bCONCURRENTLY"
    r"|REFRESH\s+MATERIALIZED\s+VIEW\s+CONCURRENTLY|ALTER\s+TABLE\b.*\bDETACH\s+PARTITION\b.*\bCONCURRENTLY)\b",
    re.IGNORECASE | re.DOTALL)
_LEADING_COMMENTS = re.compile(r"^(\s*(--[^\n]*(\n|$)|/\*.*?\*/))*", re.DOTALL)
FILE_RE = re.compile(r"^(\d{4})_([a-z0-9][a-z0-9_]*)\.sql$")
_DIRECTIVE = re.compile(r"^\s*--\s*(transactional|depends)\s*:\s*(.*)$")

def recorded_environment(conn: "psycopg.Connection") -> str | None:
    """The environment the database was marked with by `db init --environment`, or None."""
    if one(conn.execute("SELECT to_regclass(%s)", (f"{BOOKKEEPING}.settings",)))[0] is None:
        return None
    row = conn.execute(f"SELECT value FROM {BOOKKEEPING}.settings WHERE name = 'environment'").fetchone()
    return row[0] if row else None


def record_environment(conn: "psycopg.Connection", environment: str, set_by: str) -> None:
    """Mark the database as `environment` (db init --environment; kept through backup restore --clean)."""
    from minnoctl import bookkeeping

    bookkeeping.ensure(conn, ("settings",))
    conn.execute(
        f"INSERT INTO {BOOKKEEPING}.settings (name, value, set_by) VALUES ('environment', %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value, set_at = now(), set_by = excluded.set_by",
        (environment, set_by))


def check_environment(name: str) -> str:
    """--environment NAME: one of safety's fixed names (prod is production); anything else exit 2."""
    from minnoctl.safety import normalize_environment

    return normalize_environment(name)


# ---------------------------------------------------------------------------------------------
# The set on disk


@dataclass(frozen=True)
class MigrationFile:
    id: str  # "<module>/<stem>"
    module: str
    number: int
    path: Path
    rollback_path: Path
    transactional: bool
    description: str
    checksum: str

    @property
    def schema(self) -> str:
        return modules.get(self.module).schema

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def statements(self, direction: str = "apply") -> list[str]:
        """The file's statements, split by yoyo's parser (sqlparse), directives removed."""
        from yoyo.migrations import read_sql_migration

        path = self.path if direction == "apply" else self.rollback_path
        return read_sql_migration(str(path))[2]


def _leading(text: str) -> tuple[dict[str, str], str]:
    """yoyo's rule: directives and the description are the leading comment lines."""
    directives: dict[str, str] = {}
    comments: list[str] = []
    for line in text.splitlines():
        match = _DIRECTIVE.match(line)
        if match:  # repeated, they add up (yoyo: `-- depends: a` twice is `a b`)
            value = match.group(2).strip()
            directives[match.group(1)] = (f"{directives[match.group(1)]} {value}" if match.group(1) in directives
                                          else value)
        elif re.match(r"^\s*(--.*)?$", line):
            comments.append(line.strip().lstrip("-").strip())
        else:
            break
    return directives, "\n".join(comments).strip()


def _installed(path: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in path.parts)


# The lookup lives in resources (the module registry reads the same root); kept importable here.
migrations_root = resources.migrations_root
_project_checkout = resources._project_checkout


def load_set(root: Path | None = None) -> list[MigrationFile]:
    """Every migration of every module, in the order they apply, from `root` or migrations_root():
    MINNOCTL_MIGRATIONS_DIR (developing a migration, the tests), the checkout the current directory
    is in, else the installed package's set."""
    if root is None:
        root = resources.checked_root()
    files: list[MigrationFile] = []
    for module in modules.MODULES:
        if root is not None:
            folder = root / module.migrations_folder
            files += _load_folder(module.name, folder)
        else:
            with resources.migrations_path(module.migrations_folder) as folder:
                files += _load_folder(module.name, folder)
    from minnoctl.yoyo_compat import check_unique_stems

    check_unique_stems(files)  # stock yoyo's id is the file stem
    return files


def _load_folder(module: str, folder: Path) -> list[MigrationFile]:
    if not folder.is_dir():
        return []
    found = []
    seen: dict[int, str] = {}
    for path in sorted(folder.glob("*.sql")):
        if path.name.endswith(".rollback.sql"):
            continue
        match = FILE_RE.match(path.name)
        if not match:
            raise MinnoctlError(f"{path}: a migration must be named NNNN_slug.sql (lowercase, digits, _)")
        number = int(match.group(1))
        if number in seen:
            raise MinnoctlError(f"{folder}: two migrations numbered {number:04d}: {seen[number]} and {path.name}")
        seen[number] = path.name
        rollback = path.with_name(path.name[:-4] + ".rollback.sql")
        if not rollback.is_file():
            raise MinnoctlError(f"{path}: its rollback file {rollback.name} is missing — every migration has one")
        forward_bytes = path.read_bytes()
        directives, description = _leading(forward_bytes.decode("utf-8"))
        transactional = directives.get("transactional", "true").lower() != "false"
        checksum = hashlib.sha256(forward_bytes + b"\0" + rollback.read_bytes()).hexdigest()
        found.append(MigrationFile(f"{module}/{path.stem}", module, number, path, rollback, transactional,
                                   description, checksum))
    return found


# ---------------------------------------------------------------------------------------------
# What the database has


@dataclass(frozen=True)
class Applied:
    id: str
    module: str
    checksum: str
    applied_at: Any
    applied_by: str
    applied_host: str
    seq: int


@dataclass(frozen=True)
class Drift:
    kind: str  # edited | missing | renamed
    id: str
    detail: str


def read_applied(conn: "psycopg.Connection") -> dict[str, Applied]:
    """The record of applied migrations, in application order. Reads only; {} before any init."""
    exists = one(conn.execute("SELECT to_regclass(%s)", (f"{BOOKKEEPING}.migrations",)))[0]
    if exists is None:
        return {}
    rows = conn.execute(
        f"SELECT id, module, checksum, applied_at, applied_by, applied_host, seq "
        f"FROM {BOOKKEEPING}.migrations ORDER BY seq"
    ).fetchall()
    return {r[0]: Applied(*r) for r in rows}


def find_drift(files: list[MigrationFile], applied: dict[str, Applied]) -> list[Drift]:
    by_id = {f.id: f for f in files}
    pending_by_checksum = {f.checksum: f for f in files if f.id not in applied}
    drift = []
    for a in applied.values():
        current = by_id.get(a.id)
        if current is None:
            moved = pending_by_checksum.get(a.checksum)
            if moved is not None:
                drift.append(Drift("renamed", a.id, f"applied as {a.id}, now named {moved.id}"))
            else:
                drift.append(Drift("missing", a.id, "applied, but its file is no longer in the migration set"))
        elif current.checksum != a.checksum:
            drift.append(Drift("edited", a.id, f"{current.path.name} changed after it was applied "
                                               f"(applied {a.checksum[:12]}, now {current.checksum[:12]})"))
    return drift


def installed_modules(applied: dict[str, Applied]) -> set[str]:
    return {a.module for a in applied.values()}


@dataclass
class Plan:
    files: list[MigrationFile]
    applied: dict[str, Applied]
    pending: list[MigrationFile]
    drift: list[Drift]
    modules: list[modules.Module]
    adoption: Any = None  # yoyo_compat.Adoption: what the next migrate adopts (renamed ids, yoyo's runs)


def make_plan(conn: "psycopg.Connection", files: list[MigrationFile],
              chosen: list[modules.Module] | None) -> Plan:
    """What `migrate` would do: without --modules, the installed modules (all when none is). The
    record is read as it will be once adopted (yoyo_compat: earlier ids and checksums, stock yoyo's runs)."""
    from minnoctl import yoyo_compat

    recorded = read_applied(conn)
    adoption = yoyo_compat.survey(conn, files, recorded)
    applied = yoyo_compat.effective(recorded, adoption, files)
    if chosen is None:
        installed = installed_modules(applied)
        chosen = [m for m in modules.MODULES if m.name in installed] or None
    selected = modules.with_dependencies(chosen)
    names = {m.name for m in selected}
    pending = [f for f in files if f.module in names and f.id not in applied]
    return Plan(files, applied, pending, find_drift(files, applied), selected, adoption)


def status_rows(plan: Plan) -> list[dict[str, Any]]:
    rows = []
    for f in plan.files:
        a = plan.applied.get(f.id)
        rows.append({
            "id": f.id, "module": f.module,
            "state": ("edited" if a and a.checksum != f.checksum else "applied") if a else "pending",
            "applied_at": a.applied_at if a else None,
            "applied_by": f"{a.applied_by}@{a.applied_host}" if a else None,
            "transactional": f.transactional,
        })
    known = {f.id for f in plan.files}
    for a in plan.applied.values():
        if a.id not in known:
            rows.append({"id": a.id, "module": a.module, "state": "missing", "applied_at": a.applied_at,
                         "applied_by": f"{a.applied_by}@{a.applied_host}", "transactional": None})
    return rows


# ---------------------------------------------------------------------------------------------
# Running migrations


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _first_line(statement: str) -> str:
    for line in statement.strip().splitlines():
        line = line.strip()
        if line and not line.startswith("--"):
            return line[:120]
    return statement.strip()[:120]


@dataclass
class RunResult:
    environment_before: str | None = None
    applied: list[MigrationFile] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    database_created: bool = False
    extensions_created: list[str] = field(default_factory=list)
    # module -> the app extensions (Module.app_extensions) it could not get: absent from the server,
    # or this role may not create them
    extensions_unavailable: dict[str, list[str]] = field(default_factory=dict)
    objects: list[tuple[str, str]] = field(default_factory=list)  # (kind, schema.name) created
    cascaded: list[str] = field(default_factory=list)  # db init --force --cascade: dropped outside its schemas
    # plain db init on an initialised database: module -> the extensions the server lacks (not installed)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    up_to_date: bool = False
    cluster: Any = None  # distribution.Cluster on a Citus coordinator that lays tables out, else None
    distribution: Any = None  # distribution.Applied when the plans were applied


class _BlockerWatch:
    """While a statement that already timed out once is retried, a second session samples who
    blocks the runner's backend (pg_blocking_pids), so the give-up message can name them: once
    the timeout has fired, the runner no longer waits and the server no longer says."""

    def __init__(self, settings: "Settings", pid: int):
        self.seen: list[tuple[Any, ...]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(settings, pid), daemon=True,
                                        name="minnoctl-blocker-watch")
        self._thread.start()

    def _loop(self, settings: "Settings", pid: int) -> None:
        from minnoctl.connection import session

        try:
            with session(settings, "migrate-watch") as conn:
                while not self._stop.is_set():
                    rows = conn.execute(
                        "SELECT a.pid, a.usename, a.application_name, a.state, a.query FROM pg_stat_activity a "
                        "WHERE a.pid = ANY(pg_blocking_pids(%s)) ORDER BY a.pid", (pid,)).fetchall()
                    if rows:
                        self.seen = rows
                    self._stop.wait(0.05)
        except Exception:  # best effort: the message then says the blocker was not seen
            log.debug("blocker watch stopped", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _describe_blockers(rows: list[tuple[Any, ...]]) -> str:
    from minnoctl.render_text import shown

    if not rows:
        return "the session holding the lock was not seen (it comes and goes)"
    parts = []
    for pid, user, app, state, query in rows[:3]:
        who = ", ".join(x for x in (f"user {user}" if user else "", app or "", state or "") if x)
        parts.append(f"pid {pid} ({who}): {shown(query or '')}")
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    return "blocked by " + "; ".join(parts) + more


def _schema_kept(schema: str) -> MigrationFailed:
    """The last rollback of a module drops its schema without CASCADE (its 0001 rollback file, and
    minnoctl after it): objects the migrations did not create keep it, and the rollback with it."""
    return MigrationFailed(
        f"schema {schema} still holds objects that its migrations did not create, so minnoctl leaves it (and "
        "this rollback) alone — move or drop those objects first; the database is as it was before this rollback")


_DROP_SCHEMA = re.compile(r"^\s*DROP\s+SCHEMA\b", re.IGNORECASE)


def _is_concurrently(statement: str) -> bool:
    return bool(_CONCURRENTLY.match(_LEADING_COMMENTS.sub("", statement, count=1)))


class Runner:
    """One connection that holds the migrate lock and runs migrations on it."""

    def __init__(self, settings: "Settings", files: list[MigrationFile] | None = None,
                 ddl_lock_timeout: float = DDL_LOCK_TIMEOUT_S):
        self.settings = settings
        self.files = load_set() if files is None else files
        self.baseline_at: set[str] = set()  # apply(): the migrations after which the drift baseline is recorded
        self.conn: "psycopg.Connection | None" = None
        self.user = getpass.getuser()
        self.host = socket.gethostname()
        self.ddl_lock_timeout = ddl_lock_timeout
        self._lock_timeout_sql = f"SET lock_timeout = '{max(1, round(ddl_lock_timeout * 1000))}ms'"
        self.yoyo_ready: bool | None = None  # yoyo's tables writable (None: not looked at yet; see adopt)

    def open(self, **kwargs: Any) -> "psycopg.Connection":
        from minnoctl.connection import open_session

        # session settings for the run: open_session() gives "migrate" a session of its own (never a
        # transaction pool's, MINNO_DIRECT_URL's when set), and they end with it (close())
        conn = open_session(self.settings, "migrate", **kwargs)
        if conn.info.server_version >= 140000:
            # a killed minnoctl's backend notices within a second, even inside a long statement
            conn.execute("SET client_connection_check_interval = '1s'")
        conn.execute(self._lock_timeout_sql)  # every statement of the run: DDL never queues readers for long
        self.conn = conn
        return conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def retrying(self, what: str, attempt: Any, state: str) -> Any:
        """attempt() until it gets its locks within the lock timeout, at most DDL_TRIES times, with
        doubling pauses and jitter between (others get through meanwhile). attempt must leave the
        database as before when it fails (one transaction, or one autocommit statement). Then
        MigrationFailed naming `what`, the blocking sessions and `state`."""
        import psycopg

        assert self.conn is not None
        watch: _BlockerWatch | None = None
        try:
            for attempt_no in range(1, DDL_TRIES + 1):
                try:
                    return attempt()
                except psycopg.errors.LockNotAvailable:
                    if attempt_no == DDL_TRIES:
                        break
                    if watch is None:
                        watch = _BlockerWatch(self.settings, self.conn.info.backend_pid)
                    pause = min(_BACKOFF_S[1], _BACKOFF_S[0] * 2 ** (attempt_no - 1)) * random.uniform(0.5, 1.5)
                    log.warning("%s waited %g s for a lock and gave way; trying again (%d of %d) in %.1f s", what,
                                self.ddl_lock_timeout, attempt_no + 1, DDL_TRIES, pause)
                    time.sleep(pause)
            blockers = _describe_blockers(watch.seen if watch else [])
        finally:
            if watch is not None:
                watch.stop()
        pid = (watch.seen[0][0] if watch and watch.seen else None)
        end = f" (or end it: SELECT pg_terminate_backend({pid})) " if pid else " "
        raise MigrationFailed(
            f"{what} could not get its lock within --ddl-lock-timeout {self.ddl_lock_timeout:g} s in {DDL_TRIES} "
            f"tries and gave up rather than stall the application; {blockers} — {state}; let that session "
            f"finish{end}and run it again"
        )

    # -- extensions ------------------------------------------------------------------------------

    def check_extensions(self, selected: list[modules.Module]) -> list[str]:
        """Fail before any change if a chosen module's extension is not available; return the
        extensions to create."""
        conn = self.conn
        assert conn is not None
        _check_available(conn, selected)
        to_create = []
        for module in selected:
            for ext in module.extensions:
                installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (ext,)).fetchone()
                if not installed and ext not in to_create:
                    to_create.append(ext)
        return to_create

    def _search_path(self, module: modules.Module) -> str:
        assert self.conn is not None
        schemas = [module.schema]
        for ext in module.extensions:
            row = self.conn.execute(
                "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                "WHERE e.extname = %s", (ext,)).fetchone()
            if row and row[0] not in schemas:
                schemas.append(row[0])
        if "public" not in schemas:
            schemas.append("public")
        return ", ".join(_ident(s) for s in schemas)

    # -- one migration -------------------------------------------------------------------------

    def _execute(self, mf: MigrationFile, statements: list[str], direction: str) -> None:
        import psycopg

        assert self.conn is not None
        path = mf.path if direction == "apply" else mf.rollback_path
        state = ("the database is as it was before this migration" if mf.transactional else
                 "it ran outside a transaction, so the statements before this one took effect; "
                 "fix it and run migrate again")
        for number, statement in enumerate(statements, 1):
            try:
                if mf.transactional:
                    self.conn.execute(statement)
                else:
                    self.retrying(f"{mf.id} ({direction}, statement {number} of {path.name})",
                                  lambda statement=statement: self._autocommit_statement(statement), state)
            except psycopg.errors.LockNotAvailable:
                raise  # the whole transactional migration is retried
            except psycopg.Error as exc:
                if (isinstance(exc, psycopg.errors.DependentObjectsStillExist) and direction == "rollback"
                        and _DROP_SCHEMA.match(_LEADING_COMMENTS.sub("", statement, count=1))):
                    raise _schema_kept(mf.schema) from None
                diag = exc.diag.message_primary if getattr(exc, "diag", None) else None
                reason = diag or str(exc).strip().splitlines()[0]
                raise MigrationFailed(
                    f"{mf.id} failed ({direction}) at statement {number} of {path.name} "
                    f"[{_first_line(statement)}]: {reason} — {state}"
                ) from None

    def _autocommit_statement(self, statement: str) -> None:
        """One statement of a non-transactional migration. A CONCURRENTLY statement takes locks that
        let readers and writers through, then waits for older transactions; a lock timeout there
        would abort it half-built (an invalid index), so it runs without one."""
        assert self.conn is not None
        if not _is_concurrently(statement):
            self.conn.execute(statement)
            return
        self.conn.execute("SET lock_timeout = 0")
        try:
            self.conn.execute(statement)
        finally:
            self.conn.execute(self._lock_timeout_sql)

    def _record(self, mf: MigrationFile, operation: str, duration_ms: float) -> None:
        assert self.conn is not None
        self._record_yoyo(mf, operation)  # stock yoyo's bookkeeping, in the same transaction
        if operation == "apply":
            self.conn.execute(
                f"INSERT INTO {BOOKKEEPING}.migrations (id, module, checksum, applied_by, applied_host) "
                "VALUES (%s, %s, %s, %s, %s)", (mf.id, mf.module, mf.checksum, self.user, self.host))
        else:
            self.conn.execute(f"DELETE FROM {BOOKKEEPING}.migrations WHERE id = %s", (mf.id,))
        self.conn.execute(
            f"INSERT INTO {BOOKKEEPING}.migration_log (migration_id, operation, checksum, by_user, host, "
            "duration_ms) VALUES (%s, %s, %s, %s, %s, %s)",
            (mf.id, operation, mf.checksum, self.user, self.host, duration_ms))
        # the schema as it left it: the drift baseline. A run records it once per module, at its last
        # migration of the module (a fingerprint costs ~10 ms; after every migration it was 40% of a
        # db init); a run stopped part-way leaves an earlier one, which drift.backfill takes again
        # from the live schema before the next run changes anything
        if operation != "apply" or mf.id in self.baseline_at:
            from minnoctl import drift  # imported where used, like yoyo_compat: not on plan-only paths

            drift.record(self.conn, mf.id, mf.module, operation)

    def _run_file(self, mf: MigrationFile, direction: str) -> None:
        """Run a file inside the caller's transaction. The whole file goes to the server as one
        simple-protocol query (one round trip, no client-side parsing); only when it fails is it
        split with yoyo's parser and replayed statement by statement in a savepoint, to name the
        statement that failed. The caller's transaction then rolls everything back."""
        import psycopg

        assert self.conn is not None
        path = mf.path if direction == "apply" else mf.rollback_path
        try:
            with self.conn.transaction():
                self.conn.execute(path.read_text(encoding="utf-8"))
        except psycopg.errors.LockNotAvailable:
            raise  # the caller retries the whole migration
        except psycopg.Error as exc:
            first = exc.diag.message_primary or str(exc).strip().splitlines()[0]
            with self.conn.transaction(force_rollback=True):
                self._execute(mf, mf.statements(direction), direction)  # raises MigrationFailed
            raise MigrationFailed(f"{mf.id} failed ({direction}) in {path.name}: {first} — the database is as "
                                  "it was before this migration") from None

    def _run(self, mf: MigrationFile, direction: str, after: Any = None) -> float:
        """Run one migration file and record it: atomically when transactional; otherwise the
        statements one by one in autocommit (CREATE INDEX CONCURRENTLY), then the record."""
        conn = self.conn
        assert conn is not None
        module = modules.get(mf.module)
        path = self._search_path(module)
        started = time.perf_counter()
        before = "the database is as it was before this migration"
        if mf.transactional:
            def whole() -> None:  # one transaction: a lock timeout rolls it all back, and it is redone
                with conn.transaction():
                    if direction == "apply":
                        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(module.schema)}")
                    conn.execute(f"SET LOCAL search_path TO {path}")
                    self._run_file(mf, direction)
                    self._record(mf, direction, (time.perf_counter() - started) * 1000)
                    if after:
                        after()

            self.retrying(f"{mf.id} ({direction})", whole, before)
        else:
            if direction == "apply":
                self.retrying(f"{mf.id} ({direction})",
                              lambda: conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(module.schema)}"), before)
            # statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY) get no SET LOCAL:
            # the session's search_path, reset at once, on the runner's own session — open_session()
            # refuses a transaction pool, where it would stay on a server connection the application
            # gets (connection.NEEDS_SESSION)
            conn.execute(f"SET search_path TO {path}")
            try:
                self._execute(mf, mf.statements(direction), direction)
            finally:
                conn.execute("RESET search_path")

            def record() -> None:
                with conn.transaction():
                    self._record(mf, direction, (time.perf_counter() - started) * 1000)
                    if after:
                        after()

            self.retrying(f"{mf.id} ({direction}, its record)", record,
                          "its statements took effect but it is not recorded; run it again")
        return (time.perf_counter() - started) * 1000

    def apply_one(self, mf: MigrationFile) -> float:
        return self._run(mf, "apply")

    def rollback_one(self, mf: MigrationFile, last_of_module: bool) -> None:
        module = modules.get(mf.module)
        self._run(mf, "rollback", after=(lambda: self._drop_schema(module)) if last_of_module else None)

    def _record_yoyo(self, mf: MigrationFile, operation: str) -> None:
        from minnoctl import yoyo_compat

        assert self.conn is not None
        if self.yoyo_ready is None:
            state = yoyo_compat.prepare(self.conn)  # "ready", "created" (in this transaction) or None
            if state != "created":  # created tables go if this transaction is redone: look again then
                self.yoyo_ready = state == "ready"
            if state is None:
                return
        if self.yoyo_ready is not False:
            yoyo_compat.record(self.conn, mf, operation, self.user, self.host)

    def adopt(self) -> None:
        """Under the migrate lock, before planning: adopt the record of an earlier minnoctl (renamed
        ids, superseded checksums) and stock yoyo's runs, and write yoyo's rows for what is applied,
        in one transaction (yoyo_compat)."""
        from minnoctl import bookkeeping, yoyo_compat

        conn = self.conn
        assert conn is not None

        def attempt() -> list[str]:
            with conn.transaction():
                adoption = yoyo_compat.survey(conn, self.files, read_applied(conn))
                if not adoption:
                    return []
                bookkeeping.ensure(conn)
                notes = yoyo_compat.adopt(conn, adoption, BOOKKEEPING, self.user, self.host)
                return notes

        for line in self.retrying("adopting earlier records (minnoctl's and stock yoyo's)", attempt,
                                  "nothing was changed"):
            log.info("%s", line)

    def _drop_schema(self, module: modules.Module) -> None:
        import psycopg

        assert self.conn is not None
        try:
            with self.conn.transaction():
                self.conn.execute(f"DROP SCHEMA IF EXISTS {_ident(module.schema)}")
        except psycopg.errors.DependentObjectsStillExist:
            raise _schema_kept(module.schema) from None

    # -- whole runs ------------------------------------------------------------------------------

    def ensure_bookkeeping(self) -> None:
        """minnoctl's own tables up to date (minnoctl/bookkeeping.py): two reads when they are."""
        from minnoctl import bookkeeping

        conn = self.conn
        assert conn is not None
        self.retrying("bringing minnoctl's own tables up to date",
                      lambda: bookkeeping.ensure(conn, ddl_lock_timeout_s=self.ddl_lock_timeout), "nothing was changed")

    def apply(self, pending: Iterable[MigrationFile]) -> list[MigrationFile]:
        pending = list(pending)
        self.baseline_at = set({mf.module: mf.id for mf in pending}.values())  # the last one of each module
        done = []
        for mf in pending:
            ms = self.apply_one(mf)
            log.debug("applied %s (%.0f ms)", mf.id, ms)  # the command lists what it applied, once
            done.append(mf)
        return done


def _locked_plan(runner: Runner, chosen: list[modules.Module] | None, allow_drift: bool) -> Plan:
    assert runner.conn is not None
    plan = make_plan(runner.conn, runner.files, chosen)
    if plan.drift and not allow_drift:
        raise DriftError(
            f"{len(plan.drift)} applied migration(s) changed since they were applied "
            f"({'; '.join(d.id + ': ' + d.kind for d in plan.drift[:3])}) — see `minnoctl migrate verify`; "
            "restore the files, or pass --allow-drift"
        )
    first: dict[str, MigrationFile] = {}
    for f in plan.pending:
        first.setdefault(f.module, f)
    from minnoctl import drift

    drift.guard(runner.conn, plan.applied, [f.module for f in plan.pending], allow_drift,  # the live schema
                [m for m, f in first.items() if not f.transactional])
    return plan


def migrate(settings: "Settings", chosen: list[modules.Module] | None = None, *, lock_timeout: float = 30,
            allow_drift: bool = False, files: list[MigrationFile] | None = None,
            ddl_lock_timeout: float = DDL_LOCK_TIMEOUT_S) -> RunResult:
    """Apply the pending migrations (of the installed modules, or of `chosen`)."""
    runner = Runner(settings, files, ddl_lock_timeout)
    runner.open()
    assert runner.conn is not None  # open() set it
    try:
        with locks.advisory_lock(runner.conn, "migrate", lock_timeout, option="--lock-timeout"):
            runner.adopt()
            plan = _locked_plan(runner, chosen, allow_drift)
            result = RunResult()
            pending_modules = [modules.get(n) for n in dict.fromkeys(f.module for f in plan.pending)]
            installed = installed_modules(read_applied(runner.conn))
            to_create = runner.check_extensions(pending_modules)  # fails before any change
            app_created, unavailable = _app_extensions(
                runner, [m for m in modules.MODULES if m.name in installed or m in pending_modules])
            result.extensions_unavailable = {m: e for m, e in unavailable.items()
                                             if m in {p.name for p in pending_modules}}
            if not plan.pending:
                result.up_to_date = True
                result.extensions_created = app_created
                return result
            result.extensions_created = _create_extensions(runner, to_create) + app_created
            runner.ensure_bookkeeping()
            result.applied = runner.apply(plan.pending)
            _distribute(runner, result, None, only_if_laid_out=True)  # new tables follow the plans
            from minnoctl import apps  # the app roles' grants, re-applied after every run that applied something
            apps.keep_grants(runner.conn)
            return result
    finally:
        runner.close()


def _cluster_for(runner: Runner, distributed: bool | None) -> Any:
    """The Citus cluster db init lays the schema out on: detected (None), demanded (True: anything else
    is one line, before any change), or declined (False)."""
    from minnoctl import distribution

    assert runner.conn is not None
    if distributed is False:
        return None
    found = distribution.cluster(runner.conn)
    if found is not None and found.distributes:
        return found
    if distributed:
        why = ("the citus extension is not in this database" if found is None else
               "this server is not the cluster's coordinator" if not found.coordinator else
               "the cluster has no active node that may hold shards (add workers with citus_add_node)")
        raise ExtensionMissing(f"--distributed: {why}; nothing was changed (on plain PostgreSQL run db init "
                               "without --distributed)")
    return None


def _distribute(runner: Runner, result: RunResult, found: Any, *, only_if_laid_out: bool = False) -> None:
    """Apply the installed modules' distribution plans on a Citus coordinator (distribution.apply) and
    record the drift baselines of the modules it changed (their keys are the cluster's now)."""
    from minnoctl import distribution, drift

    conn = runner.conn
    assert conn is not None
    if found is None:
        found = distribution.cluster(conn)
        if found is None or not found.distributes:
            return
        if only_if_laid_out and not distribution.layout(conn, [m.schema for m in modules.MODULES]):
            return  # a database left on the coordinator (db init --no-distributed) stays so
    installed = [m for m in modules.MODULES if m.name in installed_modules(read_applied(conn))]
    result.cluster = found
    result.distribution = distribution.apply(conn, installed)
    if result.distribution.changed:
        drift.rebaseline(conn, quiet=True)


def _app_extensions(runner: Runner, chosen: Iterable[modules.Module]) -> tuple[list[str], dict[str, list[str]]]:
    """Create the app extensions of `chosen` that the server has and this database lacks; return
    them, and per module those it cannot have (not on the server, or not ours to create)."""
    import psycopg

    conn = runner.conn
    assert conn is not None
    wanted = [(m, e) for m in chosen for e in m.app_extensions]
    if not wanted:
        return [], {}
    names = sorted({e for _, e in wanted})
    installed = {r[0] for r in conn.execute("SELECT extname FROM pg_extension WHERE extname = ANY(%s)", (names,))}
    on_server = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
                                            (names,))}
    created: list[str] = []
    lacking: set[str] = set()
    for ext in names:
        if ext in installed:
            continue
        if ext not in on_server:
            lacking.add(ext)
            continue
        try:
            runner.retrying(f"CREATE EXTENSION {ext}", lambda ext=ext: conn.execute(
                f"CREATE EXTENSION IF NOT EXISTS {_ident(ext)} WITH SCHEMA public"), "nothing was changed")
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidSchemaName):
            lacking.add(ext)  # not ours to create, or this database has no schema public to hold it
            continue
        created.append(ext)
        log.info("created extension %s", ext)
    unavailable: dict[str, list[str]] = {}
    for module, ext in wanted:
        if ext in lacking:
            unavailable.setdefault(module.name, []).append(ext)
    return created, unavailable


def _create_extensions(runner: Runner, names: list[str]) -> list[str]:
    import psycopg

    assert runner.conn is not None
    for ext in names:
        try:
            runner.retrying(f"CREATE EXTENSION {ext}", lambda ext=ext: runner.conn.execute(
                f"CREATE EXTENSION IF NOT EXISTS {_ident(ext)} WITH SCHEMA public"), "nothing was changed")
        except psycopg.errors.InsufficientPrivilege:
            raise ExtensionMissing(
                f"the extension '{ext}' is available but this role may not create it — ask a superuser to run "
                f"CREATE EXTENSION {ext}; in this database, then run minnoctl again"
            ) from None
        except psycopg.errors.InvalidSchemaName:
            raise ExtensionMissing(
                f"this database has no schema public, where minnoctl creates the extension '{ext}' — create it "
                f"(CREATE SCHEMA public), or CREATE EXTENSION {ext} in a schema of your own, then run minnoctl again"
            ) from None
        log.info("created extension %s", ext)
    return names


def plan_only(settings: "Settings", chosen: list[modules.Module] | None = None,
              files: list[MigrationFile] | None = None) -> Plan:
    """The plan, read without any lock and without writing anything (status, --dry-run, verify)."""
    from minnoctl.connection import session

    files = load_set() if files is None else files
    with session(settings, "migrate-plan") as conn:
        return make_plan(conn, files, chosen)


def rollback(settings: "Settings", *, steps: int | None = None, to: str | None = None,
             lock_timeout: float = 30, files: list[MigrationFile] | None = None,
             dry_run: bool = False, ddl_lock_timeout: float = DDL_LOCK_TIMEOUT_S,
             approve: Any = None) -> list[str]:
    """Roll back the last `steps` applied migrations (default 1), or every one applied after `to`.
    `approve(victims, production_reason)` is called under the lock before anything changes (the
    CLI's production guard and confirmation); it raises to stop."""
    runner = Runner(settings, files, ddl_lock_timeout)
    runner.open(command="migrate rollback")
    assert runner.conn is not None  # open() set it
    try:
        with locks.advisory_lock(runner.conn, "migrate", lock_timeout, option="--lock-timeout"):
            runner.adopt()
            applied = read_applied(runner.conn)
            order = list(applied.values())  # application order
            if to is not None:
                if to not in applied:
                    raise UsageError(f"--to {to}: no applied migration has that id — see `minnoctl migrate status`")
                index = [a.id for a in order].index(to)
                victims = order[index + 1:]
            else:
                count = 1 if steps is None else steps
                victims = order[-count:] if count else []
            victims.reverse()
            by_id = {f.id: f for f in runner.files}
            missing = [a.id for a in victims if a.id not in by_id]
            if missing:
                raise DriftError(f"cannot roll back {missing[0]}: its files are no longer in the migration set")
            if dry_run or not victims:
                return [a.id for a in victims]
            if approve is not None:
                from minnoctl.safety import production_reason

                approve([a.id for a in victims], production_reason(runner.conn))
            runner.ensure_bookkeeping()  # the record it writes is in minnoctl's own tables, which it never drops
            remaining = {a.id for a in order}
            done = []
            for a in victims:
                remaining.discard(a.id)
                last = not any(applied[r].module == a.module for r in remaining)
                runner.rollback_one(by_id[a.id], last)
                log.info("rolled back %s", a.id)
                done.append(a.id)
            return done
    finally:
        runner.close()


# ---------------------------------------------------------------------------------------------
# db init


def _catalog(conn: "psycopg.Connection", schemas: list[str]) -> set[tuple[str, str]]:
    rows = conn.execute(
        """
        SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'i' THEN 'index'
                 WHEN 'I' THEN 'index' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                 WHEN 'S' THEN 'sequence' ELSE c.relkind::text END, n.nspname || '.' || c.relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY(%(s)s) AND c.relkind IN ('r', 'p', 'i', 'I', 'v', 'm', 'S')
        UNION ALL
        SELECT 'function', n.nspname || '.' || p.proname
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY(%(s)s)
        UNION ALL
        SELECT 'trigger', n.nspname || '.' || t.tgname
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY(%(s)s) AND NOT t.tgisinternal
        UNION ALL
        SELECT 'schema', nspname FROM pg_namespace WHERE nspname = ANY(%(s)s)
        """,
        {"s": schemas},
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


def _holdable(conn: "psycopg.Connection",
              selected: list[modules.Module]) -> tuple[list[modules.Module], dict[str, list[str]]]:
    """A plain db init on a database that already holds modules: the modules the server can hold,
    and the others, not installed, with the extensions they lack (module -> names). On a new
    database nothing is left out: a module the server cannot hold is refused (exit 12)."""
    if not installed_modules(read_applied(conn)):
        return selected, {}
    available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions").fetchall()}
    lacking = {m.name: [e for e in m.extensions if e not in available] for m in selected}
    skipped = {name: missing for name, missing in lacking.items() if missing}
    kept = [m for m in selected if m.name not in skipped and not any(d in skipped for d in m.depends)]
    return kept, skipped


def _check_available(conn: "psycopg.Connection", selected: list[modules.Module]) -> None:
    """Fail if a chosen module's extension is not available on the server (pg_available_extensions
    is server-wide, so this works from any database, before anything is created)."""
    for module in selected:
        for ext in module.extensions:
            if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (ext,)).fetchone():
                others = ",".join(m.name for m in selected if ext not in m.extensions and module.name not in m.depends)
                raise ExtensionMissing(
                    f"module '{module.name}' needs the PostgreSQL extension '{ext}'"
                    f"{' (pgvector)' if ext == 'vector' else ''}, which this server does not have; nothing was "
                    f"changed — install it on the server, or leave the module out: --modules {others}"
                )


def _create_database(settings: "Settings", selected: list[modules.Module]) -> bool:
    """CREATE DATABASE for the configured name, through the server's maintenance database, after
    checking that the chosen modules' extensions exist on the server. False when another session
    created it meanwhile."""
    import psycopg

    from minnoctl.connection import session
    from minnoctl.errors import ConnectError

    params = (settings.direct or settings).params  # the database the migrate session reached (MINNO_DIRECT_URL's)
    name = params.get("dbname")
    if not name:
        raise ConnectError("the database does not exist and no name was given to create", kind="no-database",
                           exit_code=ExitCode.NO_DATABASE)
    last: Exception | None = None
    for maintenance in ("postgres", "template1"):
        try:
            with session(settings, "db-init", dbname=maintenance) as conn:
                allowed = one(conn.execute(
                    "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"))[0]
                _check_available(conn, selected)
                if not allowed:
                    raise MinnoctlError(
                        f"database '{name}' does not exist and role '{params.get('user') or 'current'}' may not "
                        "create it — ask an administrator to create it (CREATE DATABASE), then run db init again",
                        exit_code=ExitCode.NO_DATABASE)
                for attempt in range(20):
                    try:
                        conn.execute(f"CREATE DATABASE {_ident(name)}")
                        break
                    except psycopg.errors.ObjectInUse:
                        # "source database template1 is being accessed by other users": another
                        # db init reached the server through template1 (no postgres database)
                        if attempt == 19:
                            raise MinnoctlError(
                                f"cannot create database '{name}': template1 stayed in use by other sessions — "
                                "run db init again when they have finished") from None
                        time.sleep(0.1 + random.random() * 0.2)
                log.info("created database %s", name)
                return True
        except ConnectError as exc:
            last = exc
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            # another db init created it meanwhile (the loser of a race on pg_database's unique
            # index gets unique_violation, a later one duplicate_database); it waits for the lock
            log.info("database %s was created meanwhile by another session", name)
            return False
    assert last is not None
    raise last


_OUTSIDE_DEPENDENTS = """
WITH RECURSIVE
ours AS (SELECT oid FROM pg_namespace WHERE nspname = ANY(%(s)s)),
-- everything DROP SCHEMA ... CASCADE would drop: what depends on the schemas, on what is in them,
-- on a column of it (only what depends on that column), and the owner of an internal part
-- (a view owns its _RETURN rule, a constraint its triggers), transitively
closure (classid, objid, objsubid) AS (
    SELECT 'pg_namespace'::regclass::oid, oid, 0 FROM ours
  UNION
    SELECT CASE WHEN down THEN d.classid ELSE d.refclassid END,
           CASE WHEN down THEN d.objid ELSE d.refobjid END,
           CASE WHEN down THEN d.objsubid ELSE 0 END
      FROM closure c
      JOIN pg_depend d
        ON (d.refclassid = c.classid AND d.refobjid = c.objid AND (c.objsubid = 0 OR d.refobjsubid = c.objsubid))
        OR (d.classid = c.classid AND d.objid = c.objid AND d.deptype = 'i'),
      LATERAL (SELECT d.refclassid = c.classid AND d.refobjid = c.objid AS down) dir
),
placed AS (
  SELECT c.*, CASE c.classid
      WHEN 'pg_namespace'::regclass THEN c.objid
      WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = c.objid)
      WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = c.objid)
      WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = c.objid)
      WHEN 'pg_constraint'::regclass THEN (SELECT connamespace FROM pg_constraint WHERE oid = c.objid)
      WHEN 'pg_rewrite'::regclass THEN (SELECT k.relnamespace FROM pg_rewrite r JOIN pg_class k ON k.oid = r.ev_class
                                         WHERE r.oid = c.objid)
      WHEN 'pg_trigger'::regclass THEN (SELECT k.relnamespace FROM pg_trigger t JOIN pg_class k ON k.oid = t.tgrelid
                                         WHERE t.oid = c.objid)
      WHEN 'pg_attrdef'::regclass THEN (SELECT k.relnamespace FROM pg_attrdef a JOIN pg_class k ON k.oid = a.adrelid
                                         WHERE a.oid = c.objid)
      WHEN 'pg_policy'::regclass THEN (SELECT k.relnamespace FROM pg_policy p JOIN pg_class k ON k.oid = p.polrelid
                                        WHERE p.oid = c.objid)
      -- default privileges in one of the schemas (minnoctl app's) go with it
      WHEN 'pg_default_acl'::regclass THEN (SELECT defaclnamespace FROM pg_default_acl WHERE oid = c.objid)
      ELSE (SELECT n.oid FROM pg_namespace n
             WHERE n.nspname = (pg_identify_object(c.classid, c.objid, c.objsubid)).schema)
    END AS nsp
  FROM closure c
)
SELECT DISTINCT o.type || ' ' || o.identity
  FROM placed p, LATERAL pg_identify_object(p.classid, p.objid, p.objsubid) o
 WHERE (p.nsp IS NULL OR (p.nsp NOT IN (SELECT oid FROM ours) AND p.nsp <> 'pg_toast'::regnamespace))
   AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = p.classid AND i.objid = p.objid AND i.deptype = 'i')
 ORDER BY 1
"""


def outside_dependents(conn: "psycopg.Connection", schemas: list[str]) -> list[str]:
    """What DROP SCHEMA ... CASCADE of `schemas` would drop outside them: views, foreign keys,
    column defaults, columns of their types, functions, triggers, policies in other schemas, and
    database-wide objects (casts, publications' memberships, extensions placed in them), from a walk
    of pg_depend ("view public.v", "table constraint fk on public.t", ...). Roles (pg_shdepend)
    are never dropped by it, so they are not walked."""
    return [r[0] for r in conn.execute(_OUTSIDE_DEPENDENTS, {"s": schemas}).fetchall()]


def _drop_minnoctl_schemas(runner: Runner, schemas: list[str], cascade: bool,
                           app_roles: list[tuple[str, list[str], bool]] | None = None) -> list[str]:
    """db init --force: drop exactly `schemas`, in one transaction. Their tables are locked first,
    so no view or foreign key can appear between the dependency check and the drop; anything
    outside that depends on them refuses it (nothing changed), unless `cascade`. Returns what
    was dropped outside them. `app_roles` (apps.records) are recorded again in that transaction,
    so a run that fails or is killed before the migrations are back still knows the app roles."""
    conn = runner.conn
    assert conn is not None

    def drop() -> list[str]:
        with conn.transaction():
            tables = [r[0] for r in conn.execute(
                "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v') ORDER BY 1",
                (schemas,)).fetchall()]
            if tables:
                conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
            outside = outside_dependents(conn, schemas)
            if outside and not cascade:
                listed = ", ".join(outside[:10]) + (f" and {len(outside) - 10} more" if len(outside) > 10 else "")
                raise MinnoctlError(
                    f"refusing to drop minnoctl's schemas: {len(outside)} object(s) outside them depend on them "
                    f"and would be dropped too: {listed} — drop or change those first, or add --cascade to drop "
                    "them with the schemas; nothing was changed")
            for schema in reversed(schemas):
                conn.execute(f"DROP SCHEMA IF EXISTS {_ident(schema)} CASCADE")
            from minnoctl import yoyo_compat

            yoyo_compat.forget(conn, runner.files, runner.user, runner.host)  # or it would adopt them back
            if app_roles:
                from minnoctl import apps

                apps.remember(conn, app_roles)
            return outside

    return runner.retrying("dropping minnoctl's schemas (db init --force)", drop, "nothing was changed")


def init(settings: "Settings", chosen: list[modules.Module] | None = None, *, force: bool = False,
         lock_timeout: float = 30, files: list[MigrationFile] | None = None,
         verbose: bool = False, environment: str | None = None, cascade: bool = False,
         ddl_lock_timeout: float = DDL_LOCK_TIMEOUT_S, approve: Any = None,
         distributed: bool | None = None) -> RunResult:
    """Create the database if needed, the extensions and the schemas, and apply every migration of
    the chosen modules (all by default); on a Citus coordinator (detected, or `distributed`), lay the
    tables out by the modules' distribution plans. `force` first drops exactly minnoctl's module schemas and
    its bookkeeping schema, and refuses when objects outside them depend on them unless `cascade`.
    `approve(production_reason, recorded_environment)` is called before anything changes (before
    CREATE DATABASE; else under the lock): the CLI's production guard and confirmations."""
    from minnoctl.errors import ConnectError
    from minnoctl.safety import production_reason

    result = RunResult()
    runner = Runner(settings, files, ddl_lock_timeout)
    selected = modules.with_dependencies(chosen)
    approved = False
    try:
        runner.open(command="db init")
    except ConnectError as exc:
        if exc.kind != "no-database":
            raise
        if distributed:  # a database this creates has no citus in it (nor, on the workers, at all)
            raise ExtensionMissing("--distributed: the database does not exist, so it has no citus extension; "
                                   "create it on every node with CREATE EXTENSION citus and add the workers "
                                   "(citus_add_node), then run db init --distributed; nothing was changed") from None
        if approve is not None:
            approve(production_reason(None), None)  # a database that does not exist has no mark
            approved = True
        result.database_created = _create_database(settings, selected)
        runner.open(command="db init")
    names = {m.name for m in selected}
    assert runner.conn is not None  # open() set it, above
    try:
        with locks.advisory_lock(runner.conn, "migrate", lock_timeout, option="--lock-timeout"):
            conn = runner.conn
            assert conn is not None
            result.environment_before = recorded_environment(conn)
            if approve is not None and not approved:
                approve(production_reason(conn), result.environment_before)
            if chosen is None:  # plain db init again: leave out what this server cannot hold
                selected, result.skipped = _holdable(conn, selected)
                names = {m.name for m in selected}
            to_create = runner.check_extensions(selected)  # before any change
            found = _cluster_for(runner, distributed)  # before any change too
            if found is not None:
                from minnoctl import distribution

                for m in selected:
                    distribution.read_plan(m)  # a mistake in a plan file stops here, not after the migrations
            all_schemas = [m.schema for m in modules.MODULES] + [BOOKKEEPING]
            before = _catalog(conn, all_schemas) if verbose else set()
            if environment is None:
                environment = result.environment_before  # kept through --force too
            from minnoctl import apps  # the app roles outlive --force: recorded and granted again after it
            kept_apps = apps.records(conn) if force else None
            if force:
                result.cascaded = _drop_minnoctl_schemas(runner, all_schemas, cascade, kept_apps)
                log.warning("dropped minnoctl's schemas: %s", ", ".join(all_schemas))
                if result.cascaded:
                    log.warning("--cascade also dropped, outside them: %s", ", ".join(result.cascaded))
                before = set()
            runner.adopt()
            plan = _locked_plan(runner, [m for m in modules.MODULES if m.name in names], allow_drift=False)
            result.extensions_created = _create_extensions(runner, to_create)
            app_created, unavailable = _app_extensions(runner, selected)
            result.extensions_created += app_created
            pending_modules = {f.module for f in plan.pending}
            result.extensions_unavailable = {m: e for m, e in unavailable.items() if m in pending_modules}
            if environment is not None and environment != recorded_environment(conn):
                runner.ensure_bookkeeping()
                record_environment(conn, environment, f"{runner.user}@{runner.host}")
            if not plan.pending and not result.extensions_created:
                if found is not None:
                    _distribute(runner, result, found)
                result.up_to_date = not (result.distribution and result.distribution.changed)
                return result
            runner.ensure_bookkeeping()
            result.applied = runner.apply(plan.pending)
            if found is not None:
                _distribute(runner, result, found)
            apps.keep_grants(runner.conn, restore=kept_apps)  # the app roles' grants, after every run that applied
            if verbose:
                result.objects = sorted(_catalog(conn, all_schemas) - before)
            return result
    finally:
        runner.close()


# ---------------------------------------------------------------------------------------------
# migrate new


NEW_NAME_MAX = 80  # `migrate new NAME`: the file name stays short on every file system


def _start_set(root: Path, module: str) -> None:
    """`migrate new` into a MINNOCTL_MIGRATIONS_DIR that does not exist yet starts a migration set
    there (as it did before module folders): the folders of `module` and of the modules it depends
    on, with their entries (module.toml, retention SQL, seed data, health checks) copied from the
    packaged set and none of its migrations, so the new set is a valid one from its first file."""
    import shutil

    from minnoctl.render_text import shown

    packaged = modules.read(resources.migrations(), "minnoctl/migrations")
    if module not in packaged.by_name:
        raise UsageError(f"unknown module {shown(module)} — the modules are: {', '.join(packaged.by_name)}")
    wanted: list[str] = []

    def add(name: str) -> None:
        if name not in wanted:
            wanted.append(name)
            for dep in packaged.by_name[name].depends:
                add(dep)

    add(module)
    for name in wanted:
        with resources.migrations_path(packaged.by_name[name].migrations_folder) as source:
            target = root / name
            target.mkdir(parents=True, exist_ok=True)
            for item in Path(source).iterdir():
                if item.is_dir() and item.name != "__pycache__":
                    shutil.copytree(item, target / item.name, ignore=shutil.ignore_patterns("__pycache__"))
                elif item.suffix not in (".sql", ".py"):
                    shutil.copy2(item, target / item.name)


def new_migration(name: str, module: str, folder: Path | None = None) -> tuple[Path, Path]:
    """Write the next numbered file pair of `module`; returns their paths."""
    from minnoctl import resources

    from minnoctl.render_text import shown

    root, found = migrations_root()
    if folder is None and found == "MINNOCTL_MIGRATIONS_DIR" and root is not None and not root.exists():
        _start_set(root, module)
    mod = modules.get(module)
    # the name becomes the file name and the file's first comment line: one printable line, bounded
    if not name.isprintable():
        raise UsageError(f"migration name {shown(name)} holds a line break or control character — give one "
                         "line of letters and digits, e.g. add_user_index")
    if len(name) > NEW_NAME_MAX:
        raise UsageError(f"migration name {shown(name)} is {len(name)} characters long; at most {NEW_NAME_MAX}, "
                         "e.g. add_user_index")
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise UsageError(f"{shown(name)} gives an empty file name — use letters and digits, e.g. add_user_index")
    if folder is None:
        if root is not None:
            folder = root / mod.migrations_folder
        else:
            with resources.migrations_path(mod.migrations_folder) as path:
                folder = Path(path)
            if _installed(folder):  # a non-editable install outside a checkout: never write there
                raise ConfigError(
                    f"migrate new writes into the project, not the installed package ({folder.parent} is in "
                    "site-packages) — run it in your minnoctl checkout (a folder with pyproject.toml and "
                    "migrations/), or set MINNOCTL_MIGRATIONS_DIR to the migration set to write into")
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in folder.glob("*.sql") if (m := FILE_RE.match(p.name))]
    number = max(numbers, default=0) + 1
    forward = folder / f"{number:04d}_{slug}.sql"
    back = folder / f"{number:04d}_{slug}.rollback.sql"
    if forward.exists() or back.exists():
        raise UsageError(f"{forward} already exists")
    others = [f for f in _sibling_set(folder, mod) if f.module != module]
    clash = next((f for f in others if f.path.name == forward.name), None)
    if clash is not None:
        raise UsageError(f"{forward.name} already exists in module {clash.module} ({clash.path}), and stock yoyo's "
                         "id is the file name — give the migration another name")
    # stock yoyo's order: after the module's previous migration, or after the last migration of
    # each module it depends on (minnoctl itself applies in registry order)
    previous = sorted(p.name[:-4] for p in folder.glob("*.sql") if FILE_RE.match(p.name))
    depends = previous[-1:] if previous else [
        [f for f in others if f.module == dep][-1].path.name[:-4] for dep in mod.depends
        if any(f.module == dep for f in others)]
    schema_line = "" if previous else f"CREATE SCHEMA IF NOT EXISTS {mod.schema};\n"
    forward.write_text(
        f"-- {name}\n--\n-- Module {module}: objects land in schema {mod.schema} (the SET below, for any runner).\n"
        "-- Describe the change and every choice it makes here. Add `-- transactional: false` above\n"
        "-- for CREATE INDEX CONCURRENTLY, and write `SET search_path` (no LOCAL) then.\n"
        + (f"-- depends: {' '.join(depends)}\n" if depends else "")
        + f"\nSET LOCAL search_path = {mod.schema}, public;\n{schema_line}\n")
    back.write_text(f"-- Undo {forward.name}: drop what it created, in reverse order.\n\n"
                    f"SET LOCAL search_path = {mod.schema}, public;\n\n"
                    + ("" if previous else f"DROP SCHEMA IF EXISTS {mod.schema};\n"))
    return forward, back


def _sibling_set(folder: Path, mod: modules.Module) -> list[MigrationFile]:
    """The other module folders next to `folder` (the set it belongs to), in registry order."""
    root = folder.parent
    if folder.name != mod.migrations_folder:
        return []
    return [f for m in modules.MODULES for f in _load_folder(m.name, root / m.migrations_folder)]
