"""Running the registered checks: the full report, and the liveness and readiness probes.

Every check of the report runs in one read-only transaction, each statement under a statement and
lock timeout, so a health check never writes, never waits long behind a lock, and one failing check
(a missing privilege, a timeout) becomes that check's UNKNOWN with the reason instead of failing the
report. The probes run their few checks (registry.probe) on the bare connection, as fast as a probe
must be. The connect attempt is the runner's; the `connection` check reports it like any other.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from minnoctl.config import Settings
from minnoctl.errors import ConnectError
from minnoctl.health import registry
from minnoctl.health.report import Check, Report, Status
from minnoctl.health.threshold import show

STATEMENT_TIMEOUT = "5s"
LOCK_TIMEOUT = "1s"
# on a Citus coordinator, its connections to the nodes give up sooner than a statement does: a node that
# does not answer is named by the check that asked it ("could not ask ..."), not a timeout of the check
CITUS_CONNECT_TIMEOUT = "2s"


@dataclass
class Context:
    """What a check gets: the connection, the settings and thresholds, and what the runner found."""

    conn: Any
    settings: Settings
    limits: dict[str, float | None] = field(default_factory=dict)
    backup_dir: str | None = None
    now: dt.datetime | None = None
    installed: set[str] = field(default_factory=set)
    applied: dict[str, Any] = field(default_factory=dict)
    privileged: bool = False  # superuser or a member of pg_read_all_stats (pg_monitor)
    user: str = ""
    standby: bool = False  # pg_is_in_recovery(): a hot standby, whose catalog and data are the primary's
    citus: str = ""  # the Citus node it is: "coordinator" | "worker" ("" without the citus extension)
    asked: set[str] = field(default_factory=set)  # checks asked for by name or threshold (asked_for)
    probe: str | None = None  # live | ready: a probe runs the check, which reports as that probe has it
    connect_ms: float = 0.0  # the runner's connect attempt and its SELECT 1 (the connection check)
    rtt_ms: float = 0.0
    connect_error: ConnectError | None = None
    _files: list[Any] | None = None
    memo: dict[str, Any] = field(default_factory=dict)  # what checks share within one report (the shards' stats)

    def t(self, name: str) -> float | None:
        return self.limits[name]

    @property
    def files(self) -> list[Any]:
        """The migration set, read once per report (migrations and duplicate_indexes use it)."""
        if self._files is None:
            self._files = migration_set()
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


_sets: dict[Any, tuple[Any, list[Any], dict[str, Any]]] = {}
_sets_lock = threading.Lock()


def migration_set() -> list[Any]:
    """The migration set in use (migrate.load_set), read again only when one of its files changed:
    a fleet run's hundreds of reports, and `health --serve`'s scrapes, read it once. The files'
    names, sizes and modification times are the key; the installed package's set never changes."""
    from minnoctl import migrate, resources

    root = resources.checked_root()
    key = None if root is None else tuple(
        (p.as_posix(), st.st_mtime_ns, st.st_size) for p in sorted(root.glob("*/*.sql")) for st in (p.stat(),))
    with _sets_lock:
        cached = _sets.get(root)
        if cached is not None and cached[0] == key:
            return cached[1]
    files = migrate.load_set(root)
    with _sets_lock:
        _sets[root] = (key, files, {})
    return files


def set_memo(name: str, compute: Any) -> Any:
    """A value derived from the migration set in use (the spec's index names), computed once per set."""
    files = migration_set()
    with _sets_lock:
        memo = next((m for _, f, m in _sets.values() if f is files), None)
        if memo is not None and name in memo:
            return memo[name]
    value = compute(files)
    with _sets_lock:
        if memo is not None:
            memo[name] = value
    return value


def _target(settings: Settings) -> str:
    return settings.display_url() if not settings.embedded else f"embedded PostgreSQL in {settings.minno_home}"


def _connect(settings: Settings, probe: str | None) -> tuple[Any, Context]:
    """The connect attempt and the round trip of SELECT 1, in the context the checks get; on a
    ConnectError no connection, and the context says why."""
    from minnoctl.connection import open_session

    started = time.perf_counter()
    try:
        conn = open_session(settings, "health")
    except ConnectError as exc:
        return None, Context(None, settings, probe=probe, connect_error=exc)
    connect_ms = (time.perf_counter() - started) * 1000
    t0 = time.perf_counter()
    conn.execute("SELECT 1").fetchone()
    return conn, Context(conn, settings, probe=probe, connect_ms=connect_ms,
                         rtt_ms=(time.perf_counter() - t0) * 1000)


def _unreachable(ctx: Context) -> Report:
    """The report of a server that did not answer: the connection check alone, CRITICAL."""
    failed = registry.by_name()["connection"].run(ctx)
    return Report([failed], _target(ctx.settings), error=failed.hint)


def _probe(settings: Settings, name: str) -> Report:
    conn, ctx = _connect(settings, name)
    if conn is None:
        return _unreachable(ctx)
    with conn:
        if name == "ready":
            from minnoctl import migrate

            ctx.applied = migrate.read_applied(conn)
            ctx.standby = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        checks = [spec.run(ctx) for spec in registry.probe(name)]
    return Report(checks, _target(settings))


def live(settings: Settings) -> Report:
    """Connect, run SELECT 1, report the server version and the round-trip time."""
    return _probe(settings, "live")


def ready(settings: Settings) -> Report:
    """For readiness probes: connected, not in recovery, initialised with no pending migration or drift."""
    return _probe(settings, "ready")


def run(settings: Settings, *, limits: dict[str, float | None] | None = None, names: list[str] | None = None,
        backup_dir: str | None = None, asked: set[str] | frozenset[str] = frozenset(),
        server_checks: bool = True) -> Report:
    """Every check (or `names`), one row each; a check that cannot look is UNKNOWN with the reason.
    `server_checks` False leaves out the checks of the whole server (scope "server"): a fleet run
    has them from another database of the same server."""
    import psycopg

    from minnoctl import migrate
    from minnoctl.health.threshold import thresholds

    started = time.perf_counter()
    limits = thresholds() if limits is None else limits
    specs = registry.by_name()
    names = list(specs) if names is None else names
    if not server_checks:
        names = [n for n in names if specs[n].scope != "server"]
    conn, ctx = _connect(settings, None)
    ctx.limits = limits
    if conn is None:
        return _timed(_unreachable(ctx), started)
    checks: list[Check] = []
    with conn:
        # One read-only transaction, its timeouts SET LOCAL, each check in a savepoint: a health
        # check never writes, changes nothing of the session (through PgBouncer in transaction mode
        # a plain SET would stay on a pooled server connection for the application), and one
        # failing check rolls back to its savepoint instead of ending the report.
        conn.execute("BEGIN READ ONLY")
        conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # Citus detected in the same query (no round trip more on plain PostgreSQL); which node, in one
        # more only where the extension is
        ctx.user, ctx.privileged, ctx.now, ctx.standby, citus = conn.execute(
            "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
            "OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), now(), pg_is_in_recovery(), "
            "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')").fetchone()
        if citus:
            ctx.citus = citus_node(conn, CITUS_CONNECT_TIMEOUT)
        ctx.applied = migrate.read_applied(conn)
        ctx.installed = migrate.installed_modules(ctx.applied)
        ctx.backup_dir, ctx.asked = backup_dir, set(asked)
        for name in names:
            spec = specs[name]
            if spec.owner and not any(m in ctx.installed for m in spec.owner):
                checks.append(Check(name, Status.OK, f"skipped: the {' / '.join(spec.owner)} module is not "
                                    "installed", ""))
                continue
            checks.append(_node_only(ctx, spec, _run_one(ctx, spec, psycopg)))
        conn.execute("ROLLBACK")
    return _timed(Report(checks, _target(settings)), started)


def citus_node(conn: Any, connect_timeout: str | None = None) -> str:
    """The Citus node a connection is on: its group 0 is the coordinator's (a database with citus and no
    node added yet is one too: its tables are local), any other a worker's. With `connect_timeout`, the
    transaction's citus.node_connection_timeout, in the same query."""
    group = conn.execute("SELECT groupid" + (", set_config('citus.node_connection_timeout', %s, true)"
                                             if connect_timeout else "") + " FROM pg_dist_local_group",
                         (connect_timeout,) if connect_timeout else None).fetchone()
    return "worker" if group and group[0] != 0 else "coordinator"


def _node_only(ctx: Context, spec: registry.CheckSpec, result: Check) -> Check:
    """A check of one node's data on a Citus cluster, saying so in its value (registry's coordinator_only)."""
    if ctx.citus and spec.coordinator_only and isinstance(result.value, str):
        where = "coordinator only" if ctx.citus == "coordinator" else "this worker only"
        result.value = f"{result.value}; {where}: {spec.coordinator_only}"
    return result


def _timed(report: Report, started: float) -> Report:
    report.duration = time.perf_counter() - started
    return report


def _run_one(ctx: Context, spec: registry.CheckSpec, psycopg: Any) -> Check:
    from minnoctl.connection import first_line

    try:
        # no RELEASE: the next check's SAVEPOINT of the same name stacks on it (ROLLBACK TO goes to the
        # newest), and the report's ROLLBACK ends them all — one round trip less per check
        ctx.conn.execute("SAVEPOINT health_check")
        return spec.run(ctx)
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

