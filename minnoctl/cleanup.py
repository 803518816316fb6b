"""Retention: the tasks the modules declare in the registry, applied in short batches, for cron.

Each task is a table, a primary key, a time column and a predicate "due" (a row exactly at the
cutoff is not due), declared in its module's module.toml, and a statement applied to each batch,
in the module folder's retention/<task>.sql (modules.RetentionTask); this file is the machinery
that runs any of them. A run takes the cleanup advisory lock (one run at a time; a second exits at
once), and works each task in batches: select the next keys in (time, key) order past the last
batch's (keyset, so no batch rescans what earlier ones removed), FOR UPDATE SKIP LOCKED (rows an
application holds are left for the next run), re-check the predicate, apply the action, commit.
Each batch is one transaction with a lock_timeout; its size adapts to keep it near 50 ms; a
short pause follows it; --max-runtime stops between batches and the next run resumes (the
predicates hold no state). A dry run walks the same predicates and counts instead of writing;
it records nothing either, so it works on a standby and for a role that may only SELECT.

Times: TIMESTAMP (without time zone) columns hold UTC in this database (seeds and tokens write
UTC), so cleanup's sessions run with TimeZone = 'UTC' and compare in UTC.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterator, Sequence

from minnoctl import locks, modules
from minnoctl.errors import ExitCode, UsageError
from minnoctl.render_text import shown
from minnoctl.rows import one

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("minnoctl")

TARGET_BATCH_S = 0.050  # aim for transactions of about this long (so that the p99 stays under 100 ms)
MAX_BATCH = 50_000
LOCK_TIMEOUT_MS = 2000  # a batch that cannot get its locks in time is left for the next run
PAUSE_FRACTION = 0.05  # pause after each batch: this share of its duration (at least 2 ms)


_BY_CTID = re.compile(r"\b(?:(\w+)\.)?ctid = ANY\(%\(tids\)s::tid\[\]\)")


def routed(task: modules.RetentionTask, column: str) -> list[str] | None:
    """The statements of a task on a distributed table, each run on the batch's rows of one shard
    with %(route)s their distribution column values: the module's retention/<task>.citus.sql when it
    has one (statements in order), else its one statement when that is a plain DELETE or UPDATE,
    each `[alias.]ctid = ANY(%(tids)s::tid[])` gaining `AND [alias.]COLUMN = ANY(%(route)s)` so
    Citus runs it on that shard alone (a ctid means something only within one shard). A statement
    with a WITH is not rewritten: Citus runs data-modifying CTEs one at a time, so a cascade could
    delete rows a later CTE was to archive. None: the task cannot run on the cluster."""
    if task.citus_sql.strip():
        return [part.strip() for part in _statements(task.citus_sql) if part.strip()]
    body = "\n".join(line for line in task.sql.splitlines() if not line.lstrip().startswith("--")).strip()
    if not _BY_CTID.search(body) or re.match(r"(?is)\s*with\b", body):
        return None
    return [_BY_CTID.sub(lambda m: f"{m.group(0)} AND {m.group(1) + '.' if m.group(1) else ''}{column} "
                                   "= ANY(%(route)s)", body)]


def _statements(text: str) -> list[str]:
    """The statements of a .citus.sql file: comment lines dropped, split at a ';' that ends a line."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return re.split(r";\s*(?:\n|$)", body)


def _apply(conn: "psycopg.Connection", task: modules.RetentionTask, tids: list[str], cutoff: Any,
           keys: list[Any], route: tuple[list[str], list[Any]] | None = None) -> dict[str, int]:
    """Run the task's statement (retention/<task>.sql of its module) on one locked batch: %(tids)s
    are the rows' addresses (ctid; the batch's FOR UPDATE holds them until the transaction ends,
    so the statement is a TID scan, no index probe), %(keys)s their primary keys, %(cutoff)s the
    cutoff. A statement that returns a row says what it did in its columns `rows` and `archived`;
    otherwise its row count is the rows handled (and archived, for an archive)."""
    params = {"tids": tids, "keys": keys, "cutoff": cutoff}
    if route is not None:  # a cluster's statements: a result row says what it did; else an INSERT's row
        # count is rows archived, any other statement's the rows handled
        params["route"] = route[1]
        total = {"rows": 0, "archived": 0}
        for statement in route[0]:
            cur = conn.execute(statement, params)
            if cur.description is not None:
                counts = dict(zip([c.name for c in cur.description], one(cur)))
                total["rows"] += int(counts.get("rows") or 0)
                total["archived"] += int(counts.get("archived") or 0)
            elif statement.lstrip()[:6].upper() == "INSERT":  # a copy into an archive
                total["archived"] += cur.rowcount
            else:  # the rows handled (deleted, updated)
                total["rows"] += cur.rowcount
        return total
    cur = conn.execute(task.sql, params)
    if cur.description is not None:
        row = one(cur)
        counts = dict(zip([c.name for c in cur.description], row))
        return {"rows": int(counts.get("rows") or 0), "archived": int(counts.get("archived") or 0)}
    n = cur.rowcount
    return {"rows": n, "archived": n if task.action == "archive" else 0}


# ---------------------------------------------------------------------------------------------
# Choosing tasks


@dataclass
class Plan:
    task: modules.RetentionTask
    module: modules.Module
    days: float | None  # the age (or the grace after expiry); None: due at expiry
    skip_reason: str | None  # why it cannot run here (module not installed, migrations pending)

    @property
    def installed(self) -> bool:
        return self.skip_reason is None

    @property
    def policy(self) -> str:
        if self.task.default_days is None:
            return "at expiry" if self.days is None else f"{self.days:g} day(s) after expiry"
        return f"after {self.days:g} day(s)"


def parse_ages(items: list[str]) -> dict[str, float]:
    """--older-than TASK=DAYS (repeatable; or a duration, 36h, 1d12h) -> {task: days}: more than 0,
    at most 3650 (10 years)."""
    from minnoctl.config import MAX_SPAN_S, parse_duration
    ages: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise UsageError(f"--older-than {shown(item)} is not TASK=DAYS, e.g. chatbot-conversations=120")
        _check_task(name, "--older-than")
        ages[name] = parse_duration(value, f"--older-than {name}", bare=86400, maximum=MAX_SPAN_S) / 86400
    return ages


def _check_task(name: str, option: str) -> None:
    if name not in modules.TASKS:
        raise UsageError(f"{option}: unknown task {shown(name)} — the tasks are: {', '.join(modules.TASKS)} "
                         "(minnoctl cleanup --list)")


def plan(conn: "psycopg.Connection", *, only: Sequence[str] = (), skip: Sequence[str] = (),
         ages: dict[str, float] | None = None) -> list[Plan]:
    from minnoctl import migrate

    for name in only:
        _check_task(name, "--only")
    for name in skip:
        _check_task(name, "--skip")
    ages = ages or {}
    applied = migrate.read_applied(conn)
    installed = migrate.installed_modules(applied)
    plans = []
    for name, (module, task) in modules.TASKS.items():
        if only and name not in only or name in skip:
            continue
        days = ages.get(name, task.default_days)
        reason = None
        if module.name not in installed:
            reason = f"module {module.name} is not installed"
        elif not all(one(conn.execute("SELECT to_regclass(%s)", (t,)))[0] is not None
                     for t in (task.table, *task.requires)):
            reason = f"module {module.name} has pending migrations (run `minnoctl migrate`)"
        plans.append(Plan(task, module, days, reason))
    return plans


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class TaskResult:
    task: str
    module: str
    action: str
    policy: str
    status: str = "ok"  # ok | nothing | partial | skipped | dry-run | failed (the server could not run it)
    rows: int = 0
    archived: int = 0
    batches: int = 0
    longest_ms: float = 0.0
    oldest_overdue: Any = None
    note: str | None = None
    batch_ms: list[float] = field(default_factory=list)  # every batch transaction's duration

    @property
    def p99_ms(self) -> float:
        if not self.batch_ms:
            return 0.0
        ordered = sorted(self.batch_ms)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    def document(self) -> dict[str, Any]:
        return {"task": self.task, "module": self.module, "action": self.action, "policy": self.policy,
                "status": self.status, "rows": self.rows, "archived": self.archived, "batches": self.batches,
                "longest_transaction_ms": round(self.longest_ms, 1), "p99_transaction_ms": round(self.p99_ms, 1),
                "oldest_overdue": self.oldest_overdue,
                "note": self.note}


@dataclass
class RunResult:
    dry_run: bool
    tasks: list[TaskResult] = field(default_factory=list)
    run_id: int | None = None
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tasks)

    @property
    def status(self) -> str:
        if any(t.status == "failed" for t in self.tasks):
            return "failed"
        if any(t.status == "partial" for t in self.tasks):
            return "partial"
        return "ok"

    @property
    def exit_code(self) -> ExitCode:
        return {"failed": ExitCode.FAILURE, "partial": ExitCode.PARTIAL}.get(self.status, ExitCode.OK)

    @property
    def longest_ms(self) -> float:
        return max((t.longest_ms for t in self.tasks), default=0.0)


def _cutoff(conn: "psycopg.Connection", days: float | None, now: Any = None) -> Any:
    """now (the server's, unless a test fixes it) minus the age: rows older than this are due."""
    return one(conn.execute("SELECT coalesce(%s::timestamptz, now()) - make_interval(secs => %s)",
                            (now, (days or 0) * 86400)))[0]


def _taken(plans: list[Plan], p: Plan, cutoffs: dict[str, Any]) -> tuple[str, Any] | None:
    """The predicate of rows an earlier task of this run takes before `p` runs, with its cutoff."""
    if p.task.taken_by is None:
        return None
    name, sql = p.task.taken_by
    earlier = next((q for q in plans if q.task.name == name and q.installed), None)
    if earlier is None or name not in cutoffs:
        return None
    other = re.sub(r"\bt\.", "t2.", earlier.task.due).replace("%(cutoff)s", "%(other)s")
    return sql.format(due=other), cutoffs[name]


def count_due(conn: "psycopg.Connection", p: Plan, cutoff: Any,
              taken: tuple[str, Any] | None = None) -> tuple[int, int, Any]:
    """(due rows, rows of other tables going with them, oldest due time) — what a run would do now.
    `taken`: rows an earlier task of the run removes first (not counted again)."""
    due = p.task.due % {"cutoff": "%(cutoff)s"}
    params = {"cutoff": cutoff}
    if taken is not None:
        due = f"{due} AND NOT ({taken[0]})"
        params["other"] = taken[1]
    # ::timestamptz: a TIMESTAMP column holds UTC and the session's TimeZone is UTC (see the top),
    # so the oldest time carries its offset like the TIMESTAMPTZ columns' (a no-op for those)
    n, oldest = one(conn.execute(f"SELECT count(*), min(t.{p.task.time_column})::timestamptz FROM {p.task.table} t "
                                 f"WHERE {due}",
                                 params))
    extra = 0
    if p.task.extra_count and n:
        extra = one(conn.execute(p.task.extra_count.format(due=due), params))[0]
    return n, extra, oldest


def _record_start(conn: "psycopg.Connection", dry_run: bool) -> int:
    from minnoctl import bookkeeping, migrate

    bookkeeping.ensure(conn)  # an older minnoctl's database may lack the table; two reads when it has it
    conn.execute(f"UPDATE {migrate.BOOKKEEPING}.cleanup_runs SET status = 'failed', finished_at = now(), "
                 "error = 'the run was killed or lost its connection' WHERE status = 'running'")
    return one(conn.execute(
        f"INSERT INTO {migrate.BOOKKEEPING}.cleanup_runs (status, dry_run, by_user, host, pid) "
        "VALUES ('running', %s, %s, %s, %s) RETURNING id",
        (dry_run, getpass.getuser(), socket.gethostname(), os.getpid())))[0]


def _record_end(conn: "psycopg.Connection", result: RunResult, error: str | None = None) -> None:
    from minnoctl import migrate

    if result.run_id is None or conn.closed:
        return
    conn.execute(f"UPDATE {migrate.BOOKKEEPING}.cleanup_runs SET status = %s, finished_at = now(), rows = %s, "
                 "tasks = %s, error = %s WHERE id = %s",
                 ("failed" if error else result.status, result.rows,
                  json.dumps([t.document() for t in result.tasks], default=str), error, result.run_id))


def run(conn: "psycopg.Connection", plans: list[Plan], *, dry_run: bool = False, batch_size: int = 500,
        max_runtime: float | None = None, progress: Callable[[str, int, int], None] | None = None,
        now: Any = None) -> RunResult:
    """Apply the plans. `conn` is an autocommit connection. One run at a time (exit 8 otherwise).
    `now` fixes the instant the cutoffs are measured from (for tests of the exact boundary)."""
    import psycopg

    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    started = time.monotonic()
    deadline = started + max_runtime if max_runtime else None
    result = RunResult(dry_run)
    cutoffs: dict[str, Any] = {}
    with in_utc(conn), locks.advisory_lock(conn, "cleanup", timeout_s=0):
        routes = _routes(conn, plans)
        # a dry run writes nothing, not even its record: it works on a standby and for a role that may
        # only SELECT (session SETs and an advisory lock are allowed in read-only transactions)
        result.run_id = None if dry_run else _record_start(conn, dry_run)
        try:
            for p in plans:
                tr = TaskResult(p.task.name, p.module.name, p.task.action, p.policy)
                result.tasks.append(tr)
                if not p.installed:
                    tr.status, tr.note = "skipped", p.skip_reason
                    log.info("skipped %s: %s", p.task.name, p.skip_reason)
                    continue
                cutoff = _cutoff(conn, p.days, now)
                cutoffs[p.task.name] = cutoff
                if dry_run:
                    tr.rows, extra, tr.oldest_overdue = count_due(conn, p, cutoff, _taken(plans, p, cutoffs))
                    tr.archived = tr.rows + extra if p.task.action == "archive" else 0
                    tr.status = "dry-run" if tr.rows else "nothing"
                    if extra and p.task.action != "archive":
                        tr.note = f"{extra} dependent row(s) go with them"
                    continue
                try:
                    _run_task(conn, p, cutoff, tr, batch_size, deadline, progress, routes.get(p.task.table))
                except (psycopg.errors.FeatureNotSupported, psycopg.errors.InternalError) as exc:
                    # a cluster that cannot run this statement: this task fails in one line, the others run
                    tr.status = "failed"
                    tr.note = f"the server cannot run this task: {str(exc).strip().splitlines()[0]}"
                    log.warning("%s: %s", p.task.name, tr.note)
                    continue
                if deadline and time.monotonic() >= deadline and tr.status == "partial":
                    for rest in plans[plans.index(p) + 1:]:
                        result.tasks.append(TaskResult(rest.task.name, rest.module.name, rest.task.action,
                                                       rest.policy, status="partial",
                                                       note="not started: --max-runtime reached"))
                    break
        except BaseException as exc:
            try:
                _record_end(conn, result, error=f"{exc.__class__.__name__}: {str(exc)[:200]}")
            except psycopg.Error:
                pass
            raise
        _record_end(conn, result)
    result.seconds = time.monotonic() - started
    return result


def _routes(conn: "psycopg.Connection", plans: list[Plan]) -> dict[str, str]:
    """On a Citus cluster: each task table that is distributed -> its distribution column (one catalog
    probe on plain PostgreSQL)."""
    from minnoctl import distribution

    if distribution.cluster(conn) is None:
        return {}
    schemas = sorted({p.module.schema for p in plans})
    return {name: entry["column"] for name, entry in distribution.layout(conn, schemas).items()
            if entry["kind"] == "distributed"}


def _run_task(conn: "psycopg.Connection", p: Plan, cutoff: Any, tr: TaskResult, batch_size: int,
              deadline: float | None, progress: Callable | None, column: str | None = None) -> None:
    import psycopg

    task = p.task
    statement = None
    if column is not None:  # a distributed table: batches chosen across the shards, run shard by shard
        statement = routed(task, column)
        if statement is None:
            tr.status = "failed"
            tr.note = (f"cannot run on a Citus cluster: {task.table} is distributed and the task has no "
                       f"retention/{task.name}.citus.sql (migrations/README.md, Distribution)")
            log.warning("%s: %s", task.name, tr.note)
            return
    due = task.pick or task.due
    size = min(batch_size, MAX_BATCH)
    last: tuple[Any, Any] | None = None
    total = None
    if progress:
        total = count_due(conn, p, cutoff)[0]
    while True:
        if deadline and time.monotonic() >= deadline:
            tr.status = "partial"
            tr.note = "stopped at --max-runtime; the next run resumes"
            break
        after = "" if last is None else f" AND (t.{task.time_column}, t.{task.key}) > (%(t)s, %(k)s)"
        t0 = time.perf_counter()
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
                conn.execute("SET LOCAL synchronous_commit = off")  # a batch lost in a crash comes back whole
                params = {"cutoff": cutoff, "n": size, **({"t": last[0], "k": last[1]} if last else {})}
                if statement is None:
                    rows = conn.execute(
                        f"SELECT t.{task.time_column}, t.{task.key}, t.ctid::text FROM {task.table} t "
                        f"WHERE {due}{after} ORDER BY t.{task.time_column}, t.{task.key} LIMIT %(n)s "
                        "FOR UPDATE SKIP LOCKED", params).fetchall()
                    if not rows:
                        break
                    counts = _apply(conn, task, [r[2] for r in rows], cutoff, [r[1] for r in rows])
                else:
                    assert column is not None
                    rows = conn.execute(
                        f"SELECT t.{task.time_column}, t.{task.key}, t.ctid::text, t.{column}, "
                        f"get_shard_id_for_distribution_column(%(table)s, t.{column}) FROM {task.table} t "
                        f"WHERE {due}{after} ORDER BY t.{task.time_column}, t.{task.key} LIMIT %(n)s",
                        params | {"table": task.table}).fetchall()
                    if not rows:
                        break
                    counts = _apply_by_shard(conn, task, due, column, statement, rows, cutoff)
        except psycopg.errors.LockNotAvailable:
            tr.status = "partial"
            tr.note = f"a lock was not granted within {LOCK_TIMEOUT_MS} ms; the next run retries"
            log.warning("%s: %s", p.task.name, tr.note)
            break
        elapsed = time.perf_counter() - t0
        last = (rows[-1][0], rows[-1][1])
        tr.batches += 1
        tr.rows += counts.get("rows", 0)
        tr.archived += counts.get("archived", 0)
        tr.longest_ms = max(tr.longest_ms, elapsed * 1000)
        tr.batch_ms.append(elapsed * 1000)
        if progress:
            progress(p.task.name, tr.rows, total or 0)
        # adapt: about TARGET_BATCH_S per transaction (proportional, at most x1.25 or /2 a step)
        factor = min(1.25, max(0.5, TARGET_BATCH_S / max(elapsed, 1e-4)))
        size = max(1, min(MAX_BATCH, int(size * factor) if factor <= 1 else max(size + 1, int(size * factor))))
        time.sleep(max(0.002, elapsed * PAUSE_FRACTION))
    if tr.status != "partial":
        tr.status = "ok" if tr.rows else "nothing"
    tr.oldest_overdue = count_due(conn, p, cutoff)[2] if tr.status == "partial" else None


def _apply_by_shard(conn: "psycopg.Connection", task: modules.RetentionTask, due: str, column: str,
                    statement: list[str], rows: list[Any], cutoff: Any) -> dict[str, int]:
    """One batch of a distributed table: per shard, lock its rows of the batch that are still due
    (a router query, so FOR UPDATE SKIP LOCKED works as on PostgreSQL) and run the task's statement
    routed to that shard. All in the caller's transaction."""
    shards: dict[Any, list[Any]] = {}
    for row in rows:
        shards.setdefault(row[4], []).append(row)
    total = {"rows": 0, "archived": 0}
    for group in shards.values():
        locked = conn.execute(
            f"SELECT t.ctid::text, t.{task.key}, t.{column} FROM {task.table} t WHERE t.ctid = ANY(%(tids)s::tid[]) "
            f"AND t.{column} = ANY(%(route)s) AND {due} FOR UPDATE SKIP LOCKED",
            {"tids": [r[2] for r in group], "route": list({r[3] for r in group}), "cutoff": cutoff}).fetchall()
        if not locked:
            continue
        counts = _apply(conn, task, [r[0] for r in locked], cutoff, [r[1] for r in locked],
                        route=(statement, list({r[2] for r in locked})))
        total["rows"] += counts["rows"]
        total["archived"] += counts["archived"]
    return total


@contextmanager
def in_utc(conn: "psycopg.Connection") -> Iterator[None]:
    """Cleanup compares the applications' UTC timestamps with its cut-offs in UTC (see the module
    docstring): the session's time zone for the block, on the caller's connection (cleanup runs on
    the one the caller opened; the CLI's is connection.session()), and the caller's own time zone
    back afterwards, so nothing cleanup sets outlives its use of the connection."""
    before = one(conn.execute("SELECT current_setting('TimeZone'), set_config('TimeZone', 'UTC', false)"))[0]
    try:
        yield
    finally:
        if not conn.closed:
            try:
                conn.execute("SELECT set_config('TimeZone', %s, false)", (before,))
            except Exception:  # the session is going away (or its transaction failed): nothing to restore
                pass


def list_tasks(conn: "psycopg.Connection", plans: list[Plan]) -> list[dict[str, Any]]:
    """Each task, its policy and how many rows are due now."""
    with in_utc(conn):
        return [_task_row(conn, p) for p in plans]


def _task_row(conn: "psycopg.Connection", p: Plan) -> dict[str, Any]:
    """list_tasks' row of one task."""
    row: dict[str, Any] = {"task": p.task.name, "module": p.module.name, "action": p.task.action, "policy": p.policy,
           "description": p.task.description, "due_now": None, "oldest_due": None}
    if p.installed:
        row["due_now"], _, row["oldest_due"] = count_due(conn, p, _cutoff(conn, p.days))
    else:
        row["description"] += f" (skipped: {p.skip_reason})"
    return row
