"""Sessions: `connections`, and the ones that run, idle or wait too long (`long_queries`,
`idle_in_transaction`, `blocked_queries`)."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, Threshold, check, count_limit, human_age, level


@check("connections", scope="server", order=60, description="client connections against max_connections",
       doc="client connections against `max_connections` less the reserved", levels="80%, 95%",
       thresholds=(Threshold("connections-warning", 80, "%",
                             "client connections of max_connections (less the reserved)"),
                   Threshold("connections-critical", 95, "%",
                             "client connections of max_connections (less the reserved)")),
       coordinator_only="each node has its own max_connections")
def connections(ctx: Context) -> Check:
    used, max_conn, reserved = ctx.one(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), "
        "current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int")
    available = max(max_conn - reserved, 1)
    pct = 100.0 * used / available
    warn, crit, text = ctx.pair("connections", "%")
    status = level(pct, warn, crit)
    return Check("connections", status, f"{used} of {available} ({pct:.0f}%)", text,
                 "" if status == Status.OK else "find idle clients in pg_stat_activity; use a pool (PgBouncer)",
                 perfdata={"connections": (used, "", count_limit(warn, available), count_limit(crit, available))})


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
    status = level(longest, warn, crit)
    perf = {f"{name}_max_s": (longest, "s", warn, crit)}
    if not over:
        return Check(name, status, f"none {what} (longest {human_age(longest)})" if rows else f"none {what}", text,
                     perfdata=perf)
    pid, user, age, query = over[0]
    value = f"{len(over)} {what}; longest {human_age(age)} (pid {pid}, {user}: {query})"
    return Check(name, status, value, text, hint.format(pid=pid), perfdata=perf,
                 sql=[f"-- {name}: pid {pid} ({user}) for {human_age(age)}; to stop it: SELECT "
                      f"pg_cancel_backend({pid});  -- or pg_terminate_backend({pid})"])


@check("long_queries", scope="server", order=70, description="queries running too long (needs pg_monitor)",
       doc="queries running longer than the threshold (needs `pg_monitor`)", levels="60 s, 5 min",
       thresholds=(Threshold("long-query-warning", 60, "s", "a query running longer than this"),
                   Threshold("long-query-critical", 300, "s", "a query running longer than this")),
       coordinator_only="the workers' sessions are in citus_stat_activity")
def long_queries(ctx: Context) -> Check:
    return _sessions_check(ctx, "long_queries", "long-query", "state = 'active'", "query_start", "running too long",
                           "look at it in pg_stat_activity; SELECT pg_cancel_backend({pid}) stops it")


@check("idle_in_transaction", scope="server", order=80, description="sessions idle in a transaction (needs pg_monitor)",
       doc="sessions idle in a transaction (needs `pg_monitor`)", levels="60 s, 10 min",
       thresholds=(Threshold("idle-in-transaction-warning", 60, "s", "a session idle in a transaction for longer"),
                   Threshold("idle-in-transaction-critical", 600, "s", "a session idle in a transaction for longer")),
       coordinator_only="the workers' sessions are in citus_stat_activity")
def idle_in_transaction(ctx: Context) -> Check:
    return _sessions_check(ctx, "idle_in_transaction", "idle-in-transaction", "state LIKE 'idle in transaction%'",
                           "state_change", "idle in a transaction too long",
                           "it holds locks and stops VACUUM: fix the client, or SELECT pg_terminate_backend({pid}); "
                           "set idle_in_transaction_session_timeout")


@check("blocked_queries", scope="server", order=90, description="sessions waiting for a lock, and who blocks them",
       doc="sessions waiting for a lock (`pg_locks.waitstart`), and who blocks them", levels="10 s, 1 min",
       thresholds=(Threshold("lock-wait-warning", 10, "s", "a session waiting for a lock for longer"),
                   Threshold("lock-wait-critical", 60, "s", "a session waiting for a lock for longer")),
       coordinator_only="waits on the workers are in citus_lock_waits")
def blocked_queries(ctx: Context) -> Check:
    warn, crit, text = ctx.pair("lock-wait", "s")
    rows = ctx.all(
        "SELECT l.pid, extract(epoch FROM now() - min(l.waitstart))::float8, pg_blocking_pids(l.pid) "
        "FROM pg_locks l WHERE NOT l.granted AND l.pid <> pg_backend_pid() GROUP BY l.pid ORDER BY 2 DESC NULLS LAST")
    waits = [(pid, round(age or 0.0, 1), blockers) for pid, age, blockers in rows]
    longest = waits[0][1] if waits else 0.0
    status = level(longest, warn, crit)
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
