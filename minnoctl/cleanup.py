"""Retention: the tasks the modules declare in the registry, applied in short batches, for cron.

Each task is a table, a primary key, a time column and a predicate "due" (a row exactly at the
cutoff is not due). A run takes the cleanup advisory lock (one run at a time; a second exits at
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from minnoctl import locks, modules
from minnoctl.errors import ExitCode, UsageError
from minnoctl.render_text import shown

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("minnoctl")

TARGET_BATCH_S = 0.050  # aim for transactions of about this long (so that the p99 stays under 100 ms)
MAX_BATCH = 50_000
LOCK_TIMEOUT_MS = 2000  # a batch that cannot get its locks in time is left for the next run
PAUSE_FRACTION = 0.05  # pause after each batch: this share of its duration (at least 2 ms)


@dataclass(frozen=True)
class Spec:
    """How a task finds and handles its rows."""

    table: str  # schema.table
    key: str  # primary key column
    time_col: str  # what "old" is measured on; batches walk it in order
    due: str  # predicate on alias t; %(cutoff)s is the cutoff time
    # (conn, row addresses (ctid) of the locked batch, cutoff) -> counts. The rows are locked by the
    # batch's FOR UPDATE, so their addresses hold until the transaction ends: a TID scan, no index probe.
    apply: Callable[..., dict[str, int]]  # (conn, tids, cutoff, keys) -> counts
    extra_count: str | None = None  # dry run: rows of other tables that go with the due rows
    # dry run: (an earlier task, predicate on t) — due rows that earlier task takes away first, so a
    # dry run does not count them twice; {due} is that task's predicate on alias t2
    taken_by: tuple[str, str] | None = None
    pick: str | None = None  # a cheaper predicate to choose batches by, when `apply` re-checks `due`


def _delete(table: str) -> Callable:
    def run(conn, tids, cutoff, keys):
        return {"rows": conn.execute(f"DELETE FROM {table} WHERE ctid = ANY(%s::tid[])", (tids,)).rowcount}
    return run


def _archive_conversations(conn, tids, cutoff, ids):
    """One statement: delete the conversations (re-checked in this statement's snapshot: a message
    committed since the batch was chosen keeps its conversation; new messages into the locked
    conversations wait for this transaction), archive them, and archive their messages, which the
    statement still sees before the foreign key's cascade deletes them at its end."""
    n, m = conn.execute(
        # The forms are chosen for the plan: ctid = ANY(...) is a TID scan, and the newest message as a
        # correlated subquery is one index probe per row (NOT EXISTS became a hash anti join over the
        # whole messages index); the messages to archive are found by conversation id, not by a
        # semi join the planner would run as a sequential scan of every message.
        """WITH c AS (DELETE FROM chatbot.conversations t
                       WHERE t.ctid = ANY(%(tids)s::tid[])
                         AND coalesce((SELECT max(m.created_at) FROM chatbot.messages m
                                        WHERE m.conversation_id = t.id), '-infinity') < %(cutoff)s
                      RETURNING t.id, t.user_id, t.created_at, t.updated_at, t.metadata),
                ca AS (INSERT INTO chatbot.conversations_archive (id, user_id, created_at, updated_at, metadata)
                       SELECT id, user_id, created_at, updated_at, metadata FROM c),
                ma AS (INSERT INTO chatbot.messages_archive (id, conversation_id, role, content, created_at, metadata)
                       SELECT m.id, m.conversation_id, m.role, m.content, m.created_at, m.metadata
                         FROM chatbot.messages m
                        WHERE m.conversation_id = ANY(%(ids)s) AND m.conversation_id IN (SELECT id FROM c)
                       RETURNING 1)
           SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM ma)""",
        {"tids": tids, "ids": ids, "cutoff": cutoff}).fetchone()
    return {"rows": n, "archived": n + m}


def _archive_audit_logs(conn, tids, cutoff, keys):
    cols = ("id, event_type, event_category, event_description, event_data, slack_user_id, slack_team_id, "
            "slack_channel_id, session_id, created_at")
    n = conn.execute(f"""WITH moved AS (DELETE FROM slackbot.audit_logs WHERE ctid = ANY(%s::tid[]) RETURNING {cols})
                         INSERT INTO slackbot.audit_logs_archive ({cols}) SELECT {cols} FROM moved""",
                     (tids,)).rowcount
    return {"rows": n, "archived": n}


def _update(sql: str) -> Callable:
    def run(conn, tids, cutoff, keys):
        return {"rows": conn.execute(sql, (tids,)).rowcount}
    return run


SPECS: dict[str, Spec] = {
    "chatbot-conversations": Spec(
        "chatbot.conversations", "id", "updated_at",
        "t.updated_at < %(cutoff)s AND NOT EXISTS (SELECT 1 FROM chatbot.messages m "
        "WHERE m.conversation_id = t.id AND m.created_at >= %(cutoff)s)",
        _archive_conversations,
        # batches pick by updated_at alone: the archiving statement checks for recent messages
        # itself (it must, in its own snapshot), so the probe is not made twice
        pick="t.updated_at < %(cutoff)s",
        extra_count="SELECT count(*) FROM chatbot.messages m WHERE m.conversation_id IN (SELECT t.id FROM "
                    "chatbot.conversations t WHERE {due})"),
    "chatbot-system-messages": Spec(
        "chatbot.messages", "id", "created_at", "t.role = 'system' AND t.created_at < %(cutoff)s",
        _delete("chatbot.messages"),
        taken_by=("chatbot-conversations", "t.conversation_id IN (SELECT t2.id FROM chatbot.conversations t2 "
                                           "WHERE {due})")),
    "assistant-sessions": Spec(
        "assistant.sessions", "session_id", "expires_at", "t.expires_at < %(cutoff)s",
        _delete("assistant.sessions"),
        extra_count="SELECT (SELECT count(*) FROM assistant.confirmations c WHERE c.session_id IN (SELECT "
                    "t.session_id FROM assistant.sessions t WHERE {due})) + (SELECT count(*) FROM "
                    "assistant.oauth_tokens o WHERE o.session_id IN (SELECT t.session_id FROM assistant.sessions t "
                    "WHERE {due}))"),
    "assistant-confirmations": Spec(
        "assistant.confirmations", "id", "expires_at", "t.status = 'pending' AND t.expires_at < %(cutoff)s",
        _update("UPDATE assistant.confirmations SET status = 'expired', resolved_at = now() "
                "WHERE ctid = ANY(%s::tid[]) AND status = 'pending'")),
    "port-reservations": Spec(
        "supervisor.port_reservations", "id", "expires_at", "t.expires_at < %(cutoff)s",
        _delete("supervisor.port_reservations")),
    "port-leases": Spec(
        "supervisor.port_allocations", "id", "lease_expires_at",
        "t.status IN ('allocated', 'in_use') AND t.lease_expires_at < %(cutoff)s",
        _update("UPDATE supervisor.port_allocations SET status = 'released', released_at = now() "
                "WHERE ctid = ANY(%s::tid[]) AND status IN ('allocated', 'in_use')")),
    "slackbot-sessions": Spec(
        "slackbot.user_sessions", "id", "last_activity", "t.is_active AND t.last_activity < %(cutoff)s",
        _update("UPDATE slackbot.user_sessions SET is_active = false WHERE ctid = ANY(%s::tid[]) AND is_active")),
    "slackbot-cache": Spec(
        "slackbot.query_cache", "id", "expires_at", "(t.expires_at < %(cutoff)s OR NOT t.is_valid)",
        _delete("slackbot.query_cache")),
    "slackbot-audit-logs": Spec(
        "slackbot.audit_logs", "id", "created_at", "t.created_at < %(cutoff)s", _archive_audit_logs),
}
assert set(SPECS) == set(modules.TASKS), "every retention task in the registry has a Spec here"


# ---------------------------------------------------------------------------------------------
# Choosing tasks


@dataclass
class Plan:
    task: modules.RetentionTask
    module: modules.Module
    spec: Spec
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


def plan(conn: "psycopg.Connection", *, only: list[str] = (), skip: list[str] = (),
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
        elif not all(conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is not None
                     for t in _tables(SPECS[name])):
            reason = f"module {module.name} has pending migrations (run `minnoctl migrate`)"
        plans.append(Plan(task, module, SPECS[name], days, reason))
    return plans


def _tables(spec: Spec) -> list[str]:
    return [spec.table] + (["chatbot.messages_archive", "chatbot.conversations_archive"]
                           if spec.table == "chatbot.conversations" else [])


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class TaskResult:
    task: str
    module: str
    action: str
    policy: str
    status: str = "ok"  # ok | nothing | partial | skipped | dry-run
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
        if any(t.status == "partial" for t in self.tasks):
            return "partial"
        return "ok"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PARTIAL if self.status == "partial" else ExitCode.OK

    @property
    def longest_ms(self) -> float:
        return max((t.longest_ms for t in self.tasks), default=0.0)


def _cutoff(conn: "psycopg.Connection", days: float | None, now: Any = None) -> Any:
    """now (the server's, unless a test fixes it) minus the age: rows older than this are due."""
    return conn.execute("SELECT coalesce(%s::timestamptz, now()) - make_interval(secs => %s)",
                        (now, (days or 0) * 86400)).fetchone()[0]


def _taken(plans: list[Plan], p: Plan, cutoffs: dict[str, Any]) -> tuple[str, Any] | None:
    """The predicate of rows an earlier task of this run takes before `p` runs, with its cutoff."""
    if p.spec.taken_by is None:
        return None
    name, sql = p.spec.taken_by
    earlier = next((q for q in plans if q.task.name == name and q.installed), None)
    if earlier is None or name not in cutoffs:
        return None
    other = re.sub(r"\bt\.", "t2.", SPECS[name].due).replace("%(cutoff)s", "%(other)s")
    return sql.format(due=other), cutoffs[name]


def count_due(conn: "psycopg.Connection", p: Plan, cutoff: Any,
              taken: tuple[str, Any] | None = None) -> tuple[int, int, Any]:
    """(due rows, rows of other tables going with them, oldest due time) — what a run would do now.
    `taken`: rows an earlier task of the run removes first (not counted again)."""
    due = p.spec.due % {"cutoff": "%(cutoff)s"}
    params = {"cutoff": cutoff}
    if taken is not None:
        due = f"{due} AND NOT ({taken[0]})"
        params["other"] = taken[1]
    # ::timestamptz: a TIMESTAMP column holds UTC and the session's TimeZone is UTC (see the top),
    # so the oldest time carries its offset like the TIMESTAMPTZ columns' (a no-op for those)
    n, oldest = conn.execute(f"SELECT count(*), min(t.{p.spec.time_col})::timestamptz FROM {p.spec.table} t "
                             f"WHERE {due}",
                             params).fetchone()
    extra = 0
    if p.spec.extra_count and n:
        extra = conn.execute(p.spec.extra_count.format(due=due), params).fetchone()[0]
    return n, extra, oldest


def _record_start(conn: "psycopg.Connection", dry_run: bool) -> int:
    from minnoctl import bookkeeping, migrate

    bookkeeping.ensure(conn)  # an older minnoctl's database may lack the table; two reads when it has it
    conn.execute(f"UPDATE {migrate.BOOKKEEPING}.cleanup_runs SET status = 'failed', finished_at = now(), "
                 "error = 'the run was killed or lost its connection' WHERE status = 'running'")
    return conn.execute(
        f"INSERT INTO {migrate.BOOKKEEPING}.cleanup_runs (status, dry_run, by_user, host, pid) "
        "VALUES ('running', %s, %s, %s, %s) RETURNING id",
        (dry_run, getpass.getuser(), socket.gethostname(), os.getpid())).fetchone()[0]


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
    conn.execute("SELECT set_config('application_name', %s, false)", (locks.holder_name("cleanup"),))
    conn.execute("SET TimeZone = 'UTC'")
    cutoffs: dict[str, Any] = {}
    with locks.advisory_lock(conn, "cleanup", timeout_s=0):
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
                _run_task(conn, p, cutoff, tr, batch_size, deadline, progress)
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


def _run_task(conn: "psycopg.Connection", p: Plan, cutoff: Any, tr: TaskResult, batch_size: int,
              deadline: float | None, progress: Callable | None) -> None:
    import psycopg

    spec = p.spec
    due = spec.pick or spec.due
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
        after = "" if last is None else f" AND (t.{spec.time_col}, t.{spec.key}) > (%(t)s, %(k)s)"
        t0 = time.perf_counter()
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
                conn.execute("SET LOCAL synchronous_commit = off")  # a batch lost in a crash comes back whole
                rows = conn.execute(
                    f"SELECT t.{spec.time_col}, t.{spec.key}, t.ctid::text FROM {spec.table} t WHERE {due}{after} "
                    f"ORDER BY t.{spec.time_col}, t.{spec.key} LIMIT %(n)s FOR UPDATE SKIP LOCKED",
                    {"cutoff": cutoff, "n": size, **({"t": last[0], "k": last[1]} if last else {})}).fetchall()
                if not rows:
                    break
                counts = spec.apply(conn, [r[2] for r in rows], cutoff, [r[1] for r in rows])
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


def list_tasks(conn: "psycopg.Connection", plans: list[Plan]) -> list[dict[str, Any]]:
    """Each task, its policy and how many rows are due now."""
    conn.execute("SET TimeZone = 'UTC'")
    out = []
    for p in plans:
        row = {"task": p.task.name, "module": p.module.name, "action": p.task.action, "policy": p.policy,
               "description": p.task.description, "due_now": None, "oldest_due": None}
        if p.installed:
            row["due_now"], _, row["oldest_due"] = count_due(conn, p, _cutoff(conn, p.days))
        else:
            row["description"] += f" (skipped: {p.skip_reason})"
        out.append(row)
    return out
