"""Advisory locks that name their holder and never outlive it.

A PostgreSQL session-level advisory lock is released by the server when the session ends, so a
run killed with kill -9 never blocks the next one (unlike yoyo's lock row, which survives).
A second run waits a bounded time, then fails with LockHeldError naming the holder: its pid, its
host (from the holder's application_name, which minnoctl sets) and since when.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING
from collections.abc import Iterator

from minnoctl.errors import LockHeldError
from minnoctl.rows import one

if TYPE_CHECKING:
    import psycopg

NAMESPACE = 0x4D494E4E  # 'MINN': the first key of every minnoctl advisory lock
# --ddl-lock-timeout: how long one migration statement may wait for a table lock (migrate.py). Here,
# not in migrate.py, so the CLI can show the default without importing the migration machinery.
DDL_LOCK_TIMEOUT_S = 5.0
KEYS = {"migrate": 1, "token-rotate": 2, "cleanup": 3, "seed": 4, "bookkeeping": 5}


def holder_name(purpose: str) -> str:
    """The application_name a lock holder's session carries, so others can name it."""
    return f"minnoctl {purpose} pid={os.getpid()} host={socket.gethostname()}"[:63]


def describe_holder(conn: "psycopg.Connection", purpose: str) -> str:
    row = conn.execute(
        """
        SELECT a.pid, a.application_name, coalesce(host(a.client_addr), 'local socket'),
               to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
          FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted
           AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 2
        """,
        (NAMESPACE, KEYS[purpose]),
    ).fetchone()
    if row is None:
        return "another session (it has just let go; try again)"
    pid, app, client, since = row
    return f"{app or 'a session'} (server pid {pid}, from {client}, since {since})"


@contextmanager
def advisory_lock(conn: "psycopg.Connection", purpose: str, timeout_s: float,
                  option: str | None = None) -> Iterator[None]:
    """Hold minnoctl's `purpose` lock on `conn` (autocommit) for the block; wait up to timeout_s.
    `option`: the caller's option that sets the wait (e.g. --lock-timeout), which the message then
    recommends; None for a command without one, whose message recommends none."""
    key = KEYS[purpose]
    deadline = time.monotonic() + max(0.0, timeout_s)
    delay = 0.05
    # the session carries the holder's name while it holds the lock, so a refused run can name it
    # (describe_holder); the name it had comes back with the lock's release. A session-level lock
    # and SET: the commands that take one get a session of their own from connection.open_session
    # (NEEDS_SESSION), which refuses a transaction pool, where both would stay on a pooled server
    # connection (the unlock going to another)
    name = holder_name(purpose)
    before = one(conn.execute("SELECT current_setting('application_name'), set_config('application_name', %s, false)",
                              (name,)))[0]
    while True:
        if one(conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (NAMESPACE, key)))[0]:
            break
        if time.monotonic() >= deadline:
            conn.execute("SELECT set_config('application_name', %s, false)", (before,))
            advice = f", or raise {option}" if option else " and run this again"
            raise LockHeldError(
                f"the {purpose} lock is held by {describe_holder(conn, purpose)} — wait for it to finish"
                f"{advice} (waited {timeout_s:g} s)"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    try:
        yield
    finally:
        if not conn.closed:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s, %s), set_config('application_name', %s, false)",
                             (NAMESPACE, key, before))
            except Exception:  # the session is going away: the server releases the lock itself
                pass


def is_held(conn: "psycopg.Connection", purpose: str) -> bool:
    """Whether any session holds the lock (for status displays; takes nothing)."""
    row = conn.execute(
        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s::oid "
        "AND objid = %s::oid AND objsubid = 2",
        (NAMESPACE, KEYS[purpose]),
    ).fetchone()
    return row is not None
