"""Tables: `cache_hit_ratio`, `dead_tuples`, `vacuum_analyze` and `sizes`."""

from __future__ import annotations

from typing import Any

from minnoctl.health import Check, Context, Status, Threshold, below, check, human_age, human_size, level, show, worst
from minnoctl.health.checks._catalog import user_schemas_sql
from minnoctl.health.checks._citus import failed_nodes, local_only_sql, on_every_node, shard_stats

# pg_stat_user_tables on a standby counts only what happened there: the primary's dead rows, vacuums
# and analyzes are not replicated, so a standby cannot judge them (N/A, never a silent OK)
# a Citus worker hides its shards from the catalog views of a session (the coordinator's tables they are)
ON_A_WORKER = "; a Citus worker: its shards are not counted here, run health on the coordinator"
ON_A_STANDBY = ("on a standby: these describe the primary's tables, whose dead rows, vacuums and analyzes are "
                "counted on the primary, not here; run health on the primary")


@check("cache_hit_ratio", order=170, description="table and index cache hit ratio",
       doc="table and index blocks found in shared buffers",
       levels="warning below 99%, judged from 10,000 reads; not while the misses are no more than the database has "
              "blocks (first reads of a cold cache; `cache-hit-min-blocks=0` judges anyway)",
       thresholds=(Threshold("cache-hit-warning", 99, "%", "table and index cache hit ratio below this"),
                   Threshold("cache-hit-min-blocks", 10_000, "count",
                             "judge the cache hit ratio from this many block reads")),
       coordinator_only="each node has its own shared buffers")
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
       doc="dead rows per table, and the last vacuum (N/A on a standby: its statistics are not the primary's); on a "
           "Citus coordinator a Citus table's shards summed over every node (`run_command_on_all_nodes`)",
       levels="20% of live rows, from 1,000",
       thresholds=(Threshold("dead-tuples-warning", 20, "%", "dead rows of live rows in a table"),
                   Threshold("dead-tuples-min", 1000, "count", "look at tables from this many dead rows")))
def dead_tuples(ctx: Context) -> Check:
    pct, minimum = ctx.t("dead-tuples-warning"), ctx.t("dead-tuples-min") or 0
    text = f"warning above {show(pct, '%')} of live rows (from {minimum:,.0f} dead rows)"
    if ctx.standby:
        return Check("dead_tuples", Status.NOT_AVAILABLE, ON_A_STANDBY, text)
    citus, incomplete = ctx.citus == "coordinator", False
    rows = ctx.all(
        "SELECT schemaname || '.' || relname, n_dead_tup, n_live_tup, greatest(last_autovacuum, last_vacuum) "
        f"FROM pg_stat_user_tables WHERE n_dead_tup >= %s{' AND ' + local_only_sql('relid') if citus else ''}",
        (minimum,))
    last_av = ctx.one("SELECT max(greatest(last_autovacuum, last_vacuum)) FROM pg_stat_user_tables")[0]
    note = ON_A_WORKER if ctx.citus == "worker" else ""
    if citus:  # the Citus tables' rows are on the workers: their shards' statistics, summed per table
        tables, errors = shard_stats(ctx)
        rows += [(t, s.dead, s.live, s.vacuumed) for t, s in tables.items() if s.dead >= minimum]
        last_av = max([w for w in [last_av, *(s.vacuumed for s in tables.values())] if w], default=None)
        note = _citus_note(tables) + failed_nodes(errors)
        incomplete = bool(errors)
    rows.sort(key=lambda r: r[1] / max(r[2], 1), reverse=True)
    over = [r for r in rows if pct is not None and 100.0 * r[1] / max(r[2], 1) > pct]
    worst_dead = rows[0][1] if rows else 0
    perf = {"dead_tuples_max": (worst_dead, "", None, None)}
    since = f"; last vacuum {human_age((ctx.now - last_av).total_seconds())} ago" if last_av else ""
    if not over:
        return Check("dead_tuples", Status.UNKNOWN if incomplete else Status.OK,
                     f"no table above the limit{since}{note}", text, perfdata=perf)
    table, dead, live, vacuumed = over[0]
    when = f"last vacuumed {human_age((ctx.now - vacuumed).total_seconds())} ago" if vacuumed else "never vacuumed"
    value = (f"{len(over)} tables; {table} has {dead:,} dead rows to {live:,} live "
             f"({100.0 * dead / max(live, 1):.0f}%){_sharded(ctx, table)}, {when}{note}")
    return Check("dead_tuples", Status.WARNING, value, text,
                 "autovacuum is behind (or off for the table, or held back by an old transaction): VACUUM it (--hints)",
                 sql=[f"VACUUM (ANALYZE) {r[0]};" for r in over], perfdata=perf)


@check("vacuum_analyze", order=190, description="tables whose statistics are stale, and the last analyze",
       doc="rows changed since the last ANALYZE, the last autovacuum and analyze (N/A on a standby: its statistics "
           "are not the primary's); on a Citus coordinator a Citus table's shards summed over every node",
       levels="20% of rows, from 1,000",
       thresholds=(Threshold("analyze-changed-warning", 20, "%",
                             "rows changed since the last ANALYZE, of the table's rows"),
                   Threshold("analyze-min-rows", 1000, "count", "look at tables from this many changed rows")))
def vacuum_analyze(ctx: Context) -> Check:
    pct, minimum = ctx.t("analyze-changed-warning"), ctx.t("analyze-min-rows") or 0
    text = f"warning above {show(pct, '%')} of rows changed since ANALYZE (from {minimum:,.0f} rows)"
    if ctx.standby:
        return Check("vacuum_analyze", Status.NOT_AVAILABLE, ON_A_STANDBY, text)
    citus, incomplete = ctx.citus == "coordinator", False
    rows = ctx.all(
        "SELECT schemaname || '.' || relname, n_mod_since_analyze, n_live_tup, "
        "  greatest(last_autoanalyze, last_analyze), greatest(last_autovacuum, last_vacuum) "
        f"FROM pg_stat_user_tables WHERE n_mod_since_analyze >= %s{' AND ' + local_only_sql('relid') if citus else ''}",
        (minimum,))
    last = list(ctx.one("SELECT max(greatest(last_autoanalyze, last_analyze)), max(greatest(last_autovacuum, "
                        "last_vacuum)) FROM pg_stat_user_tables"))
    note = ON_A_WORKER if ctx.citus == "worker" else ""
    if citus:  # the Citus tables' rows are on the workers: their shards' statistics, summed per table
        tables, errors = shard_stats(ctx)
        rows += [(t, s.changed, s.live, s.analyzed, s.vacuumed) for t, s in tables.items() if s.changed >= minimum]
        for i, attr in enumerate(("analyzed", "vacuumed")):
            last[i] = max([w for w in [last[i], *(getattr(s, attr) for s in tables.values())] if w], default=None)
        note = _citus_note(tables) + failed_nodes(errors)
        incomplete = bool(errors)
    rows.sort(key=lambda r: r[1], reverse=True)
    over = [r for r in rows if pct is not None and 100.0 * r[1] / max(r[2], 1) > pct]
    parts = [f"last {what} {human_age((ctx.now - when).total_seconds())} ago" for what, when
             in (("analyze", last[0]), ("vacuum", last[1])) if when]
    summary = ("; ".join(parts) or "no table analyzed or vacuumed yet") + note
    if not over:
        return Check("vacuum_analyze", Status.UNKNOWN if incomplete else Status.OK, summary, text)
    table, changed, live, analyzed, _ = over[0]
    when = f"last analyzed {human_age((ctx.now - analyzed).total_seconds())} ago" if analyzed else "never analyzed"
    return Check("vacuum_analyze", Status.WARNING,
                 f"{len(over)} tables with stale statistics; {table}: {changed:,} rows changed of {live:,}"
                 f"{_sharded(ctx, table)}, {when}{note}",
                 text, "the planner works from old statistics (slow queries): ANALYZE them (--hints); if it keeps "
                 "coming back, autovacuum is off or cannot keep up",
                 sql=[f"ANALYZE {r[0]};" for r in over], perfdata={"stale_tables": (len(over), "", None, None)})


def _citus_note(tables: dict[str, Any]) -> str:
    """What a table check read of the Citus tables: "; the shards of 3 Citus tables, on 2 nodes"."""
    if not tables:
        return "; no Citus tables"
    nodes = len({node for t in tables.values() for node in t.nodes})
    return f"; the shards of {len(tables)} Citus table{'s' if len(tables) != 1 else ''}, on {nodes} " \
           f"node{'s' if nodes != 1 else ''}"


def _sharded(ctx: Context, table: str) -> str:
    """ " over 32 shards" for a Citus table of the report (shard_stats asked already), else nothing."""
    stats = ctx.memo.get("citus_shard_stats")
    found = stats[0].get(table) if stats else None
    return f" over {found.shards} shards" if found else ""


@check("sizes", order=200, description="database size and the largest tables", levels="off unless set",
       doc="database size and the largest tables, with their indexes and TOAST; on a Citus coordinator the database "
           "on every node and a Citus table's shards summed, as `citus_total_relation_size` has it",
       thresholds=(Threshold("database-size-warning", None, "bytes", "database size (off unless set)"),
                   Threshold("table-size-warning", None, "bytes",
                             "largest table, with its indexes and TOAST (off unless set)")))
def sizes(ctx: Context) -> Check:
    """The database and its largest tables; on a Citus coordinator the cluster's: the database's size
    on every node, and a Citus table's as citus_total_relation_size has it (every shard placement, with
    its indexes and TOAST: citus_shards' shard_size, summed, in one fan-out for all the tables)."""
    citus, note = ctx.citus == "coordinator", ON_A_WORKER if ctx.citus == "worker" else ""
    errors: dict[str, str] = {}
    if citus:
        answers, errors = on_every_node(ctx, "SELECT pg_database_size(current_database())")
        db_size = sum(int(v) for v in answers.values())
        biggest = max(answers.items(), key=lambda kv: int(kv[1]), default=None)
        note = f" on {len(answers)} nodes" + (f" (largest {biggest[0]} {human_size(int(biggest[1]))})"
                                                if biggest and len(answers) > 1 else "") + failed_nodes(errors)
    else:
        db_size = ctx.one("SELECT pg_database_size(current_database())")[0]
    local = ctx.all(
        "SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'm', 'p') AND {user_schemas_sql()} "
        f"{'AND ' + local_only_sql('c.oid') if citus else ''} ORDER BY 2 DESC LIMIT 3")
    if citus:
        local += ctx.all(
            "SELECT format('%I.%I', n.nspname, c.relname), sum(s.shard_size)::bigint FROM citus_shards s "
            "JOIN pg_class c ON c.oid = s.table_name JOIN pg_namespace n ON n.oid = c.relnamespace "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 3")
    top = sorted(local, key=lambda r: r[1], reverse=True)[:3]
    warn_db, warn_table = ctx.t("database-size-warning"), ctx.t("table-size-warning")
    text = f"database {show(warn_db, 'bytes')}, table {show(warn_table, 'bytes')}"
    value = f"database {human_size(db_size)}{note}" + (
        "; largest " + ", ".join(f"{t} {human_size(s)}" for t, s in top) if top else "")
    status = worst([level(db_size, warn_db, None), level(top[0][1] if top else 0, warn_table, None)])
    if errors and status == Status.OK:  # a node's part is missing: not the cluster's size
        status = Status.UNKNOWN
    hint = "" if status == Status.OK else "check retention (`minnoctl cleanup --list`) and disk space"
    sql: list[str] = []
    if citus:  # rows a table had when it was distributed stay in the coordinator's shell, unseen, until truncated
        left = ctx.all(
            "SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid) FROM pg_dist_partition p "
            "JOIN pg_class c ON c.oid = p.logicalrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE pg_relation_size(c.oid) > 0 ORDER BY 2 DESC")
        if left:
            value += (f"; the coordinator still keeps {human_size(sum(r[1] for r in left))} of rows from before "
                      f"{len(left)} table{'s were' if len(left) != 1 else ' was'} distributed: "
                      + ", ".join(f"{t} {human_size(b)}" for t, b in left[:3]) + (" ..." if len(left) > 3 else ""))
            hint = "; ".join(h for h in (hint, "no query sees those rows: truncate them (--hints)") if h)
            sql = [f"SELECT truncate_local_data_after_distributing_table($${t}$$);  -- sizes: frees {human_size(b)} "
                   "on the coordinator" for t, b in left]
    return Check("sizes", status, value, text, hint, sql=sql,
                 perfdata={"database_size": (db_size, "B", warn_db, None),
                           "largest_table_size": (top[0][1] if top else 0, "B", warn_table, None)})
