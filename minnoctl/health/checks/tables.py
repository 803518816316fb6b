"""Tables: `cache_hit_ratio`, `dead_tuples`, `vacuum_analyze` and `sizes`."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, Threshold, below, check, human_age, human_size, level, show, worst
from minnoctl.health.checks._catalog import user_schemas_sql

# pg_stat_user_tables on a standby counts only what happened there: the primary's dead rows, vacuums
# and analyzes are not replicated, so a standby cannot judge them (N/A, never a silent OK)
ON_A_STANDBY = ("on a standby: these describe the primary's tables, whose dead rows, vacuums and analyzes are "
                "counted on the primary, not here; run health on the primary")


@check("cache_hit_ratio", order=170, description="table and index cache hit ratio",
       doc="table and index blocks found in shared buffers",
       levels="warning below 99%, judged from 10,000 reads; not while the misses are no more than the database has "
              "blocks (first reads of a cold cache; `cache-hit-min-blocks=0` judges anyway)",
       thresholds=(Threshold("cache-hit-warning", 99, "%", "table and index cache hit ratio below this"),
                   Threshold("cache-hit-min-blocks", 10_000, "count",
                             "judge the cache hit ratio from this many block reads")))
def cache_hit_ratio(ctx: Context) -> Check:
    hit, read = ctx.one(
        "SELECT coalesce(sum(heap_blks_hit + coalesce(idx_blks_hit, 0)), 0)::bigint, "
        "coalesce(sum(heap_blks_read + coalesce(idx_blks_read, 0)), 0)::bigint FROM pg_statio_user_tables")
    warn, minimum = ctx.t("cache-hit-warning"), ctx.t("cache-hit-min-blocks") or 0
    text = f"warning below {show(warn, '%')} (from {minimum:,.0f} block reads)"
    total = hit + read
    if total == 0 or total < minimum:
        return Check("cache_hit_ratio", Status.OK, f"too little traffic to judge ({total:,} block reads)", text)
    ratio = round(100.0 * hit / total, 2)  # judged as shown (perfdata)
    status = level(ratio, warn, None, above=False)
    # the database's size (a walk of its files) only when the ratio is low: a fleet's hundreds of reports
    blocks = ctx.one("SELECT pg_database_size(current_database()) / current_setting('block_size')::bigint")[0] \
        if status != Status.OK and minimum else 0
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


@check("dead_tuples", order=180, description="dead rows per table, and the last vacuum",
       doc="dead rows per table, and the last vacuum (N/A on a standby: its statistics are not the primary's)",
       levels="20% of live rows, from 1,000",
       thresholds=(Threshold("dead-tuples-warning", 20, "%", "dead rows of live rows in a table"),
                   Threshold("dead-tuples-min", 1000, "count", "look at tables from this many dead rows")))
def dead_tuples(ctx: Context) -> Check:
    pct, minimum = ctx.t("dead-tuples-warning"), ctx.t("dead-tuples-min") or 0
    text = f"warning above {show(pct, '%')} of live rows (from {minimum:,.0f} dead rows)"
    if ctx.standby:
        return Check("dead_tuples", Status.NOT_AVAILABLE, ON_A_STANDBY, text)
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


@check("vacuum_analyze", order=190, description="tables whose statistics are stale, and the last analyze",
       doc="rows changed since the last ANALYZE, the last autovacuum and analyze (N/A on a standby: its statistics "
           "are not the primary's)", levels="20% of rows, from 1,000",
       thresholds=(Threshold("analyze-changed-warning", 20, "%",
                             "rows changed since the last ANALYZE, of the table's rows"),
                   Threshold("analyze-min-rows", 1000, "count", "look at tables from this many changed rows")))
def vacuum_analyze(ctx: Context) -> Check:
    pct, minimum = ctx.t("analyze-changed-warning"), ctx.t("analyze-min-rows") or 0
    text = f"warning above {show(pct, '%')} of rows changed since ANALYZE (from {minimum:,.0f} rows)"
    if ctx.standby:
        return Check("vacuum_analyze", Status.NOT_AVAILABLE, ON_A_STANDBY, text)
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


@check("sizes", order=200, description="database size and the largest tables", levels="off unless set",
       thresholds=(Threshold("database-size-warning", None, "bytes", "database size (off unless set)"),
                   Threshold("table-size-warning", None, "bytes",
                             "largest table, with its indexes and TOAST (off unless set)")))
def sizes(ctx: Context) -> Check:
    db_size = ctx.one("SELECT pg_database_size(current_database())")[0]
    top = ctx.all(
        "SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'm', 'p') AND {user_schemas_sql()} ORDER BY 2 DESC LIMIT 3")
    warn_db, warn_table = ctx.t("database-size-warning"), ctx.t("table-size-warning")
    text = f"database {show(warn_db, 'bytes')}, table {show(warn_table, 'bytes')}"
    value = f"database {human_size(db_size)}" + (
        "; largest " + ", ".join(f"{t} {human_size(s)}" for t, s in top) if top else "")
    status = worst([level(db_size, warn_db, None), level(top[0][1] if top else 0, warn_table, None)])
    return Check("sizes", status, value, text,
                 "" if status == Status.OK else "check retention (`minnoctl cleanup --list`) and disk space",
                 perfdata={"database_size": (db_size, "B", warn_db, None),
                           "largest_table_size": (top[0][1] if top else 0, "B", warn_table, None)})
