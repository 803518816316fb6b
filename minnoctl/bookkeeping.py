"""minnoctl's own tables (schema minnoctl) as a numbered migration set, brought up to date by ensure().

The tables — the record of the modules' migrations and its log, cleanup_runs, settings, app_roles
and schema_baseline — used to be CREATE TABLE IF NOT EXISTS statements run before each write, which
can never add a column to a table that exists and ran DDL at every cron cleanup. They are now the
files minnoctl/bookkeeping_sql/NNNN_name.sql, applied in number order, each once, and recorded in
minnoctl.bookkeeping_migrations (id, checksum, applied_at, applied_by). 0001_baseline adopts what
earlier versions created (IF NOT EXISTS there only); a later file changes a table the ordinary way.

A command that writes to these tables calls ensure() first. Up to date, that is two reads (is there
a record, which ids it holds): no DDL and no lock, so cron's cleanup every few minutes costs
nothing. Only with a file pending does it take the bookkeeping advisory lock for the transaction,
read again, and apply the pending files with their records in that transaction: two first runs at
once apply them once. Readers never call it (health, cleanup --dry-run, migrate status, app list):
they read what exists, so they work on a standby and as a role that may only SELECT. Rollbacks of
the modules' migrations never touch these tables: they are minnoctl's, not a module's.

This is not the modules' runner (migrate.py): the files are few, small and minnoctl's own, need no
stock yoyo record, no drift baseline and no per-statement retry.
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

from minnoctl import locks, modules
from minnoctl.errors import LockHeldError

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("minnoctl")

BOOKKEEPING = modules.BOOKKEEPING
RECORD = "bookkeeping_migrations"  # in schema BOOKKEEPING; created by 0001_baseline
FOLDER = "bookkeeping_sql"  # package data of minnoctl (pyproject.toml)
LOCK_WAIT_S = 30.0  # how long a run waits for another one upgrading the tables (milliseconds of DDL)
_FILE_RE = re.compile(r"^\d{4}_[a-z0-9][a-z0-9_]*\.sql$")


@dataclass(frozen=True)
class File:
    id: str  # the file name without .sql, e.g. 0001_baseline
    sql: str
    checksum: str  # sha256 of the content, recorded with the id


def load(folder: Path | Traversable | None = None) -> list[File]:
    """The set in number order: the package's, or `folder`'s (a test's set)."""
    root = package_files("minnoctl") / FOLDER if folder is None else folder
    out = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if _FILE_RE.match(entry.name):
            text = entry.read_text(encoding="utf-8")
            out.append(File(entry.name[:-4], text, hashlib.sha256(text.encode()).hexdigest()))
    return out


def applied(conn: "psycopg.Connection") -> set[str]:
    """The ids recorded; none before 0001 ran (a new database, or one an earlier minnoctl or stock
    yoyo built). Reads the catalog rather than to_regclass, whose cache may not yet show a table
    that another session committed while this one waited for the lock."""
    exists = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s)", (BOOKKEEPING, RECORD)).fetchone()[0]
    if not exists:
        return set()
    return {r[0] for r in conn.execute(f"SELECT id FROM {BOOKKEEPING}.{RECORD}")}


def pending(conn: "psycopg.Connection", files: list[File]) -> list[File]:
    """Those of `files` not applied yet. Reads only."""
    done = applied(conn)
    return [f for f in files if f.id not in done]


def ensure(conn: "psycopg.Connection", *, folder: Path | Traversable | None = None,
           ddl_lock_timeout_s: float = locks.DDL_LOCK_TIMEOUT_S, wait_s: float = LOCK_WAIT_S) -> list[str]:
    """Apply the pending files, if any; return their ids. On an autocommit connection in a
    transaction of its own, whose DDL waits at most `ddl_lock_timeout_s` for a table lock (the
    psycopg LockNotAvailable then propagates: migrate's runner retries it); inside the caller's
    transaction as a savepoint, with the caller's lock_timeout, and the lock then held until the
    caller commits. A run that finds the lock taken waits up to `wait_s`, then LockHeldError."""
    from psycopg.pq import TransactionStatus

    files = load(folder)
    if not pending(conn, files):
        return []
    own = conn.info.transaction_status == TransactionStatus.IDLE
    with conn.transaction():
        if own:
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(ddl_lock_timeout_s * 1000)}ms",))
        _lock(conn, wait_s)
        todo = pending(conn, files)  # again, under the lock: another run may have applied them meanwhile
        for f in todo:
            conn.execute(f.sql)
            conn.execute(f"INSERT INTO {BOOKKEEPING}.{RECORD} (id, checksum) VALUES (%s, %s)", (f.id, f.checksum))
    if todo:
        log.info("brought minnoctl's own tables up to date: %s", ", ".join(f.id for f in todo))
    return [f.id for f in todo]


def _lock(conn: "psycopg.Connection", wait_s: float) -> None:
    """The bookkeeping advisory lock, for the current transaction (it is released at commit, after
    the tables are there for everyone). Polled, so a wait is bounded without touching the caller's
    lock_timeout, and a wait that runs out names the holder."""
    deadline = time.monotonic() + max(0.0, wait_s)
    delay = 0.05
    while not conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)",
                           (locks.NAMESPACE, locks.KEYS["bookkeeping"])).fetchone()[0]:
        if time.monotonic() >= deadline:
            raise LockHeldError(
                f"the bookkeeping lock is held by {locks.describe_holder(conn, 'bookkeeping')}, which is bringing "
                f"minnoctl's own tables up to date — run this again when it is done (waited {wait_s:g} s)")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
