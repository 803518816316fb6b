"""minnoctl's own tables (schema minnoctl) as a numbered migration set, brought up to date by ensure().

The tables (the record of the modules' migrations and its log, cleanup_runs, settings,
schema_baseline, app_roles) used to be CREATE TABLE IF NOT EXISTS statements run before each write.
Those can never add a column to a table that exists, and they ran DDL at every cron cleanup. They
are now the files minnoctl/bookkeeping_sql/NNNN_name.sql, applied in number order, each once, and
recorded in minnoctl.bookkeeping_migrations (id, table_name, checksum, applied_at, applied_by). The
first files adopt what earlier versions created (IF NOT EXISTS there only); a later file changes a
table the ordinary way (ALTER TABLE ... ADD COLUMN).

Each file belongs to one table (a `-- table: NAME` line), and a caller asks for the tables it
writes. That keeps two things as they were: a table is created when first needed (app_roles at
the first `app create`, so a database without app roles has none), and a table dropped by hand
(`DROP TABLE minnoctl.schema_baseline`, as when a baseline must be recorded again) is built again
by its files, all of them, so it gets its later columns too. A file counts as applied when it is
recorded and its table exists.

Up to date, ensure() is two reads (which of the tables exist, which files are recorded): no DDL
and no lock, so cron's cleanup every few minutes costs nothing. Only with a file pending does it
take the bookkeeping advisory lock for the transaction, read again, and apply the pending files with
their records in that transaction, so two first runs at once apply them once. Readers never call it
(health, cleanup --dry-run, migrate status, app list). They read what exists, so they work on a
standby and as a role that may only SELECT. A rollback of the modules' migrations never touches
these tables: they are minnoctl's, not a module's.

This is not the modules' runner (migrate.py): these files are few, small and minnoctl's own, and
need no stock yoyo record, no drift baseline and no per-statement retry.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from importlib.resources import files as package_files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Iterable

from minnoctl import locks, modules
from minnoctl.errors import LockHeldError
from minnoctl.rows import one

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("minnoctl")

BOOKKEEPING = modules.BOOKKEEPING
RECORD = "bookkeeping_migrations"  # in schema BOOKKEEPING; created by the first file
FOLDER = "bookkeeping_sql"  # package data of minnoctl (pyproject.toml)
# the tables minnoctl created together before each migrate and cleanup, and still does
CORE = ("migrations", "migration_log", "cleanup_runs", "settings")
LOCK_WAIT_S = 30.0  # how long a run waits for another one bringing the tables up (milliseconds of DDL)
_FILE_RE = re.compile(r"^\d{4}_[a-z0-9][a-z0-9_]*\.sql$")
_TABLE_RE = re.compile(r"^--\s*table:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class File:
    id: str  # the file name without .sql, e.g. 0004_cleanup_runs
    table: str  # the one table of minnoctl's it creates or changes
    sql: str
    checksum: str  # sha256 of the content, recorded with the id


def load(folder: Path | Traversable | None = None) -> list[File]:
    """The set in number order: the package's, or `folder`'s (a test's set)."""
    root = package_files("minnoctl") / FOLDER if folder is None else folder
    out = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not _FILE_RE.match(entry.name):
            continue
        text = entry.read_text(encoding="utf-8")
        table = _TABLE_RE.search(text)
        if table is None:
            raise ValueError(f"{entry.name} has no `-- table: NAME` line naming the table it belongs to")
        out.append(File(entry.name[:-4], table.group(1), text, hashlib.sha256(text.encode()).hexdigest()))
    return out


def pending(conn: "psycopg.Connection", files: list[File], tables: Iterable[str] = CORE) -> list[File]:
    """The files `tables` (and the record) still need: not recorded, or recorded for a table that is
    gone. Reads only. The catalog is read rather than to_regclass, whose cache may not yet show a
    table that another session committed while this one waited for the lock."""
    wanted = {RECORD, *tables}
    present = {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')", (BOOKKEEPING, sorted(wanted)))}
    done = {r[0] for r in conn.execute(f"SELECT id FROM {BOOKKEEPING}.{RECORD}")} if RECORD in present else set()
    return [f for f in files if f.table in wanted and not (f.id in done and f.table in present)]


def ensure(conn: "psycopg.Connection", tables: Iterable[str] = CORE, *, folder: Path | Traversable | None = None,
           ddl_lock_timeout_s: float = locks.DDL_LOCK_TIMEOUT_S, wait_s: float = LOCK_WAIT_S) -> list[str]:
    """Bring `tables` up to date; return the ids of the files applied. On an autocommit connection
    in a transaction of its own, whose DDL waits at most `ddl_lock_timeout_s` for a table lock (the
    psycopg LockNotAvailable then propagates: migrate's runner retries it); inside the caller's
    transaction as a savepoint, with the caller's lock_timeout, and the lock then held until the
    caller commits. A run that finds the lock taken waits up to `wait_s`, then LockHeldError."""
    from psycopg.pq import TransactionStatus

    tables = tuple(tables)
    files = load(folder)
    if not pending(conn, files, tables):
        return []
    own = conn.info.transaction_status == TransactionStatus.IDLE
    with conn.transaction():
        if own:
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(ddl_lock_timeout_s * 1000)}ms",))
        _lock(conn, wait_s)
        todo = pending(conn, files, tables)  # again, under the lock: another run may have applied them
        for f in todo:
            conn.execute(f.sql)
            conn.execute(
                f"INSERT INTO {BOOKKEEPING}.{RECORD} (id, table_name, checksum) VALUES (%s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET table_name = excluded.table_name, checksum = excluded.checksum, "
                "applied_at = now(), applied_by = current_user", (f.id, f.table, f.checksum))
    if todo:
        log.info("brought minnoctl's own tables up to date: %s", ", ".join(f.id for f in todo))
    return [f.id for f in todo]


def _lock(conn: "psycopg.Connection", wait_s: float) -> None:
    """The bookkeeping advisory lock, for the current transaction (released at commit, when the
    tables are there for everyone). Polled, so a wait is bounded without touching the caller's
    lock_timeout, and a wait that runs out names the holder."""
    deadline = time.monotonic() + max(0.0, wait_s)
    delay = 0.05
    while not one(conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)",
                               (locks.NAMESPACE, locks.KEYS["bookkeeping"])))[0]:
        if time.monotonic() >= deadline:
            raise LockHeldError(
                f"the bookkeeping lock is held by {locks.describe_holder(conn, 'bookkeeping')}, which is bringing "
                f"minnoctl's own tables up to date — run this again when it is done (waited {wait_s:g} s)")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
